//! OCI image layouts in and out of `ember`, against independent tools:
//! umoci builds layouts from rootfs folders (with whiteouts and opaque
//! directories), skopeo rewrites them with uncompressed layers and inspects
//! ours, umoci unpacks ours.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ember_tests::{ember_bin, ScratchDir};

/// One entry of a newc cpio, as the kernel would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CpioEntry {
    mode: u32,
    data: Vec<u8>,
    rdev: (u32, u32),
}

/// A minimal newc reader, independent of the writer under test.
fn read_newc(bytes: &[u8]) -> BTreeMap<String, CpioEntry> {
    let mut out = BTreeMap::new();
    let mut off = 0;
    let pad4 = |n: usize| (n + 3) & !3;
    loop {
        let h = &bytes[off..off + 110];
        assert_eq!(&h[..6], b"070701", "newc magic at {off}");
        let field = |i: usize| {
            let s = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        let (mode, size, rmaj, rmin, namesize) = (
            field(1),
            field(6) as usize,
            field(9),
            field(10),
            field(11) as usize,
        );
        let name_start = off + 110;
        let name = std::str::from_utf8(&bytes[name_start..name_start + namesize - 1])
            .unwrap()
            .to_string();
        let data_start = pad4(name_start + namesize);
        let data = bytes[data_start..data_start + size].to_vec();
        off = pad4(data_start + size);
        if name == "TRAILER!!!" {
            return out;
        }
        out.insert(
            name,
            CpioEntry {
                mode,
                data,
                rdev: (rmaj, rmin),
            },
        );
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(path: &Path, data: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A layout made by umoci from rootfs folders, four layers:
/// 1. the base tree (with a symlink and a hard link),
/// 2. a whiteout of /etc/remove-me,
/// 3. /opt/app replaced opaquely by a new folder,
/// 4. a single added file /etc/motd.
fn umoci_layout(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    write(&root.join("etc/hostname"), b"base\n", 0o644);
    write(&root.join("etc/remove-me"), b"gone\n", 0o644);
    write(&root.join("opt/app/old.txt"), b"old\n", 0o644);
    write(&root.join("opt/app/keep/k"), b"k\n", 0o600);
    write(&root.join("usr/bin/tool"), b"#!tool\n", 0o755);
    std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let newapp = dir.join("newapp");
    write(&newapp.join("new.txt"), b"new\n", 0o644);
    let motd = dir.join("motd");
    write(&motd, b"hello\n", 0o644);

    let layout = dir.join("layout");
    let image = format!("{}:img", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["insert", "--image", &image])
        .arg(&root)
        .arg("/"));
    run(Command::new("umoci").args(["insert", "--image", &image, "--whiteout", "/etc/remove-me"]));
    run(Command::new("umoci")
        .args(["insert", "--image", &image, "--opaque"])
        .arg(&newapp)
        .arg("/opt/app"));
    run(Command::new("umoci")
        .args(["insert", "--image", &image])
        .arg(&motd)
        .arg("/etc/motd"));
    layout
}

fn fake_init(dir: &Path) -> PathBuf {
    let init = dir.join("init-bin");
    write(&init, b"\x7fELF pretend init", 0o755);
    init
}

fn initrd_from_oci(layout: &Path, reference: Option<&str>, init: &Path, out: &Path) -> Vec<u8> {
    let mut cmd = Command::new(ember_bin());
    cmd.env("SOURCE_DATE_EPOCH", "0")
        .args(["initrd", "build", "--compression", "none", "--init"])
        .arg(init)
        .arg("--from-oci")
        .arg(layout)
        .arg("--output")
        .arg(out);
    if let Some(r) = reference {
        cmd.args(["--oci-ref", r]);
    }
    run(&mut cmd);
    std::fs::read(out).unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The image manifest of a layout with one image.
fn manifest(layout: &Path) -> serde_json::Value {
    let index = json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    json(
        &layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
}

fn layer_media_types(layout: &Path) -> Vec<String> {
    manifest(layout)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn initrd_from_umoci_layout_applies_layers_whiteouts_and_opaque_dirs() {
    let scratch = ScratchDir::new("oci-umoci");
    let layout = umoci_layout(scratch.path());
    let init = fake_init(scratch.path());
    let cpio = initrd_from_oci(
        &layout,
        Some("img"),
        &init,
        &scratch.path().join("initrd.cpio"),
    );
    let entries = read_newc(&cpio);

    assert_eq!(entries["etc/hostname"].data, b"base\n");
    assert_eq!(
        entries["etc/motd"].data, b"hello\n",
        "the top layer's file is there"
    );
    assert!(
        !entries.contains_key("etc/remove-me"),
        "whiteout removed the lower file"
    );
    assert_eq!(entries["opt/app/new.txt"].data, b"new\n");
    assert!(
        !entries.contains_key("opt/app/old.txt"),
        "opaque dir hides lower files"
    );
    assert!(
        !entries.contains_key("opt/app/keep"),
        "opaque dir hides lower subdirectories"
    );
    assert!(!entries.contains_key("opt/app/keep/k"));
    assert_eq!(entries["usr/bin/tool"].mode, 0o100755);
    assert_eq!(
        entries["usr/bin/tool2"].data, b"#!tool\n",
        "hard link carries its target's data"
    );
    assert_eq!(
        entries["bin"].mode & 0o170000,
        0o120000,
        "symlink stays a symlink"
    );
    assert_eq!(entries["bin"].data, b"usr/bin");
    // What `ember initrd build` adds on top of the image.
    assert_eq!(entries["init"].data, b"\x7fELF pretend init");
    assert_eq!(entries["init"].mode, 0o100755);
    assert_eq!(entries["dev/console"].rdev, (5, 1));
    assert_eq!(entries["tmp"].mode, 0o041777);

    // With one image in the layout, the reference is optional.
    let again = initrd_from_oci(&layout, None, &init, &scratch.path().join("again.cpio"));
    assert_eq!(cpio, again, "same layout, same initrd bytes");
}

#[test]
fn uncompressed_layers_flatten_to_the_same_initrd_as_gzip_ones() {
    let scratch = ScratchDir::new("oci-plain");
    let layout = umoci_layout(scratch.path());
    // skopeo decompresses into its `dir:` format, then writes that back as
    // an OCI layout keeping the layers uncompressed.
    let dir = scratch.path().join("dir");
    let plain = scratch.path().join("plain");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-decompress"])
        .arg(format!("oci:{}:img", layout.display()))
        .arg(format!("dir:{}", dir.display())));
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-oci-accept-uncompressed-layers"])
        .arg(format!("dir:{}", dir.display()))
        .arg(format!("oci:{}:img", plain.display())));
    let gz_types = layer_media_types(&layout);
    let plain_types = layer_media_types(&plain);
    assert!(
        gz_types.iter().all(|t| t.ends_with("tar+gzip")),
        "{gz_types:?}"
    );
    assert!(
        plain_types
            .iter()
            .all(|t| t == "application/vnd.oci.image.layer.v1.tar"),
        "skopeo did not write uncompressed layers: {plain_types:?}"
    );

    let init = fake_init(scratch.path());
    let from_gzip = initrd_from_oci(&layout, Some("img"), &init, &scratch.path().join("a.cpio"));
    let from_plain = initrd_from_oci(&plain, Some("img"), &init, &scratch.path().join("b.cpio"));
    assert_eq!(from_gzip, from_plain);
}

#[test]
fn tampered_layer_is_refused_with_its_digest() {
    let scratch = ScratchDir::new("oci-tamper");
    let layout = umoci_layout(scratch.path());
    // Corrupt the last byte of the first layer (the gzip trailer): the
    // digest check (or gzip's own CRC) must catch it.
    let first = manifest(&layout)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = layout.join("blobs/sha256").join(&first);
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    std::fs::write(&blob, bytes).unwrap();

    let init = fake_init(scratch.path());
    let out = Command::new(ember_bin())
        .args(["initrd", "build", "--init"])
        .arg(&init)
        .arg("--from-oci")
        .arg(&layout)
        .arg("--output")
        .arg(scratch.path().join("x.cpio.gz"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a tampered layer was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&first[..12]), "error names the layer: {err}");
    assert!(
        !scratch.path().join("x.cpio.gz").exists(),
        "no initrd was written"
    );
}

#[test]
fn image_layout_is_accepted_by_umoci_and_skopeo_and_flattens_back_to_the_initrd() {
    let scratch = ScratchDir::new("oci-out");
    let dir = scratch.path();
    let init = fake_init(dir);
    write(&dir.join("ca.crt"), b"-----BEGIN CERTIFICATE-----\n", 0o644);
    let extra = format!(
        "{}:/etc/ssl/certs/ca-certificates.crt",
        dir.join("ca.crt").display()
    );
    let layout = dir.join("image");
    run(Command::new(ember_bin())
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["image", "build", "--init"])
        .arg(&init)
        .args(["--file", &extra, "--output"])
        .arg(&layout));

    let inspect = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:latest", layout.display())));
    let info: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(1));

    let bundle = dir.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read(rootfs.join("init")).unwrap(),
        b"\x7fELF pretend init"
    );
    assert_eq!(
        std::fs::read(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap(),
        b"-----BEGIN CERTIFICATE-----\n"
    );
    {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let init_meta = std::fs::metadata(rootfs.join("init")).unwrap();
        assert_eq!(init_meta.permissions().mode() & 0o7777, 0o755);
        let console = std::fs::symlink_metadata(rootfs.join("dev/console")).unwrap();
        assert!(console.file_type().is_char_device());
        let tmp = std::fs::metadata(rootfs.join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    }
    // The image's SPDX SBOM rides in the layout as an OCI 1.1 artifact
    // whose subject is the image, under the tag `sha256-<image>.sbom`;
    // skopeo reads it out, pyspdxtools accepts it, and it lists the
    // image's files.
    let index = json(&layout.join("index.json"));
    let image_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let sbom_entry = &index["manifests"][1];
    assert_eq!(
        sbom_entry["artifactType"], "application/spdx+json",
        "{index}"
    );
    let tag = format!("{}.sbom", image_digest.replace(':', "-"));
    assert_eq!(
        sbom_entry["annotations"]["org.opencontainers.image.ref.name"],
        tag.as_str()
    );
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:{tag}", layout.display())));
    let artifact: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(artifact["subject"]["digest"], image_digest.as_str());
    let copied = dir.join("sbom-copy");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("dir:{}", copied.display())));
    let layer = artifact["layers"][0]["digest"].as_str().unwrap();
    let sbom = dir.join("image.spdx.json");
    std::fs::copy(copied.join(layer.trim_start_matches("sha256:")), &sbom).unwrap();
    let doc = json(&sbom);
    assert!(
        doc["documentNamespace"]
            .as_str()
            .unwrap()
            .ends_with(image_digest.trim_start_matches("sha256:")),
        "{doc}"
    );
    let files: Vec<&str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fileName"].as_str().unwrap())
        .collect();
    assert!(
        files.contains(&"./init") && files.contains(&"./etc/ssl/certs/ca-certificates.crt"),
        "{files:?}"
    );
    run(Command::new("bash")
        .arg(ember_tests::workspace_root().join("scripts/spdx-validate"))
        .arg(&sbom));

    // The config umoci generated names our entrypoint.
    let config = std::fs::read_to_string(bundle.join("config.json")).unwrap();
    assert!(
        config.contains("\"/init\""),
        "entrypoint missing from {config}"
    );

    // Flattening the image gives back exactly the initrd built directly.
    let direct = dir.join("direct.cpio.gz");
    run(Command::new(ember_bin())
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["initrd", "build", "--init"])
        .arg(&init)
        .args(["--file", &extra, "--output"])
        .arg(&direct));
    let round = dir.join("round.cpio.gz");
    run(Command::new(ember_bin())
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["initrd", "build", "--init"])
        .arg(&init)
        .args(["--file", &extra, "--from-oci"])
        .arg(&layout)
        .arg("--output")
        .arg(&round));
    assert_eq!(
        std::fs::read(&direct).unwrap(),
        std::fs::read(&round).unwrap()
    );

    // And rebuilding gives the same manifest digest (reproducible layout).
    let index1 = std::fs::read(layout.join("index.json")).unwrap();
    run(Command::new(ember_bin())
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["image", "build", "--init"])
        .arg(&init)
        .args(["--file", &extra, "--output"])
        .arg(&layout));
    assert_eq!(index1, std::fs::read(layout.join("index.json")).unwrap());
}
