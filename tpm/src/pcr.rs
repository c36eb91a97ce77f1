//! PCR selections (TPML_PCR_SELECTION), PCR values and their composite digest.

use crate::consts::HashAlg;
use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};
use crate::ErrorKind;
use alloc::vec::Vec;

/// Which PCRs of which banks, in TPM order (banks in the order given,
/// PCRs ascending within a bank).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PcrSelection {
    pub banks: Vec<(HashAlg, u32)>,
}

/// PCR indices a selection may name (PC Client TPMs have 24).
const MAX_PCR: u8 = 24;
/// At most this many banks in one selection (TPM's HASH_COUNT is small).
const MAX_BANKS: u32 = 16;

impl PcrSelection {
    /// A selection of `indices` in one bank.
    pub fn new(bank: HashAlg, indices: &[u8]) -> Result<Self> {
        let mut s = PcrSelection::default();
        s.add(bank, indices)?;
        Ok(s)
    }

    /// Adds `indices` of `bank` (merging with that bank if already present).
    pub fn add(&mut self, bank: HashAlg, indices: &[u8]) -> Result<()> {
        let mut mask = 0u32;
        for &i in indices {
            if i >= MAX_PCR {
                return Err(Error::new(ErrorKind::InvalidArgument {
                    what: "PCR index above 23",
                }));
            }
            mask |= 1 << i;
        }
        match self.banks.iter_mut().find(|(b, _)| *b == bank) {
            Some((_, m)) => *m |= mask,
            None => self.banks.push((bank, mask)),
        }
        Ok(())
    }

    /// Parses `sha256:0,1,2+sha1:7` (tpm2-tools syntax).
    pub fn parse(spec: &str) -> Result<Self> {
        let mut s = PcrSelection::default();
        for part in spec.split('+').filter(|p| !p.is_empty()) {
            let (bank, list) =
                part.split_once(':')
                    .ok_or(Error::new(ErrorKind::InvalidArgument {
                        what: "PCR spec needs BANK:LIST",
                    }))?;
            let bank = HashAlg::from_name(bank).ok_or(Error::new(ErrorKind::InvalidArgument {
                what: "unknown PCR bank",
            }))?;
            let mut idx = Vec::new();
            for n in list.split(',').filter(|n| !n.is_empty()) {
                idx.push(n.trim().parse::<u8>().map_err(|_| {
                    Error::new(ErrorKind::InvalidArgument {
                        what: "PCR index is not a number",
                    })
                })?);
            }
            s.add(bank, &idx)?;
        }
        Ok(s)
    }

    /// (bank, index) pairs in TPM order.
    pub fn iter(&self) -> impl Iterator<Item = (HashAlg, u8)> + '_ {
        self.banks.iter().flat_map(|&(b, m)| {
            (0..MAX_PCR)
                .filter(move |i| m & (1 << i) != 0)
                .map(move |i| (b, i))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.banks.iter().all(|(_, m)| *m == 0)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.banks.len() as u32);
        for &(bank, mask) in &self.banks {
            w.u16(bank.alg_id());
            w.u8(3);
            w.bytes(&[mask as u8, (mask >> 8) as u8, (mask >> 16) as u8]);
        }
    }

    /// The TPML_PCR_SELECTION wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::unbounded(&mut out);
        self.write(&mut w);
        out
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let count = r.u32("PCR selection count")?;
        if count > MAX_BANKS {
            return Err(Error::new(ErrorKind::Malformed {
                what: "PCR selection count",
                offset: r.position(),
            }));
        }
        let mut banks = Vec::new();
        for _ in 0..count {
            let alg = r.u16("PCR bank")?;
            let size = r.u8("sizeofSelect")? as usize;
            let bits = r.bytes(size, "pcrSelect")?;
            let mut mask = 0u32;
            for (i, b) in bits.iter().enumerate() {
                if i >= 3 {
                    if *b != 0 {
                        return Err(Error::new(ErrorKind::Malformed {
                            what: "PCR above 23 selected",
                            offset: r.position(),
                        }));
                    }
                    continue;
                }
                mask |= u32::from(*b) << (8 * i);
            }
            banks.push((HashAlg::from_alg_id(alg)?, mask));
        }
        Ok(PcrSelection { banks })
    }
}

/// One PCR's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrValue {
    pub bank: HashAlg,
    pub index: u8,
    pub digest: Vec<u8>,
}

/// PCR values as read from a TPM (or as the server expects them).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PcrValues {
    pub values: Vec<PcrValue>,
}

impl PcrValues {
    pub fn get(&self, bank: HashAlg, index: u8) -> Option<&[u8]> {
        self.values
            .iter()
            .find(|v| v.bank == bank && v.index == index)
            .map(|v| v.digest.as_slice())
    }
}

/// The digest a quote or PolicyPCR covers: H(value of each selected PCR in
/// selection order), hashed with `hash`.
pub fn pcr_composite_digest(
    hash: HashAlg,
    selection: &PcrSelection,
    values: &PcrValues,
) -> Result<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for (bank, index) in selection.iter() {
        let v = values
            .get(bank, index)
            .ok_or(Error::new(ErrorKind::PcrValueMissing {
                bank: bank.alg_id(),
                index,
            }))?;
        parts.push(v);
    }
    hash.digest(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_to_tpm_wire_bitmap() {
        let s = PcrSelection::parse("sha256:0,1,2,16").unwrap();
        assert_eq!(s.to_bytes(), [0, 0, 0, 1, 0, 0x0b, 3, 0x07, 0x00, 0x01]);
        let bytes = s.to_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(PcrSelection::read(&mut r).unwrap(), s);
    }

    #[test]
    fn pcr_above_23_is_refused() {
        assert!(PcrSelection::parse("sha256:24").is_err());
    }

    #[test]
    fn composite_digest_of_zero_pcrs_matches_known_value() {
        let sel = PcrSelection::parse("sha256:0,1").unwrap();
        let values = PcrValues {
            values: (0..2)
                .map(|i| PcrValue {
                    bank: HashAlg::Sha256,
                    index: i,
                    digest: alloc::vec![0; 32],
                })
                .collect(),
        };
        let d = pcr_composite_digest(HashAlg::Sha256, &sel, &values).unwrap();
        assert_eq!(d, HashAlg::Sha256.digest(&[&[0u8; 64]]).unwrap());
        let missing = PcrSelection::parse("sha256:0,5").unwrap();
        assert_eq!(
            pcr_composite_digest(HashAlg::Sha256, &missing, &values),
            Err(Error::new(ErrorKind::PcrValueMissing {
                bank: 0x0b,
                index: 5
            }))
        );
    }
}
