//! Keys: primary objects (EK, SRK), ordinary ones created and loaded under
//! a parent, the attestation key, and ActivateCredential.

use crate::consts::*;
use crate::error::Result;
use crate::public::{ak_template, ek_template, srk_template, AkKind, EkTemplate, PublicArea};
use crate::session::SessionKind;
use crate::transport::Transport;
use crate::wire::{Reader, Writer};
use alloc::vec::Vec;
use tpm2_protocol::data::TpmCc;

use super::{Auth, CreatedKey, Hierarchy, LoadedObject, Tpm};

impl<T: Transport> Tpm<T> {
    /// The public area and Name of a loaded or persistent object.
    pub fn read_public(&mut self, handle: u32) -> Result<LoadedObject> {
        let reply = self.execute(TpmCc::ReadPublic, &[handle], &[], 0, |_| Ok(()))?;
        let mut r = self.params(&reply);
        let public = PublicArea::from_bytes(r.tpm2b("outPublic")?)?;
        let name = r.tpm2b("name")?.to_vec();
        r.tpm2b("qualifiedName")?;
        Ok(LoadedObject {
            handle,
            public,
            name,
        })
    }

    /// TPM2_CreatePrimary with an empty authValue for the new object.
    pub fn create_primary(
        &mut self,
        hierarchy: Hierarchy,
        hierarchy_auth: &[u8],
        template: &PublicArea,
    ) -> Result<LoadedObject> {
        let reply = self.execute(
            TpmCc::CreatePrimary,
            &[hierarchy.handle()],
            &[Auth::Password(hierarchy_auth)],
            1,
            |w| {
                write_sensitive_create(w, &[], &[])?;
                write_tpm2b_public(w, template)?;
                w.u16(0); // outsideInfo
                w.u32(0); // creationPCR: none
                Ok(())
            },
        )?;
        let handle = reply.handle;
        let mut r = self.params(&reply);
        let public = PublicArea::from_bytes(r.tpm2b("outPublic")?)?;
        r.tpm2b("creationData")?;
        r.tpm2b("creationHash")?;
        skip_ticket(&mut r)?;
        let name = r.tpm2b("name")?.to_vec();
        Ok(LoadedObject {
            handle,
            public,
            name,
        })
    }

    /// Creates the endorsement key from a TCG template; its public key is the
    /// one in the manufacturer's EK certificate for that template.
    pub fn create_ek(&mut self, template: EkTemplate) -> Result<LoadedObject> {
        self.create_primary(Hierarchy::Endorsement, &[], &ek_template(template))
    }

    /// Creates the storage root key (owner hierarchy, [`srk_template`]).
    pub fn create_srk(&mut self) -> Result<LoadedObject> {
        self.create_primary(Hierarchy::Owner, &[], &srk_template())
    }

    /// TPM2_Create under `parent` (authorized with `parent_auth`), with an
    /// empty authValue and `data` as sensitive data (for sealed objects).
    pub fn create(
        &mut self,
        parent: u32,
        parent_auth: &[u8],
        template: &PublicArea,
        data: &[u8],
    ) -> Result<CreatedKey> {
        let reply = self.execute(
            TpmCc::Create,
            &[parent],
            &[Auth::Password(parent_auth)],
            0,
            |w| {
                write_sensitive_create(w, &[], data)?;
                write_tpm2b_public(w, template)?;
                w.u16(0);
                w.u32(0);
                Ok(())
            },
        )?;
        let mut r = self.params(&reply);
        let private = r.tpm2b("outPrivate")?.to_vec();
        let public = PublicArea::from_bytes(r.tpm2b("outPublic")?)?;
        r.tpm2b("creationData")?;
        r.tpm2b("creationHash")?;
        skip_ticket(&mut r)?;
        Ok(CreatedKey { private, public })
    }

    /// TPM2_Load of a key made by [`Tpm::create`] under the same parent.
    pub fn load(
        &mut self,
        parent: u32,
        parent_auth: &[u8],
        key: &CreatedKey,
    ) -> Result<LoadedObject> {
        let reply = self.execute(
            TpmCc::Load,
            &[parent],
            &[Auth::Password(parent_auth)],
            1,
            |w| {
                w.tpm2b(&key.private)?;
                write_tpm2b_public(w, &key.public)
            },
        )?;
        let handle = reply.handle;
        let mut r = self.params(&reply);
        let name = r.tpm2b("name")?.to_vec();
        Ok(LoadedObject {
            handle,
            public: key.public.clone(),
            name,
        })
    }

    /// Creates and loads an attestation key under `parent` (normally the SRK).
    /// Keep the [`CreatedKey`] to load the same AK again after a reboot.
    pub fn create_ak(&mut self, parent: u32, kind: AkKind) -> Result<(CreatedKey, LoadedObject)> {
        let key = self.create(parent, &[], &ak_template(kind), &[])?;
        let loaded = self.load(parent, &[], &key)?;
        Ok((key, loaded))
    }

    /// TPM2_ActivateCredential with explicit authorizations for the AK and EK.
    pub fn activate_credential_with(
        &mut self,
        ak: u32,
        ak_auth: Auth<'_>,
        ek: u32,
        ek_auth: Auth<'_>,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>> {
        let reply = self.execute(
            TpmCc::ActivateCredential,
            &[ak, ek],
            &[ak_auth, ek_auth],
            0,
            |w| {
                w.tpm2b(credential_blob)?;
                w.tpm2b(encrypted_secret)
            },
        )?;
        let mut r = self.params(&reply);
        Ok(r.tpm2b("certInfo")?.to_vec())
    }

    /// Recovers the secret the server wrapped with MakeCredential for this
    /// EK and AK Name. An EK without userWithAuth (low-range templates) is
    /// authorized by a PolicySecret(TPM_RH_ENDORSEMENT) session, flushed
    /// afterwards. `credential_blob` is the TPM2B_ID_OBJECT buffer and
    /// `encrypted_secret` the TPM2B_ENCRYPTED_SECRET buffer.
    pub fn activate_credential(
        &mut self,
        ak: &LoadedObject,
        ek: &LoadedObject,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>> {
        if ek.public.attributes & crate::public::attributes::USER_WITH_AUTH != 0 {
            return self.activate_credential_with(
                ak.handle,
                Auth::Password(&[]),
                ek.handle,
                Auth::Password(&[]),
                credential_blob,
                encrypted_secret,
            );
        }
        let session = self.start_policy_session(SessionKind::Policy)?;
        let result = self
            .policy_secret(&session, RH_ENDORSEMENT, &[])
            .and_then(|_| {
                self.activate_credential_with(
                    ak.handle,
                    Auth::Password(&[]),
                    ek.handle,
                    Auth::Policy(session),
                    credential_blob,
                    encrypted_secret,
                )
            });
        let flushed = self.flush_context(session.handle);
        let secret = result?;
        flushed?;
        Ok(secret)
    }
}

fn write_sensitive_create(w: &mut Writer<'_>, user_auth: &[u8], data: &[u8]) -> Result<()> {
    let at = w.begin_size16();
    w.tpm2b(user_auth)?;
    w.tpm2b(data)?;
    w.end_size16(at)
}

fn write_tpm2b_public(w: &mut Writer<'_>, p: &PublicArea) -> Result<()> {
    let at = w.begin_size16();
    p.write(w)?;
    w.end_size16(at)
}

fn skip_ticket(r: &mut Reader<'_>) -> Result<()> {
    r.u16("ticket tag")?;
    r.u32("ticket hierarchy")?;
    r.tpm2b("ticket digest")?;
    Ok(())
}
