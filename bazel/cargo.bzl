"""cargo_binary: a Rust binary of the Cargo workspace, built by cargo.

Why not rules_rust: these machines reach no Bazel registry or GitHub, so no
rule set can be fetched; and cargo is the build the rest of the project
(scripts/test, qemu/build-initrd) already runs. The action therefore calls
cargo in the real workspace with the real target directory (the one plain
`cargo build` uses: $CARGO_TARGET_DIR or <workspace>/target), `--offline`.
When `cargo build --release` already ran, cargo finds its outputs fresh and
the action costs about a second: the Rust workspace is never compiled twice.

Prebuilt mode: with EMBER_PREBUILT_DIR set in the environment (passed by
.bazelrc's --action_env), the action copies `<dir>/<binary>` instead of
running cargo; tests use it to build with the exact binaries they test.

The price is hermeticity: the action is local and unsandboxed (it writes the
shared target directory). Bazel still tracks every source file as an input,
so a change to any of them reruns cargo, and the copied binary is the
action's only output.
"""

def _cargo_binary_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name)
    inputs = ctx.files.srcs + [ctx.file._manifest, ctx.file._script]
    arguments = [
        ctx.file._script.path,
        ctx.file._manifest.path,
        ctx.attr.package,
        ctx.attr.binary,
        out.path,
    ]
    if ctx.file.build_script:
        inputs.append(ctx.file.build_script)
        arguments.append(ctx.file.build_script.path)
    ctx.actions.run_shell(
        inputs = inputs,
        outputs = [out],
        command = 'bash "$@"',
        arguments = arguments,
        mnemonic = "Cargo",
        progress_message = "cargo build --release -p %s" % ctx.attr.package,
        use_default_shell_env = True,
        execution_requirements = {
            "local": "1",
            "no-sandbox": "1",
            "no-remote": "1",
        },
    )
    return [DefaultInfo(files = depset([out]), executable = out)]

cargo_binary = rule(
    implementation = _cargo_binary_impl,
    doc = "Builds `binary` of Cargo package `package` in release mode.",
    executable = True,
    attrs = {
        "package": attr.string(mandatory = True),
        "binary": attr.string(mandatory = True),
        "srcs": attr.label_list(allow_files = True),
        "build_script": attr.label(
            allow_single_file = True,
            doc = "A script that builds the binary instead of plain cargo (scripts/build-init).",
        ),
        "_manifest": attr.label(default = "//:Cargo.toml", allow_single_file = True),
        "_script": attr.label(default = "//bazel:cargo_build.sh", allow_single_file = True),
    },
)
