//! PCR_Read, PCR_Extend and Quote: the platform configuration registers
//! and the signed report of them.

use crate::consts::*;
use crate::error::{Error, Result};
use crate::pcr::{PcrSelection, PcrValue, PcrValues};
use crate::transport::Transport;
use crate::ErrorKind;
use alloc::vec::Vec;
use tpm2_protocol::data::TpmCc;

use super::{Auth, QuoteResult, Tpm};

impl<T: Transport> Tpm<T> {
    /// Reads the selected PCRs (several PCR_Read calls: a TPM returns at most
    /// eight digests per call). PCRs of a bank the TPM has not allocated are
    /// absent from the result.
    pub fn pcr_read(&mut self, selection: &PcrSelection) -> Result<PcrValues> {
        let mut pending = selection.clone();
        let mut out = PcrValues::default();
        for _ in 0..32 {
            if pending.is_empty() {
                break;
            }
            let reply = self.execute(TpmCc::PcrRead, &[], &[], 0, |w| {
                pending.write(w);
                Ok(())
            })?;
            let mut r = self.params(&reply);
            r.u32("pcrUpdateCounter")?;
            let got = PcrSelection::read(&mut r)?;
            let count = r.u32("digest count")?;
            let mut returned = Vec::new();
            for (bank, index) in got.iter() {
                returned.push((bank, index));
            }
            if count as usize != returned.len() {
                return Err(Error::new(ErrorKind::Malformed {
                    what: "PCR digest count differs from selection",
                    offset: r.position(),
                }));
            }
            if returned.is_empty() {
                break;
            }
            for (bank, index) in returned {
                let d = r.tpm2b("PCR digest")?;
                if d.len() != bank.digest_len() {
                    return Err(Error::new(ErrorKind::Malformed {
                        what: "PCR digest length",
                        offset: r.position(),
                    }));
                }
                let asked = pending.banks.iter_mut().find(|(b, _)| *b == bank);
                match asked {
                    Some((_, m)) if *m & (1 << index) != 0 => *m &= !(1 << index),
                    _ => {
                        return Err(Error::new(ErrorKind::Malformed {
                            what: "PCR returned that was not asked for",
                            offset: r.position(),
                        }))
                    }
                }
                out.values.push(PcrValue {
                    bank,
                    index,
                    digest: d.to_vec(),
                });
            }
            r.finish("trailing PCR_Read data")?;
        }
        Ok(out)
    }

    /// Extends PCR `index` in each given bank (TPM2_PCR_Extend, empty auth).
    pub fn pcr_extend(&mut self, index: u8, digests: &[(HashAlg, &[u8])]) -> Result<()> {
        for (bank, d) in digests {
            if d.len() != bank.digest_len() {
                return Err(Error::new(ErrorKind::InvalidArgument {
                    what: "digest length does not match its bank",
                }));
            }
        }
        self.execute(
            TpmCc::PcrExtend,
            &[u32::from(index)],
            &[Auth::Password(&[])],
            0,
            |w| {
                w.u32(digests.len() as u32);
                for (bank, d) in digests {
                    w.u16(bank.alg_id());
                    w.bytes(d);
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    /// TPM2_Quote: signs the selected PCRs' digest and `nonce` with the AK
    /// (empty authValue, the AK's own signing scheme).
    pub fn quote(
        &mut self,
        ak: u32,
        nonce: &[u8],
        selection: &PcrSelection,
    ) -> Result<QuoteResult> {
        let reply = self.execute(TpmCc::Quote, &[ak], &[Auth::Password(&[])], 0, |w| {
            w.tpm2b(nonce)?;
            w.u16(ALG_NULL);
            selection.write(w);
            Ok(())
        })?;
        let mut r = self.params(&reply);
        let attest = r.tpm2b("quoted")?.to_vec();
        let start = r.position();
        crate::attest::Signature::read(&mut r)?;
        let end = r.position();
        let sig_bytes = self
            .response(reply.params.start + start..reply.params.start + end)
            .to_vec();
        Ok(QuoteResult {
            attest,
            signature: sig_bytes,
        })
    }
}
