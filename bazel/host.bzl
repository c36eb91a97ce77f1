"""ember_host_file: one file of the build machine as a repository.

Used for the CA bundle (Debian's ca-certificates): the node trusts the same
roots as the machine that built it; and for systemd-stub (Debian's
systemd-boot-efi), the base of the unified kernel image.
"""

def _ember_host_file_impl(rctx):
    env = rctx.attr.env
    path = rctx.os.environ.get(env, rctx.attr.path) if env else rctx.attr.path
    if not rctx.path(path).exists:
        fail("%s does not exist (install it with scripts/install-deps%s)" % (
            path,
            ", or set " + env if env else "",
        ))
    rctx.symlink(path, "file")
    rctx.file("BUILD.bazel", 'exports_files(["file"])\n')

ember_host_file = repository_rule(
    implementation = _ember_host_file_impl,
    attrs = {
        "path": attr.string(mandatory = True),
        "env": attr.string(doc = "An environment variable that overrides path."),
    },
    environ = ["EMBER_CA_BUNDLE", "EMBER_UKI_STUB"],
    local = True,
)
