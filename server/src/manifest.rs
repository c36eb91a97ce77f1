//! Envelope-sealed overlays on the server: each overlay version sealed
//! once, under a random data key, into a static blob named by the SHA-256
//! of its sealed bytes; each assignment signed as a manifest (monotonic
//! epoch, target, blob digest, key commitment) with the server's P-256
//! manifest key. Finish hands the node the stored manifest and the data
//! key wrapped for its session: nothing is sealed per boot.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ember_proto::manifest::{
    key_commitment, Compression, Manifest, PublicKey, SigningSecret, Target, MANIFEST_FORMAT,
};
use ember_proto::sealed::{self, Sealer};

use crate::overlay::{store_blob, Blob};
use crate::store::{overlays, Sql, StateDir};

/// The signing key's file in the state folder (32-byte scalar, 0600).
const KEY_FILE: &str = "manifest.key";
/// Its public half (PEM SubjectPublicKeyInfo), for `ember initrd build
/// --file STATE/manifest.pub:/etc/ember/manifest.pub`.
pub const PUBLIC_FILE: &str = "manifest.pub";

pub fn public_path(state: &StateDir) -> PathBuf {
    state.root().join(PUBLIC_FILE)
}

/// The server's manifest signing key: created on first use (`ember serve`
/// or `ember overlay add/assign`, whichever runs first), its public half
/// written beside it. Returns whether it was created.
pub fn ensure_signing_key(state: &StateDir) -> Result<(SigningSecret, bool)> {
    let path = state.root().join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let key = SigningSecret::from_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if !public_path(state).exists() {
                write_public(state, &key.public())?;
            }
            Ok((key, false))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let (key, scalar) = loop {
                let mut scalar = [0u8; 32];
                getrandom::getrandom(&mut scalar)?;
                // A scalar of zero or beyond the group order is refused:
                // draw again (probability about 2^-32).
                if let Ok(k) = SigningSecret::from_bytes(&scalar) {
                    break (k, scalar);
                }
            };
            if !publish_private(&path, &scalar)? {
                // Another replica sharing the state folder created the
                // key first: every replica must sign with that one.
                return ensure_signing_key(state);
            }
            write_public(state, &key.public())?;
            Ok((key, true))
        }
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Writes the key beside its final name, then links it into place, so a
/// replica reading the state folder never sees a half-written key. False
/// when a key is already there (another replica won the race).
fn publish_private(path: &Path, scalar: &[u8; 32]) -> Result<bool> {
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce)?;
    let tmp = path.with_extension(format!("tmp.{}", crate::store::hex(&nonce)));
    write_private(&tmp, scalar)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("create {}", path.display())),
    }
}

fn write_private(path: &Path, scalar: &[u8; 32]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(scalar)?;
    f.sync_all()?;
    Ok(())
}

