//! SBOMs: `ember initrd build` and `ember uki build` write an SPDX 2.3
//! document beside the artifact that pyspdxtools (PyPI spdx-tools) accepts,
//! that lists every regular file of the initrd and nothing else, traces
//! files to the .debs, the kernel package and the project's crates, and
//! comes out byte-identical when the build is repeated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use ember_tests::qemu::{image_files, init_bin, kernel_image, kernel_release, module_list};
use ember_tests::{ember_bin, workspace_root, ScratchDir};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// qemu/image-debs: the .debs of the image's files, the stub and the kernel.
fn image_debs() -> Vec<PathBuf> {
    let out = Command::new("bash")
        .arg(workspace_root().join("qemu/image-debs"))
        .output()
        .expect("run qemu/image-debs");
    assert!(
        out.status.success(),
        "qemu/image-debs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| workspace_root().join(l))
        .collect()
}

fn build_initrd(out: &Path, debs: &[PathBuf]) {
    let modules_dir = workspace_root()
        .join(".cache/kernel/root/lib/modules")
        .join(kernel_release());
    let mut cmd = Command::new(ember_bin());
    cmd.args(["initrd", "build", "--compress", "none", "--init"])
        .arg(init_bin())
        .arg("--modules-dir")
        .arg(&modules_dir)
        .arg("--module")
        .arg(module_list().join(","))
        .arg("--sbom-workspace")
        .arg(workspace_root())
        .arg("--output")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    for f in image_files() {
        cmd.arg("--file").arg(f);
    }
    for d in debs {
        cmd.arg("--sbom-deb").arg(d);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "ember initrd build: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn build_uki(initrd: &Path, out: &Path, debs: &[PathBuf]) -> std::process::Output {
    let mut cmd = Command::new(ember_bin());
    cmd.args(["uki", "build", "--kernel"])
        .arg(kernel_image())
        .arg("--initrd")
        .arg(initrd)
        .args(["--cmdline", "console=ttyS0"])
        .arg("--sbom-workspace")
        .arg(workspace_root())
        .arg("--output")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    for d in debs {
        cmd.arg("--sbom-deb").arg(d);
    }
    cmd.output().unwrap()
}

fn sbom_of(artifact: &Path) -> (Vec<u8>, Value) {
    let mut p = artifact.as_os_str().to_owned();
    p.push(".spdx.json");
    let bytes = std::fs::read(PathBuf::from(p)).expect("the SBOM beside the artifact");
    let v = serde_json::from_slice(&bytes).unwrap();
    (bytes, v)
}

fn validate(artifact: &Path) {
    let mut p = artifact.as_os_str().to_owned();
    p.push(".spdx.json");
    let o = Command::new("bash")
        .arg(workspace_root().join("scripts/spdx-validate"))
        .arg(PathBuf::from(p))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pyspdxtools refused {}:\n{}{}",
        artifact.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The regular files of a newc cpio: path (no leading `/`) → bytes.
fn cpio_files(mut data: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let hex = |b: &[u8]| usize::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
    let pad4 = |n: usize| (4 - n % 4) % 4;
    let mut files = BTreeMap::new();
    let mut consumed = 0usize;
    loop {
        assert_eq!(&data[..6], b"070701", "newc magic at offset {consumed}");
        let mode = hex(&data[14..22]);
        let size = hex(&data[54..62]);
        let namesize = hex(&data[94..102]);
        let name = std::str::from_utf8(&data[110..110 + namesize - 1]).unwrap();
        let start = 110 + namesize + pad4(110 + namesize);
        if name == "TRAILER!!!" {
            return files;
        }
        if mode & 0o170000 == 0o100000 {
            files.insert(
                name.trim_start_matches('/').to_string(),
                data[start..start + size].to_vec(),
            );
        }
        let next = start + size + pad4(size);
        consumed += next;
        data = &data[next..];
    }
}

fn hex_sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// spdxElementId → relatedSpdxElement for one relationship type.
fn related<'a>(doc: &'a Value, from: &str, kind: &str) -> Vec<&'a str> {
    doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spdxElementId"] == from && r["relationshipType"] == kind)
        .map(|r| r["relatedSpdxElement"].as_str().unwrap())
        .collect()
}

fn package<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["SPDXID"] == id)
        .unwrap_or_else(|| panic!("no package {id}"))
}

