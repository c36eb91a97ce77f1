//! Content digests (`sha256:<64 hex>`), validated before they become paths.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::Error;

/// A validated sha256 digest; its hex part is safe to join onto a path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let (alg, hex) = s.split_once(':').ok_or_else(|| Error::BadDigest {
            digest: s.to_string(),
        })?;
        if alg != "sha256" {
            let valid = !alg.is_empty()
                && alg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            return Err(if valid {
                Error::UnsupportedAlgorithm {
                    algorithm: alg.to_string(),
                }
            } else {
                Error::BadDigest {
                    digest: s.to_string(),
                }
            });
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::BadDigest {
                digest: s.to_string(),
            });
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    pub fn of(bytes: &[u8]) -> Self {
        Digest::from_raw(&Sha256::digest(bytes).into())
    }

    pub fn from_raw(raw: &[u8; 32]) -> Self {
        Digest {
            hex: ember_fs::hex::hex(raw),
        }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// `blobs/sha256/<hex>` under a layout root.
    pub fn blob_path(&self, root: &Path) -> PathBuf {
        root.join("blobs").join("sha256").join(&self.hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn path_like_or_foreign_digests_are_refused() {
        assert!(matches!(
            Digest::parse("sha256:../../etc/passwd"),
            Err(Error::BadDigest { .. })
        ));
        assert!(matches!(
            Digest::parse("sha512:abcd"),
            Err(Error::UnsupportedAlgorithm { .. })
        ));
        assert!(matches!(
            Digest::parse("nocolon"),
            Err(Error::BadDigest { .. })
        ));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(matches!(
            Digest::parse(&upper),
            Err(Error::BadDigest { .. })
        ));
    }
}
