"""ember_image_files: the programs every node image carries besides /init.

One source for both build paths: qemu/image-files prints them as SRC:DEST
lines (mkfs.ext4 with its config, ELF interpreter and libraries, taken from
the build machine's e2fsprogs); qemu/build-initrd passes each as --file.
This rule links each SRC into the repository and writes files.bzl with
IMAGE_FILES, a label -> destination dict for ember_initrd's `files`.
"""

def _ember_image_files_impl(rctx):
    root = rctx.path(Label("//:Cargo.toml")).dirname
    res = rctx.execute(["bash", str(root) + "/qemu/image-files"])
    if res.return_code != 0:
        fail("qemu/image-files failed:\n" + res.stderr)
    entries = []
    for i, line in enumerate(res.stdout.strip().split("\n")):
        src, dest = line.split(":", 1)
        name = "f%d" % i
        rctx.symlink(src, name)
        entries.append((name, dest))
    rctx.file("BUILD.bazel", "exports_files(%r)\n" % [n for n, _ in entries])
    rctx.file("files.bzl", "IMAGE_FILES = {\n" + "".join([
        '    "@ember_image_files//:%s": "%s",\n' % (n, d)
        for n, d in entries
    ]) + "}\n")

ember_image_files = repository_rule(
    implementation = _ember_image_files_impl,
    local = True,
)