fn file_id<'a>(doc: &'a Value, name: &str) -> &'a str {
    doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fileName"] == name)
        .unwrap_or_else(|| panic!("no file {name}"))["SPDXID"]
        .as_str()
        .unwrap()
}

fn dpkg_version(package: &str) -> String {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn initrd_and_uki_sboms_list_every_file_with_its_origin_validate_and_rebuild_identically() {
    let dir = ScratchDir::new("sbom");
    let debs = image_debs();
    let a = dir.path().join("a.cpio");
    let b = dir.path().join("b.cpio");
    build_initrd(&a, &debs);
    // The .debs in another order: the document must not care.
    let mut reversed = debs.clone();
    reversed.reverse();
    build_initrd(&b, &reversed);

    let (bytes_a, doc) = sbom_of(&a);
    let (bytes_b, _) = sbom_of(&b);
    assert_eq!(
        String::from_utf8_lossy(&bytes_a).replace("b.cpio", "a.cpio"),
        String::from_utf8_lossy(&bytes_b).replace("b.cpio", "a.cpio"),
        "the same inputs gave different SBOMs"
    );
    validate(&a);

    // The document describes exactly these initrd bytes.
    let initrd = std::fs::read(&a).unwrap();
    let primary = package(&doc, "SPDXRef-Package-initrd");
    assert_eq!(primary["checksums"][0]["algorithm"], "SHA256");
    assert_eq!(
        primary["checksums"][0]["checksumValue"],
        hex_sha256(&initrd)
    );
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");

    // Coverage: every regular file of the cpio is in the SBOM, with its
    // digest, and nothing else is.
    let files = cpio_files(&initrd);
    let listed: BTreeMap<String, String> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["fileName"].as_str().unwrap();
            let sha = f["checksums"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["algorithm"] == "SHA256")
                .unwrap()["checksumValue"]
                .as_str()
                .unwrap();
            (
                name.strip_prefix("./").unwrap().to_string(),
                sha.to_string(),
            )
        })
        .collect();
    let in_cpio: BTreeMap<String, String> = files
        .iter()
        .map(|(p, d)| (p.clone(), hex_sha256(d)))
        .collect();
    assert_eq!(listed, in_cpio, "the SBOM's files are not the initrd's");
    let contained: BTreeSet<&str> = related(&doc, "SPDXRef-Package-initrd", "CONTAINS")
        .into_iter()
        .collect();
    assert_eq!(contained.len(), files.len());

    // Origins. /init: the project at its commit, linking the crates
    // Cargo.lock pins.
    let init = file_id(&doc, "./init");
    assert_eq!(
        related(&doc, init, "GENERATED_FROM"),
        ["SPDXRef-Package-project"]
    );
    let head = Command::new("git")
        .arg("-C")
        .arg(workspace_root())
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    let project = package(&doc, "SPDXRef-Package-project");
    assert!(
        project["versionInfo"]
            .as_str()
            .unwrap()
            .ends_with(head.trim()),
        "{project}"
    );
    let links = related(&doc, init, "STATIC_LINK");
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap();
    let sha2 = links
        .iter()
        .map(|id| package(&doc, id))
        .find(|p| p["name"] == "sha2")
        .expect("/init links sha2");
    let sha2_version = sha2["versionInfo"].as_str().unwrap();
    assert!(lock.contains(&format!("name = \"sha2\"\nversion = \"{sha2_version}\"")));
    assert_eq!(sha2["licenseDeclared"], "MIT OR Apache-2.0");
    let checksum = sha2["checksums"][0]["checksumValue"].as_str().unwrap();
    assert!(lock.contains(checksum), "sha2's checksum is Cargo.lock's");
    for p in links.iter().map(|id| package(&doc, id)) {
        let name = p["name"].as_str().unwrap();
        assert!(
            ![
                "proptest",
                "serde_derive",
                "cc",
                "clap",
                "tokio",
                "ring",
                "rustls",
                "libc"
            ]
            .contains(&name),
            "/init does not link {name}"
        );
    }

    // Kernel modules: the kernel package, by name, version and checksum.
    let kernel_deb = workspace_root().join(".cache/kernel/linux-image.deb");
    let module = files
        .keys()
        .find(|p| p.ends_with(".ko") || p.ends_with(".ko.xz"))
        .expect("the initrd carries modules");
    let origin = related(
        &doc,
        file_id(&doc, &format!("./{module}")),
        "GENERATED_FROM",
    );
    let kernel_pkg = package(&doc, origin[0]);
    assert_eq!(
        kernel_pkg["name"].as_str().unwrap(),
        format!("linux-image-{}", kernel_release())
    );
    assert_eq!(
        kernel_pkg["checksums"][0]["checksumValue"],
        hex_sha256(&std::fs::read(&kernel_deb).unwrap())
    );

    // libc: Debian's libc6 at the installed version, with its purl and a
    // declared license from its copyright file when that is DEP-5.
    let libc = related(
        &doc,
        file_id(&doc, "./lib/x86_64-linux-gnu/libc.so.6"),
        "GENERATED_FROM",
    );
    let libc6 = package(&doc, libc[0]);
    assert_eq!(libc6["name"], "libc6");
    assert_eq!(libc6["versionInfo"], dpkg_version("libc6:amd64"));
    assert!(libc6["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap()
        .starts_with("pkg:deb/debian/libc6@"));

    // Whatever has no origin is only a host program whose .deb
    // qemu/image-debs could not fetch (it says so); never /init, a module
    // or a generated file.
    let host_programs: BTreeSet<String> = image_files()
        .iter()
        .map(|l| {
            l.split_once(':')
                .unwrap()
                .1
                .trim_start_matches('/')
                .to_string()
        })
        .collect();
    for path in files.keys() {
        let id = file_id(&doc, &format!("./{path}"));
        if related(&doc, id, "GENERATED_FROM").is_empty() {
            assert!(
                host_programs.contains(path),
                "{path} has no origin in the SBOM"
            );
        }
    }

    // The UKI: stub and kernel from their packages, the initrd's SBOM
    // folded in, valid, and the same bytes when rebuilt.
    let uki = dir.path().join("ember.efi");
    let o = build_uki(&a, &uki, &debs);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    validate(&uki);
    let (uki_bytes, udoc) = sbom_of(&uki);
    let uki2 = dir.path().join("again").join("ember.efi");
    std::fs::create_dir_all(uki2.parent().unwrap()).unwrap();
    let o = build_uki(&a, &uki2, &debs);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        uki_bytes,
        sbom_of(&uki2).0,
        "the UKI's SBOM is not reproducible"
    );
    let primary = package(&udoc, "SPDXRef-Package-uki");
    assert_eq!(
        primary["checksums"][0]["checksumValue"],
        hex_sha256(&std::fs::read(&uki).unwrap())
    );
    let uki_parts = related(&udoc, "SPDXRef-Package-uki", "CONTAINS");
    assert!(uki_parts.contains(&"SPDXRef-Package-initrd"));
    let stub = related(&udoc, file_id(&udoc, "./stub"), "GENERATED_FROM");
    assert_eq!(package(&udoc, stub[0])["name"], "systemd-boot-efi");
    let linux = related(&udoc, file_id(&udoc, "./.linux"), "GENERATED_FROM");
    assert_eq!(package(&udoc, linux[0])["SPDXID"], kernel_pkg["SPDXID"]);
    assert_eq!(
        udoc["files"].as_array().unwrap().len(),
        doc["files"].as_array().unwrap().len() + 4,
        "the UKI lists the initrd's files and stub, .linux, .cmdline, .osrel"
    );

    // An initrd SBOM that does not describe the initrd (edited, or left
    // from another build) is refused rather than folded in.
    let (_, mut stale) = sbom_of(&a);
    stale["packages"][0]["checksums"][0]["checksumValue"] = Value::from("00".repeat(32));
    let mut p = a.as_os_str().to_owned();
    p.push(".spdx.json");
    std::fs::write(PathBuf::from(p), serde_json::to_vec(&stale).unwrap()).unwrap();
    let o = build_uki(&a, &dir.path().join("stale.efi"), &debs);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does not describe"), "{err}");
    assert!(!dir.path().join("stale.efi").exists());
    assert!(!dir.path().join("stale.efi.spdx.json").exists());
}

