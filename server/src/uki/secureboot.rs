//! PCR 7 (Secure Boot policy) as UEFI firmware leaves it on a machine that
//! enforces Secure Boot, predicted from the firmware's key databases.
//!
//! Before the boot manager runs, the firmware measures each Secure Boot
//! variable as an EV_EFI_VARIABLE_DRIVER_CONFIG event, in the order the
//! TCG PC Client Platform Firmware Profile gives: SecureBoot, PK, KEK, db,
//! dbx; then the EV_SEPARATOR (four zero bytes) that closes the pre-OS
//! phase. Each event's digest is that of a UEFI_VARIABLE_DATA:
//!
//! ```text
//! VariableName     16  the vendor GUID (EFI GUID byte order)
//! UnicodeNameLength 8  characters in the name, no NUL (LE u64)
//! VariableDataLength 8 bytes of data (LE u64)
//! UnicodeName      2n  the name as UTF-16LE
//! VariableData     ..  the variable's contents (EFI_SIGNATURE_LISTs; one byte for SecureBoot)
//! ```
//!
//! When a db entry then verifies an image the firmware loads (systemd-boot,
//! the UKI), it measures that entry once as EV_EFI_VARIABLE_AUTHORITY: a
//! UEFI_VARIABLE_DATA named "db" whose data is the EFI_SIGNATURE_DATA (owner
//! GUID, then the certificate). Checked against a real OVMF + swtpm boot
//! with Secure Boot enforced in tests/tests/secure_boot_qemu.rs.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ember_tpm::HashAlg;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::measure::{Event, Prediction};

/// The PCR UEFI firmware measures the Secure Boot policy into.
pub const PCR_SECURE_BOOT_POLICY: u8 = 7;

/// EFI_GLOBAL_VARIABLE, 8BE4DF61-93CA-11D2-AA0D-00E098032B8C (SecureBoot, PK, KEK).
const EFI_GLOBAL_VARIABLE: [u8; 16] = guid(
    0x8be4df61,
    0x93ca,
    0x11d2,
    [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
);
/// EFI_IMAGE_SECURITY_DATABASE_GUID, D719B2CB-3D3A-4596-A3BC-DAD00E67656F (db, dbx).
const IMAGE_SECURITY_DATABASE: [u8; 16] = guid(
    0xd719b2cb,
    0x3d3a,
    0x4596,
    [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
);
/// EFI_CERT_X509_GUID, A5C059A1-94E4-4AA7-87B5-AB155C2BF072: a signature
/// list of DER certificates.
const CERT_X509: [u8; 16] = guid(
    0xa5c059a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);

/// An EFI GUID in its in-memory byte order (the first three fields little-endian).
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// The Secure Boot key databases as the firmware holds them: each the
/// variable's data (a sequence of EFI_SIGNATURE_LISTs, as `efi-readvar -o`
/// writes it, or /sys/firmware/efi/efivars/NAME-GUID without its first
/// four attribute bytes). An absent variable is empty.
#[derive(Debug, Clone, Default)]
pub struct KeyDatabases {
    pub pk: Vec<u8>,
    pub kek: Vec<u8>,
    pub db: Vec<u8>,
    pub dbx: Vec<u8>,
}

impl KeyDatabases {
    /// Reads PK.esl, KEK.esl, db.esl and dbx.esl from `dir` (what
    /// qemu/secure-boot-vars --esl-dir writes); PK, KEK and db must
    /// exist (without a PK Secure Boot is not enforced), dbx may be absent.
    pub fn read_dir(dir: &Path) -> Result<KeyDatabases> {
        let read = |name: &str, required: bool| -> Result<Vec<u8>> {
            let p = dir.join(format!("{name}.esl"));
            match std::fs::read(&p) {
                Ok(b) => {
                    check_signature_lists(name, &b)?;
                    Ok(b)
                }
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => {
                    Err(e).with_context(|| format!("reading the {name} database {}", p.display()))
                }
            }
        };
        let dbs = KeyDatabases {
            pk: read("PK", true)?,
            kek: read("KEK", true)?,
            db: read("db", true)?,
            dbx: read("dbx", false)?,
        };
        if dbs.pk.is_empty() {
            bail!(
                "PK.esl in {} is empty: without a PK the firmware does not enforce Secure Boot",
                dir.display()
            );
        }
        Ok(dbs)
    }
}

/// One EFI_SIGNATURE_LIST: its signature type and each entry's bytes
/// (owner GUID + data).
type SignatureList<'a> = ([u8; 16], Vec<&'a [u8]>);

/// The EFI_SIGNATURE_LISTs of a variable's data.
fn signature_lists<'a>(name: &str, mut b: &'a [u8]) -> Result<Vec<SignatureList<'a>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 28 {
            bail!(
                "{name}: {} bytes left, shorter than an EFI_SIGNATURE_LIST header",
                b.len()
            );
        }
        let mut ty = [0u8; 16];
        ty.copy_from_slice(&b[..16]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as usize;
        let (list_size, header_size, sig_size) = (u32_at(16), u32_at(20), u32_at(24));
        if list_size < 28 + header_size || list_size > b.len() || sig_size < 16 {
            bail!("{name}: EFI_SIGNATURE_LIST of {list_size} bytes (header {header_size}, entries {sig_size}) does not fit the {} bytes left", b.len());
        }
        let body = &b[28 + header_size..list_size];
        if !body.len().is_multiple_of(sig_size) {
            bail!(
                "{name}: EFI_SIGNATURE_LIST entries of {sig_size} bytes do not divide its {} bytes",
                body.len()
            );
        }
        out.push((ty, body.chunks(sig_size).collect()));
        b = &b[list_size..];
    }
    Ok(out)
}

