//! [`AttestTpm`] over `ember-tpm` (feature `tpm`): what PID 1 and
//! `ember attest` hand to [`crate::client::attest`].
//!
//! The EK is recreated from the TCG template whose certificate the TPM holds
//! (ECC P-384, then RSA 2048, then ECC P-256; RSA 2048 without certificate
//! when there is none). The AK is an ECC P-256 restricted signing key under
//! a fresh SRK, created with stClear so it cannot outlive this boot.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ember_tpm::{
    ak_template, attributes, AkKind, EkTemplate, HashAlg, LoadedObject,
    PcrSelection as TpmPcrSelection, PublicParams, Tpm, Transport, Unique,
};

use crate::client::{AttestTpm, Quote};
use crate::msg::PcrSelection;

/// The TPM side of one attestation. Call [`TpmAttestor::close`] afterwards to
/// flush the transient objects (dropping does not talk to the TPM).
pub struct TpmAttestor<'a, T: Transport> {
    tpm: &'a mut Tpm<T>,
    ek_choice: Option<EkTemplate>,
    ek: Option<LoadedObject>,
    ek_cert: Option<Vec<u8>>,
    ak: Option<LoadedObject>,
}

const EK_ORDER: [EkTemplate; 3] = [
    EkTemplate::EccP384,
    EkTemplate::Rsa2048,
    EkTemplate::EccP256,
];

impl<'a, T: Transport> TpmAttestor<'a, T> {
    pub fn new(tpm: &'a mut Tpm<T>) -> Self {
        TpmAttestor {
            tpm,
            ek_choice: None,
            ek: None,
            ek_cert: None,
            ak: None,
        }
    }

    /// Uses this EK template instead of the first one with a certificate.
    pub fn with_ek_template(tpm: &'a mut Tpm<T>, template: EkTemplate) -> Self {
        TpmAttestor {
            tpm,
            ek_choice: Some(template),
            ek: None,
            ek_cert: None,
            ak: None,
        }
    }

    fn ek(&mut self) -> Result<&LoadedObject, ember_tpm::Error> {
        if self.ek.is_none() {
            let template = match self.ek_choice {
                Some(t) => {
                    self.ek_cert = self.tpm.nv_read_ek_certificate(t).ok();
                    t
                }
                None => {
                    let mut chosen = EkTemplate::Rsa2048;
                    for t in EK_ORDER {
                        if let Ok(cert) = self.tpm.nv_read_ek_certificate(t) {
                            self.ek_cert = Some(cert);
                            chosen = t;
                            break;
                        }
                    }
                    chosen
                }
            };
            self.ek = Some(self.tpm.create_ek(template)?);
        }
        // Just set above when it was empty.
        self.ek.as_ref().ok_or(ember_tpm::Error::new(
            ember_tpm::ErrorKind::InvalidArgument { what: "EK" },
        ))
    }

    /// This TPM's EK identity ([`crate::keys::ek_hash_rsa`] /
    /// [`crate::keys::ek_hash_ecc`]), as the server computes it from the
    /// EK the node sends: what a boot image record names its node by.
    pub fn ek_hash(&mut self) -> Result<[u8; 32], ember_tpm::Error> {
        let ek = &self.ek()?.public;
        match (&ek.params, &ek.unique) {
            (PublicParams::Rsa { .. }, Unique::Rsa(n)) => Ok(crate::keys::ek_hash_rsa(
                n,
                ek.rsa_exponent().unwrap_or(65537),
            )),
            (PublicParams::Ecc { curve, .. }, Unique::Ecc(p)) => {
                Ok(crate::keys::ek_hash_ecc(*curve, &p.x, &p.y))
            }
            _ => Err(ember_tpm::Error::new(ember_tpm::ErrorKind::Unsupported {
                what: "EK key type",
                value: 0,
            })),
        }
    }

    /// Flushes the EK and AK from the TPM.
    pub fn close(mut self) -> Result<(), ember_tpm::Error> {
        let mut result = Ok(());
        for obj in [self.ak.take(), self.ek.take()].into_iter().flatten() {
            if let Err(e) = self.tpm.flush_context(obj.handle) {
                result = Err(e);
            }
        }
        result
    }
}

fn tpm_selection(pcrs: &PcrSelection) -> Result<TpmPcrSelection, ember_tpm::Error> {
    let bank = HashAlg::from_alg_id(pcrs.hash_alg)?;
    let indices: Vec<u8> = pcrs.indices().collect();
    TpmPcrSelection::new(bank, &indices)
}

impl<T: Transport> AttestTpm for TpmAttestor<'_, T> {
    type Error = ember_tpm::Error;

    fn ek_public(&mut self) -> Result<Vec<u8>, Self::Error> {
        self.ek()?.public.to_bytes()
    }

    fn ek_certificate(&mut self) -> Result<Option<Vec<u8>>, Self::Error> {
        self.ek()?;
        Ok(self.ek_cert.clone())
    }

    fn create_ak(&mut self) -> Result<Vec<u8>, Self::Error> {
        if let Some(old) = self.ak.take() {
            self.tpm.flush_context(old.handle)?;
        }
        let srk = self.tpm.create_srk()?;
        let mut template = ak_template(AkKind::EccP256);
        template.attributes |= attributes::ST_CLEAR;
        let created = self.tpm.create(srk.handle, &[], &template, &[]);
        let loaded = created.and_then(|key| self.tpm.load(srk.handle, &[], &key));
        // The SRK is only the AK's parent: free its slot either way.
        let flushed = self.tpm.flush_context(srk.handle);
        let ak = loaded?;
        flushed?;
        let public = ak.public.to_bytes()?;
        self.ak = Some(ak);
        Ok(public)
    }

    fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, Self::Error> {
        self.ek()?;
        let (Some(ak), Some(ek)) = (self.ak.clone(), self.ek.clone()) else {
            return Err(ember_tpm::Error::new(
                ember_tpm::ErrorKind::InvalidArgument {
                    what: "ActivateCredential before the AK exists",
                },
            ));
        };
        self.tpm
            .activate_credential(&ak, &ek, credential_blob, encrypted_secret)
    }

    fn quote(&mut self, qualifying: &[u8], pcrs: &PcrSelection) -> Result<Quote, Self::Error> {
        let Some(ak) = self.ak.as_ref().map(|a| a.handle) else {
            return Err(ember_tpm::Error::new(
                ember_tpm::ErrorKind::InvalidArgument {
                    what: "Quote before the AK exists",
                },
            ));
        };
        let selection = tpm_selection(pcrs)?;
        // Values first: if a PCR moves before the quote, the server sees a
        // digest mismatch instead of a silently stale value.
        let values = self.tpm.pcr_read(&selection)?;
        let mut pcr_values = Vec::new();
        for (bank, index) in selection.iter() {
            let v = values.get(bank, index).ok_or(ember_tpm::Error::new(
                ember_tpm::ErrorKind::PcrValueMissing {
                    bank: bank.alg_id(),
                    index,
                },
            ))?;
            pcr_values.push(v.to_vec());
        }
        let q = self.tpm.quote(ak, qualifying, &selection)?;
        Ok(Quote {
            attest: q.attest,
            signature: q.signature,
            pcr_values,
        })
    }
}

/// Describes an `ember_tpm::Error` for logs.
pub fn describe(e: &ember_tpm::Error) -> String {
    format!("{e}")
}