fn openssl(args: &[&str]) {
    let o = Command::new("openssl").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn verify(artifact: &Path, key: &Path, provenance: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(ember_bin());
    cmd.arg("verify").arg(artifact).arg("--key").arg(key);
    if let Some(p) = provenance {
        cmd.arg("--provenance").arg(p);
    }
    cmd.output().unwrap()
}

#[test]
fn signed_provenance_verifies_and_tampering_wrong_keys_and_other_artifacts_are_refused() {
    let dir = ScratchDir::new("provenance");
    let d = dir.path();
    let key = d.join("key.pem");
    let public = d.join("key.pub");
    let other_key = d.join("other.pem");
    let other_public = d.join("other.pub");
    for (k, p) in [(&key, &public), (&other_key, &other_public)] {
        let (k, p) = (k.to_str().unwrap(), p.to_str().unwrap());
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            k,
        ]);
        openssl(&["pkey", "-in", k, "-pubout", "-out", p]);
    }
    let build = |out: &Path, extra: &[(&str, &str)]| {
        let mut cmd = Command::new(ember_bin());
        cmd.args(["initrd", "build", "--init"])
            .arg(init_bin())
            .arg("--sign-provenance")
            .arg(&key)
            .arg("--output")
            .arg(out);
        for (src, dest) in extra {
            cmd.arg("--file").arg(format!("{src}:{dest}"));
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let a = d.join("a.cpio");
    let b = d.join("b.cpio");
    build(&a, &[]);
    let hosts = "/etc/hostname";
    build(&b, &[(hosts, "/etc/extra")]);
    let statement_a = d.join("a.cpio.intoto.json");

    // The operator's key verifies it; the statement names the inputs.
    let o = verify(&a, &public, None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("provenance verified"), "{out}");
    let init_sha = hex_sha256(&std::fs::read(init_bin()).unwrap());
    assert!(
        out.contains(&init_sha),
        "the /init input and its digest: {out}"
    );
    let envelope: Value = serde_json::from_slice(&std::fs::read(&statement_a).unwrap()).unwrap();
    assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");

    // Another key: refused.
    let o = verify(&a, &other_public, None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not verify with this key"));

    // A statement edited after signing (its subject pointed at b): refused.
    let b_sha = hex_sha256(&std::fs::read(&b).unwrap());
    let payload = {
        use std::io::Write;
        let mut child = Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(envelope["payload"].as_str().unwrap().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap().stdout
    };
    let a_sha = hex_sha256(&std::fs::read(&a).unwrap());
    let edited = String::from_utf8(payload).unwrap().replace(&a_sha, &b_sha);
    let enc = Command::new("bash")
        .arg("-c")
        .arg("base64 -w0")
        .stdin(
            std::fs::File::open({
                let p = d.join("edited.json");
                std::fs::write(&p, &edited).unwrap();
                p
            })
            .unwrap(),
        )
        .output()
        .unwrap()
        .stdout;
    let mut tampered = envelope.clone();
    tampered["payload"] = Value::from(String::from_utf8(enc).unwrap());
    let tampered_path = d.join("tampered.intoto.json");
    std::fs::write(&tampered_path, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let o = verify(&b, &public, Some(&tampered_path));
    assert!(!o.status.success(), "an edited statement was accepted");
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not verify with this key"));

    // A genuine statement, shown for another artifact: refused by digest.
    let o = verify(&b, &public, Some(&statement_a));
    assert!(!o.status.success(), "a's statement was accepted for b");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "the statement is about sha256 {a_sha}, the artifact is sha256 {b_sha}"
        )),
        "{err}"
    );

    // A key that is not P-256 is refused before anything is built.
    let rsa = d.join("rsa.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        rsa.to_str().unwrap(),
    ]);
    let c = d.join("c.cpio");
    let o = Command::new(ember_bin())
        .args(["initrd", "build", "--init"])
        .arg(init_bin())
        .arg("--sign-provenance")
        .arg(&rsa)
        .arg("--output")
        .arg(&c)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("ECDSA P-256"));
    assert!(!c.exists());
}
