"""apko_image: an OCI layout built by the `apko` tool from an apko YAML.

Opt-in: apko and its package repositories (Alpine/Wolfi) are not reachable
on this project's CI machines, so every target of this rule must be tagged
"manual" (the rule refuses otherwise) and `bazel build //...` skips it.
Where apko is on PATH and the network is open, `bazel build //apko:base`
runs `apko build` and unpacks its OCI tarball into a layout directory that
//image:image_on_apko_base stacks Ember's layer on.

Modern Bazel with registry access can use rules_apko instead (hermetic
apko toolchain and lock file): see bazel/modern/.
"""

def _apko_image_impl(ctx):
    if "manual" not in ctx.attr.tags:
        fail("apko_image targets must be tagged manual: apko cannot run in CI here")
    out = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run_shell(
        inputs = [ctx.file.config, ctx.file._script],
        outputs = [out],
        command = 'bash "$@"',
        arguments = [
            ctx.file._script.path,
            ctx.file.config.path,
            ctx.attr.image_tag,
            ",".join(ctx.attr.archs),
            out.path,
        ],
        use_default_shell_env = True,
        mnemonic = "Apko",
        progress_message = "apko build %s" % ctx.label,
        # apko fetches packages from the repositories the YAML names.
        execution_requirements = {"local": "1", "requires-network": "1"},
    )
    return [DefaultInfo(files = depset([out]))]

apko_image = rule(
    implementation = _apko_image_impl,
    attrs = {
        "config": attr.label(allow_single_file = [".yaml"], mandatory = True),
        "image_tag": attr.string(default = "ember-base:latest"),
        "archs": attr.string_list(default = ["x86_64"]),
        "_script": attr.label(default = "//bazel:apko_build.sh", allow_single_file = True),
    },
)

def _apko_validation_impl(ctx):
    stamp = ctx.actions.declare_file(ctx.label.name + ".ok")
    ctx.actions.run_shell(
        inputs = [ctx.file.config, ctx.file.requirements, ctx.file._validator, ctx.file._selftest],
        outputs = [stamp],
        # The self-test first proves the validator rejects broken configs,
        # then the real config is validated; the stamp keeps its verdict.
        command = 'bash "$1" "$2" "$3" "$4" > "$5"',
        arguments = [
            ctx.file._selftest.path,
            ctx.file._validator.path,
            ctx.file.config.path,
            ctx.file.requirements.path,
            stamp.path,
        ],
        env = {"PATH": "/usr/bin:/bin"},
        mnemonic = "ApkoValidate",
        progress_message = "validating %s" % ctx.file.config.short_path,
    )
    return [DefaultInfo(files = depset([stamp]))]

apko_validation = rule(
    implementation = _apko_validation_impl,
    doc = "Checks an apko YAML's structure and packages (apko/validate.py) at build time.",
    attrs = {
        "config": attr.label(allow_single_file = [".yaml"], mandatory = True),
        "requirements": attr.label(allow_single_file = [".yaml"], mandatory = True),
        "_validator": attr.label(default = "//apko:validate.py", allow_single_file = True),
        "_selftest": attr.label(default = "//apko:validate_test.sh", allow_single_file = True),
    },
)
