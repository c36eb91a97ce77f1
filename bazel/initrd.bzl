"""ember_initrd and ember_oci_image: the node's root filesystem, made by
`ember initrd build` / `ember image build` (one implementation, shared with
the Cargo path: qemu/build-initrd runs the same command on the same inputs).

Both actions are sandboxed and hermetic: their inputs are the two binaries
built by //:ember and //:ember-init, the kernel repository's files and the
module list; SOURCE_DATE_EPOCH is fixed. Equal inputs give equal bytes.
"""

_COMMON_ATTRS = {
    "ember": attr.label(
        default = "//:ember",
        executable = True,
        cfg = "exec",
        doc = "The ember host tool.",
    ),
    "init": attr.label(
        default = "//:ember-init",
        allow_single_file = True,
        doc = "The /init binary.",
    ),
    "modules": attr.label(
        default = "@ember_kernel//:modules",
        allow_files = True,
        doc = "Every file of the kernel's lib/modules/<release>.",
    ),
    "modules_dep": attr.label(
        default = "@ember_kernel//:modules_dep",
        allow_single_file = True,
        doc = "modules.dep; its directory is --modules-dir.",
    ),
    "module_list": attr.label(
        default = "//:qemu/modules.list",
        allow_single_file = True,
        doc = "Modules to load at boot, one a line, # comments (qemu/modules.list).",
    ),
    "kernel": attr.label(
        allow_single_file = True,
        doc = "A kernel image to carry at /boot/vmlinuz.",
    ),
    "files": attr.label_keyed_string_dict(
        allow_files = True,
        doc = "Extra files: label -> absolute destination inside the image.",
    ),
    "source_date_epoch": attr.int(default = 0),
    "_script": attr.label(
        default = "//bazel:initrd.sh",
        allow_single_file = True,
    ),
}

def _spec_args(ctx):
    """Arguments common to `initrd build` and `image build`, and their inputs."""
    args = [
        "--init",
        ctx.file.init.path,
        "--modules-dir",
        ctx.file.modules_dep.dirname,
    ]
    inputs = [ctx.file.init, ctx.file.modules_dep, ctx.file.module_list, ctx.file._script]
    inputs += ctx.files.modules
    if ctx.file.kernel:
        args += ["--kernel", ctx.file.kernel.path]
        inputs.append(ctx.file.kernel)
    for target, dest in ctx.attr.files.items():
        files = target.files.to_list()
        if len(files) != 1:
            fail("%s: each extra file label must name exactly one file" % target.label)
        args += ["--file", "%s:%s" % (files[0].path, dest)]
        inputs.append(files[0])
    return args, inputs

def _run_ember(ctx, inputs, outputs, subcommand, args, mnemonic):
    ctx.actions.run_shell(
        inputs = inputs,
        tools = [ctx.executable.ember],
        outputs = outputs,
        # initrd.sh turns the module list into --module exactly as
        # qemu/build-initrd does, then runs ember with the rest.
        command = 'bash "$@"',
        arguments = [
            ctx.file._script.path,
            ctx.executable.ember.path,
            ctx.file.module_list.path,
        ] + subcommand + args,
        env = {
            "SOURCE_DATE_EPOCH": str(ctx.attr.source_date_epoch),
            "PATH": "/usr/bin:/bin",
        },
        mnemonic = mnemonic,
        progress_message = "ember %s %s" % (" ".join(subcommand), ctx.label),
    )

def _ember_initrd_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name)
    args, inputs = _spec_args(ctx)
    args += ["--compression", ctx.attr.compression, "--output", out.path]
    _run_ember(ctx, inputs, [out], ["initrd", "build"], args, "EmberInitrd")
    return [DefaultInfo(files = depset([out]))]

ember_initrd = rule(
    implementation = _ember_initrd_impl,
    doc = "A reproducible newc cpio initrd (`ember initrd build`).",
    attrs = dict(_COMMON_ATTRS, compression = attr.string(
        default = "gzip",
        values = ["gzip", "none"],
    )),
)

def _ember_oci_image_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    args, inputs = _spec_args(ctx)
    if ctx.attr.base:
        base = ctx.files.base
        if len(base) != 1 or not base[0].is_directory:
            fail("base must be one OCI layout directory (a tree artifact)")
        args += ["--base", base[0].path]
        inputs += base
    args += ["--tag", ctx.attr.tag, "--output", out.path]
    _run_ember(ctx, inputs, [out], ["image", "build"], args, "EmberImage")
    return [DefaultInfo(files = depset([out]))]

ember_oci_image = rule(
    implementation = _ember_oci_image_impl,
    doc = "An OCI image layout directory of the OS root filesystem (`ember image build`).",
    attrs = dict(
        _COMMON_ATTRS,
        tag = attr.string(default = "latest"),
        base = attr.label(doc = "An OCI layout (e.g. //apko:base) to stack the layer on."),
    ),
)
