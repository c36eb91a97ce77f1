"""ember_uki: a unified kernel image (`ember uki build`): the kernel, the
initrd, a command line and os-release on systemd-stub, one PE file that the
stub measures into PCR 11. The same command on the same inputs as
qemu/build-uki, so both paths give the same bytes.

The command line is the `cmdline` attribute unless `--define
EMBER_CMDLINE="..."` overrides it (a node's ember.attest_url belongs there).
"""

def _ember_uki_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".efi")
    cmdline = ctx.var.get("EMBER_CMDLINE", ctx.attr.cmdline)
    args = ctx.actions.args()
    args.add_all(["uki", "build"])
    args.add("--kernel", ctx.file.kernel)
    args.add("--initrd", ctx.file.initrd)
    args.add("--stub", ctx.file.stub)
    args.add("--cmdline", cmdline)
    inputs = [ctx.file.kernel, ctx.file.initrd, ctx.file.stub]
    if ctx.file.os_release:
        args.add("--os-release", ctx.file.os_release)
        inputs.append(ctx.file.os_release)
    args.add("--output", out)
    ctx.actions.run_shell(
        inputs = inputs,
        tools = [ctx.executable.ember],
        outputs = [out],
        # ember prints a summary line; keep Bazel's output quiet.
        command = '"$@" >/dev/null',
        arguments = [ctx.executable.ember.path, args],
        mnemonic = "EmberUki",
        progress_message = "ember uki build %s" % ctx.label,
    )
    return [DefaultInfo(files = depset([out]))]

ember_uki = rule(
    implementation = _ember_uki_impl,
    doc = "A reproducible unified kernel image (`ember uki build`).",
    attrs = {
        "ember": attr.label(
            default = "//:ember",
            executable = True,
            cfg = "exec",
            doc = "The ember host tool.",
        ),
        "kernel": attr.label(default = "//os:kernel", allow_single_file = True),
        "initrd": attr.label(default = "//os:initrd", allow_single_file = True),
        "stub": attr.label(default = "@uki_stub//:file", allow_single_file = True),
        "os_release": attr.label(allow_single_file = True, doc = "os-release; Ember's fixed one when unset."),
        "cmdline": attr.string(default = "console=ttyS0 panic=-1"),
    },
)
