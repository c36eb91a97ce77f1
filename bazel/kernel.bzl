"""ember_kernel: the kernel and its modules as a repository.

One source for both build paths: qemu/fetch-kernel (apt-get download of
Debian's current linux-image-amd64, unpacked and depmod'ed into
.cache/kernel). It is a no-op when the cache exists, so with the cache in
place (scripts/test fetches it first) Bazel never touches the network.

Targets: `:vmlinuz`, `:release` (a file holding the release), `:modules`
(every file of lib/modules/<release>) and `:modules_dep` (its modules.dep,
whose directory is what `ember initrd build --modules-dir` takes).
"""

def _ember_kernel_impl(rctx):
    root = rctx.path(Label("//:Cargo.toml")).dirname
    cache = rctx.os.environ.get("EMBER_KERNEL_CACHE", "")
    if cache:
        release = rctx.read(cache + "/release").strip()
    else:
        res = rctx.execute(["bash", str(root) + "/qemu/fetch-kernel"], timeout = 1800)
        if res.return_code != 0:
            fail("qemu/fetch-kernel failed:\n" + res.stderr)
        release = res.stdout.strip()
        cache = str(root) + "/.cache/kernel"
    moddir = "lib/modules/" + release
    rctx.symlink(cache + "/root/" + moddir, moddir)
    rctx.symlink(cache + "/vmlinuz", "vmlinuz")
    rctx.file("release", release + "\n")
    rctx.file("BUILD.bazel", """
exports_files(["vmlinuz", "release"])

filegroup(
    name = "modules",
    srcs = glob(["{moddir}/**"]),
    visibility = ["//visibility:public"],
)

filegroup(
    name = "modules_dep",
    srcs = ["{moddir}/modules.dep"],
    visibility = ["//visibility:public"],
)
""".format(moddir = moddir))

ember_kernel = repository_rule(
    implementation = _ember_kernel_impl,
    environ = ["EMBER_KERNEL_CACHE"],
    local = True,
)