/// The PEM text of a manifest public key.
pub fn public_pem(key: &PublicKey) -> String {
    let b64 = base64(&key.to_spki_der());
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    // PEM lines are 64 characters (RFC 7468).
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// Writes the public half through a temporary name of this writer's own:
/// replicas (or a replica that found the key without its public half) may
/// write it at the same moment; each renames the same text into place.
fn write_public(state: &StateDir, key: &PublicKey) -> Result<()> {
    let path = public_path(state);
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce)?;
    let tmp = path.with_extension(format!("pub.tmp.{}", crate::store::hex(&nonce)));
    std::fs::write(&tmp, public_pem(key)).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An overlay version sealed into its blob.
pub struct SealedOverlay {
    pub blob: Blob,
    pub data_key: [u8; 32],
    pub chunk_size: u32,
    pub compression: Compression,
}

/// Seals the plaintext overlay at `plain` once, under a fresh random data
/// key, into `STATE/sealed/<sha256 of the sealed bytes>`.
pub fn seal_overlay(state: &StateDir, plain: &Path, chunk_size: u32) -> Result<SealedOverlay> {
    let mut data_key = [0u8; 32];
    getrandom::getrandom(&mut data_key)?;
    let mut sealer = Sealer::new(&data_key, chunk_size)?;
    let mut src = File::open(plain).with_context(|| format!("open {}", plain.display()))?;
    let size = src.metadata()?.len();
    let mut compression = Compression::None;
    let blob = store_blob(&state.sealed_dir(), |w| {
        w.write_all(&sealer.header())?;
        let chunks = sealed::chunk_count(size, chunk_size);
        let mut left = size;
        for i in 0..chunks {
            let len = left.min(chunk_size as u64) as usize;
            let mut buf = vec![0u8; len];
            src.read_exact(&mut buf)
                .with_context(|| format!("{} changed while it was sealed", plain.display()))?;
            if i == 0 {
                compression = Compression::sniff(&buf);
            }
            left -= len as u64;
            sealer.seal_chunk(&mut buf, i + 1 == chunks)?;
            w.write_all(&buf)?;
        }
        Ok(())
    })?;
    if blob.size != sealed::sealed_len(size, chunk_size) {
        bail!(
            "sealed blob has {} bytes, expected {}",
            blob.size,
            sealed::sealed_len(size, chunk_size)
        );
    }
    Ok(SealedOverlay {
        blob,
        data_key,
        chunk_size,
        compression,
    })
}

/// Records a new overlay version: its plaintext's digest and size (for
/// listings), and its sealed blob and data key. Returns the version id.
pub fn insert_overlay(
    tx: &mut dyn Sql,
    plain: &Blob,
    source: &str,
    sealed: &SealedOverlay,
) -> Result<i64> {
    Ok(overlays::insert(
        tx,
        &plain.sha256,
        plain.size,
        source,
        &overlays::SealedBlob {
            sha256: sealed.blob.sha256,
            size: sealed.blob.size,
            chunk_size: sealed.chunk_size,
            compression: sealed.compression.name(),
            data_key: sealed.data_key,
        },
    )?)
}

/// Assigns overlay `version` to `target` (`node:<name>` or `group:<name>`)
/// (a group is created if missing) and signs its manifest under the
/// next epoch, in `tx`.
pub fn assign(tx: &mut dyn Sql, key: &SigningSecret, target: &str, version: i64) -> Result<u64> {
    let manifest_target = match target.split_once(':') {
        Some(("node", n)) => Target::Node(n.into()),
        Some(("group", g)) => Target::Group(g.into()),
        _ => bail!("assignment target {target:?} is neither node:<name> nor group:<name>"),
    };
    let Some(overlays::Sealed {
        plain_size,
        blob_sha256: Some(blob_sha256),
        blob_size: Some(blob_size),
        chunk_size: Some(chunk_size),
        compression: Some(compression),
        data_key: Some(data_key),
    }) = overlays::sealed(tx, version)?
    else {
        bail!("overlay {version} does not exist or predates sealed blobs: add it again with `ember overlay add`");
    };
    let Some(compression) = Compression::from_name(&compression) else {
        bail!("overlay {version}: unknown compression {compression:?}");
    };
    let epoch = overlays::next_manifest_epoch(tx)?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        version_id: version as u64,
        epoch: epoch as u64,
        target: manifest_target,
        blob_sha256,
        blob_size,
        plain_size,
        chunk_size,
        compression,
        key_commitment: key_commitment(&data_key),
    };
    let signed = key.sign(&manifest);
    overlays::assign(tx, target, version, epoch, &signed.to_bytes())?;
    Ok(epoch as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_reference_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn replicas_racing_to_create_the_signing_key_agree_on_one() {
        let dir = std::env::temp_dir().join(format!("ember-key-race-{}", std::process::id()));
        for round in 0..20 {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let state = StateDir::new(&dir);
            let keys: Vec<Vec<u8>> = std::thread::scope(|s| {
                let racers: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| ensure_signing_key(&state).unwrap().0.public().to_spki_der())
                    })
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap()).collect()
            });
            assert!(
                keys.windows(2).all(|w| w[0] == w[1]),
                "round {round}: racers signed with different keys"
            );
            let (on_disk, created) = ensure_signing_key(&state).unwrap();
            assert!(!created);
            assert_eq!(on_disk.public().to_spki_der(), keys[0]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A sink that keeps what an opener writes, and whether it finished.
    struct Collect(Vec<u8>, bool);
    impl ember_proto::sealed::Sink for Collect {
        type Error = &'static str;
        fn write(&mut self, p: &[u8]) -> Result<(), Self::Error> {
            self.0.extend_from_slice(p);
            Ok(())
        }
        fn finish(&mut self) -> Result<(), Self::Error> {
            self.1 = true;
            Ok(())
        }
    }

    #[test]
    fn sealed_once_then_signed_per_assignment_under_rising_epochs() {
        use ember_proto::manifest::Envelope;
        use ember_proto::sealed::Opener;
        let dir = std::env::temp_dir().join(format!("ember-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = StateDir::new(&dir);
        let mut conn = crate::store::open(&state, None).unwrap();
        let plain: Vec<u8> = (0..1000u32).map(|i| (i * 13) as u8).collect();
        let plain_blob = store_blob(&state.blobs(), |w| Ok(w.write_all(&plain)?)).unwrap();
        let sealed = seal_overlay(
            &state,
            &state.blob(&crate::store::hex(&plain_blob.sha256)),
            64,
        )
        .unwrap();
        assert_eq!(sealed.compression, Compression::None);
        let (key, created) = ensure_signing_key(&state).unwrap();
        assert!(created);
        let (again, created) = ensure_signing_key(&state).unwrap();
        assert!(!created);
        assert_eq!(again.public().to_spki_der(), key.public().to_spki_der());

        let mut tx = conn.transaction().unwrap();
        let v = insert_overlay(&mut tx, &plain_blob, "test", &sealed).unwrap();
        let e1 = assign(&mut tx, &key, "group:lab", v).unwrap();
        let e2 = assign(&mut tx, &key, "node:n1", v).unwrap();
        let e3 = assign(&mut tx, &key, "group:lab", v).unwrap();
        assert_eq!((e2, e3), (e1 + 1, e1 + 2), "one epoch per signed manifest");
        let stored = overlays::manifest_of(&mut tx, "group:lab")
            .unwrap()
            .unwrap();
        tx.commit().unwrap();
        let signed = ember_proto::manifest::SignedManifest::from_bytes(&stored).unwrap();
        let m = key.public().verify(&signed).unwrap();
        assert_eq!(m.epoch, e3);
        assert_eq!(m.target, Target::Group("lab".into()));
        assert_eq!(m.blob_sha256, sealed.blob.sha256);
        assert_eq!(m.plain_size, 1000);

        // The stored blob opens under the data key the manifest commits to.
        let blob =
            std::fs::read(state.sealed_dir().join(crate::store::hex(&m.blob_sha256))).unwrap();
        let envelope = Envelope::new(m, sealed.data_key).unwrap();
        let mut sink = Collect(Vec::new(), false);
        let mut opener = Opener::for_manifest(&envelope);
        opener.write(&blob, &mut sink).unwrap();
        opener.finish(&mut sink).unwrap();
        assert_eq!(sink.0, plain);
        assert!(sink.1);
        assert!(assign(&mut conn.transaction().unwrap(), &key, "rack:1", v).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn public_pem_parses_back_on_the_node_side() {
        let key = SigningSecret::from_bytes(&[3; 32]).unwrap();
        let pem = public_pem(&key.public());
        let back = PublicKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(back.to_spki_der(), key.public().to_spki_der());
    }
}
