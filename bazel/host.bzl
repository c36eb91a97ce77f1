"""ember_host_file: one file of the build machine as a repository.

Used for the CA bundle (Debian's ca-certificates): the node trusts the same
roots as the machine that built it.
"""

def _ember_host_file_impl(rctx):
    path = rctx.os.environ.get("EMBER_CA_BUNDLE", rctx.attr.path)
    if not rctx.path(path).exists:
        fail("%s does not exist (install Debian's ca-certificates, or set EMBER_CA_BUNDLE)" % path)
    rctx.symlink(path, "file")
    rctx.file("BUILD.bazel", 'exports_files(["file"])\n')

ember_host_file = repository_rule(
    implementation = _ember_host_file_impl,
    attrs = {"path": attr.string(mandatory = True)},
    environ = ["EMBER_CA_BUNDLE"],
    local = True,
)