fn check_signature_lists(name: &str, b: &[u8]) -> Result<()> {
    signature_lists(name, b).map(|_| ())
}

/// A certificate given as PEM or DER, as DER.
pub fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let c = CertificateDer::from_pem_slice(bytes)
            .map_err(|e| anyhow!("not a PEM certificate: {e}"))?;
        return Ok(c.as_ref().to_vec());
    }
    Ok(bytes.to_vec())
}

/// The db entry (owner GUID + DER) that holds `cert`: what the firmware
/// measures as the authority that verified an image signed with it.
pub fn db_entry<'a>(db: &'a [u8], cert_der: &[u8]) -> Result<&'a [u8]> {
    for (ty, entries) in signature_lists("db", db)? {
        if ty != CERT_X509 {
            continue;
        }
        if let Some(e) = entries.into_iter().find(|e| &e[16..] == cert_der) {
            return Ok(e);
        }
    }
    bail!("the signing certificate is not in db: the firmware would refuse an image signed with it")
}

/// UEFI_VARIABLE_DATA of a variable (see the module comment).
fn variable_data(vendor: &[u8; 16], name: &str, data: &[u8]) -> Vec<u8> {
    let utf16: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut out = Vec::with_capacity(32 + utf16.len() + data.len());
    out.extend_from_slice(vendor);
    out.extend_from_slice(&(name.encode_utf16().count() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&utf16);
    out.extend_from_slice(data);
    out
}

fn digest(bank: HashAlg, data: &[u8]) -> Result<Vec<u8>> {
    bank.digest(&[data])
        .map_err(|e| anyhow!("{} digest: {e:?}", bank.name()))
}

/// Predicts PCR 7 for a firmware enforcing Secure Boot with `dbs`, which
/// verified the boot's images with the db certificates `authorities` (DER;
/// one event each, in the order first used: one when systemd-boot and the
/// UKI are signed with the same key).
pub fn predict_pcr7(
    dbs: &KeyDatabases,
    authorities: &[Vec<u8>],
    bank: HashAlg,
) -> Result<Prediction> {
    let mut events = Vec::new();
    for (label, vendor, name, data) in [
        ("SecureBoot", &EFI_GLOBAL_VARIABLE, "SecureBoot", &[1u8][..]),
        ("PK", &EFI_GLOBAL_VARIABLE, "PK", &dbs.pk[..]),
        ("KEK", &EFI_GLOBAL_VARIABLE, "KEK", &dbs.kek[..]),
        ("db", &IMAGE_SECURITY_DATABASE, "db", &dbs.db[..]),
        ("dbx", &IMAGE_SECURITY_DATABASE, "dbx", &dbs.dbx[..]),
    ] {
        events.push(Event {
            label: format!("EV_EFI_VARIABLE_DRIVER_CONFIG {label}"),
            digest: digest(bank, &variable_data(vendor, name, data))?,
        });
    }
    events.push(Event {
        label: "EV_SEPARATOR".into(),
        digest: digest(bank, &[0u8; 4])?,
    });
    let mut seen: Vec<&[u8]> = Vec::new();
    for cert in authorities {
        let entry = db_entry(&dbs.db, cert)?;
        if seen.contains(&entry) {
            continue;
        }
        seen.push(entry);
        events.push(Event {
            label: "EV_EFI_VARIABLE_AUTHORITY db".into(),
            digest: digest(bank, &variable_data(&IMAGE_SECURITY_DATABASE, "db", entry))?,
        });
    }
    Prediction::replay(bank, PCR_SECURE_BOOT_POLICY, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_fs::hex::hex;

    /// One EFI_SIGNATURE_LIST of one X.509 entry, as virt-fw-vars and
    /// efitools' cert-to-efi-sig-list write it.
    fn esl(owner: [u8; 16], der: &[u8]) -> Vec<u8> {
        let mut b = CERT_X509.to_vec();
        b.extend(((28 + 16 + der.len()) as u32).to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(((16 + der.len()) as u32).to_le_bytes());
        b.extend(owner);
        b.extend(der);
        b
    }

    #[test]
    fn guids_are_in_efi_byte_order() {
        // The X.509 type as it opens every signature list in OVMF's store.
        assert_eq!(hex(&CERT_X509), "a159c0a5e494a74a87b5ab155c2bf072");
        assert_eq!(
            hex(&EFI_GLOBAL_VARIABLE),
            "61dfe48bca93d211aa0d00e098032b8c"
        );
    }

    #[test]
    fn secure_boot_variable_data_is_the_tcg_layout() {
        // python3: sha256(bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
        //   + (10).to_bytes(8,"little") + (1).to_bytes(8,"little")
        //   + "SecureBoot".encode("utf-16-le") + b"\x01")
        let d = variable_data(&EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]);
        assert_eq!(d.len(), 16 + 8 + 8 + 20 + 1);
        assert_eq!(&d[16..24], &10u64.to_le_bytes());
        assert_eq!(&d[24..32], &1u64.to_le_bytes());
        assert_eq!(
            hex(&digest(HashAlg::Sha256, &d).unwrap()),
            "ccfc4bb32888a345bc8aeadaba552b627d99348c767681ab3141f5b01e40a40e"
        );
    }

    #[test]
    fn the_authority_is_the_db_entry_of_the_signing_certificate() {
        let owner = [7u8; 16];
        let dbs = KeyDatabases {
            pk: esl(owner, b"pk-cert"),
            kek: esl(owner, b"kek-cert"),
            db: [esl(owner, b"other-cert"), esl(owner, b"db-cert")].concat(),
            dbx: Vec::new(),
        };
        let entry = db_entry(&dbs.db, b"db-cert").unwrap();
        assert_eq!(entry, [&owner[..], b"db-cert"].concat());
        let p = predict_pcr7(
            &dbs,
            &[b"db-cert".to_vec(), b"db-cert".to_vec()],
            HashAlg::Sha256,
        )
        .unwrap();
        let labels: Vec<&str> = p.events.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot",
                "EV_EFI_VARIABLE_DRIVER_CONFIG PK",
                "EV_EFI_VARIABLE_DRIVER_CONFIG KEK",
                "EV_EFI_VARIABLE_DRIVER_CONFIG db",
                "EV_EFI_VARIABLE_DRIVER_CONFIG dbx",
                "EV_SEPARATOR",
                "EV_EFI_VARIABLE_AUTHORITY db",
            ]
        );
        let err = predict_pcr7(&dbs, &[b"stranger".to_vec()], HashAlg::Sha256).unwrap_err();
        assert!(err.to_string().contains("not in db"), "{err}");
    }

    #[test]
    fn a_truncated_signature_list_is_refused() {
        let mut b = esl([1; 16], b"cert");
        b.truncate(b.len() - 1);
        let err = signature_lists("db", &b).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let err = signature_lists("db", &b[..10]).unwrap_err();
        assert!(err.to_string().contains("shorter than"), "{err}");
    }
}
