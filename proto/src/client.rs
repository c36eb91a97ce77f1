//! The node's side of the protocol: Start → Finish → Overlay → Report.
//!
//! The TPM, the HTTPS transport and the extractor come in through the
//! [`AttestTpm`], [`Transport`] and [`Sink`] traits, so PID 1 plugs in
//! `ember-tpm`, `ember-net` and `ember-fs`, and `ember attest` plugs in a
//! swtpm socket and a host TLS client.

use crate::ErrorKind;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::keys;
use crate::manifest::{Envelope, PublicKey};
use crate::msg::{
    self, decode, encode, path, ErrorCode, ErrorResponse, FinishRequest, FinishResponse, Outcome,
    OverlayGrant, PcrSelection, ReportRequest, ReportResponse, StartRequest, StartResponse,
    PROTOCOL_VERSION,
};
use crate::sealed::{Opener, Sink};
use crate::Error;
use ember_fs::hex::hex;

/// A quote and the PCR values it covers.
pub struct Quote {
    /// TPMS_ATTEST bytes.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE bytes.
    pub signature: Vec<u8>,
    /// Values of the selected PCRs, ascending index order.
    pub pcr_values: Vec<Vec<u8>>,
}

/// The TPM operations attestation needs. Byte strings are the TPM's own
/// marshalled structures without TPM2B size prefixes.
pub trait AttestTpm {
    type Error: fmt::Display;
    /// The EK's TPMT_PUBLIC.
    fn ek_public(&mut self) -> Result<Vec<u8>, Self::Error>;
    /// The EK certificate (DER) from NV, if the TPM has one.
    fn ek_certificate(&mut self) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Creates a fresh restricted signing AK (fixedTPM, fixedParent,
    /// sensitiveDataOrigin, stClear) and returns its TPMT_PUBLIC.
    fn create_ak(&mut self) -> Result<Vec<u8>, Self::Error>;
    /// ActivateCredential with the AK and EK; returns the released secret.
    fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, Self::Error>;
    /// Quote with the AK over `pcrs`, `qualifying` as extra data.
    fn quote(&mut self, qualifying: &[u8], pcrs: &PcrSelection) -> Result<Quote, Self::Error>;
}

/// A small POST response.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// `Retry-After` in seconds, when the response had one (429, 503).
    pub retry_after_s: Option<u32>,
}

/// Receives a streamed GET response.
pub trait BodySink {
    /// Called once with the status; return false to stop reading.
    fn status(&mut self, status: u16) -> bool;
    /// Called for each piece of the body; return false to stop reading.
    fn data(&mut self, piece: &[u8]) -> bool;
    /// Called before [`BodySink::status`] when the response carried
    /// `Retry-After: SECONDS`.
    fn retry_after(&mut self, _seconds: u32) {}
}

/// The HTTPS client (the node's `ember-net`, or a host TLS client). Paths are
/// absolute (`server.base_path` + protocol path); `bearer` goes into an
/// `Authorization: Bearer` header; POST bodies are [`msg::CONTENT_TYPE`].
pub trait Transport {
    type Error: TransportError;
    fn post(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<Response, Self::Error>;
    fn get(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        sink: &mut dyn BodySink,
    ) -> Result<(), Self::Error>;
}

/// A transport's failure, as the protocol needs to judge it.
pub trait TransportError: fmt::Display {
    /// Whether the server could not be reached at all (no DNS answer, no
    /// route, connection refused or timed out, closed before any answer):
    /// the one failure in which a node may boot its last-known-good. A TLS
    /// or certificate failure is not: a man in the middle could cause it.
    fn unreachable(&self) -> bool;
}

impl TransportError for core::convert::Infallible {
    fn unreachable(&self) -> bool {
        match *self {}
    }
}

/// The boot server's base URL (`ember.attest_url=`), parsed by ember-net.
pub use ember_net::url::ServerUrl as Url;

/// What a successful attestation yields. The secret never leaves the node.
pub struct Credential {
    pub session: [u8; 16],
    secret: [u8; 32],
    bearer: String,
    pub expires_in_s: u32,
    pub overlay: Option<OverlayGrant>,
}

impl Credential {
    /// Rebuilds a credential from its parts (replaying recorded transcripts
    /// in load tests).
    #[cfg(feature = "test-hooks")]
    pub fn from_parts(
        session: [u8; 16],
        secret: [u8; 32],
        credential: &[u8; 32],
        expires_in_s: u32,
        overlay: Option<OverlayGrant>,
    ) -> Self {
        Credential {
            session,
            secret,
            bearer: hex(credential),
            expires_in_s,
            overlay,
        }
    }

    /// The activated secret, for debugging tools that record a transcript.
    /// It keys the overlay: never log it.
    #[cfg(feature = "test-hooks")]
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The bearer credential as sent in `Authorization`.
    pub fn bearer(&self) -> &str {
        &self.bearer
    }

    /// The granted overlay, checked before one byte of it is fetched: the
    /// manifest's signature against `trust` (the initrd's `manifest.pub`),
    /// the data key unwrapped with this session's secret, and the key
    /// against the manifest's commitment. Fails with
    /// [`ErrorCode::NoOverlay`] when none was granted.
    pub fn open_grant(&self, trust: &PublicKey) -> Result<Envelope, Error> {
        let grant = self.overlay.as_ref().ok_or(Error::new(ErrorKind::Server {
            step: "overlay",
            status: 404,
            code: ErrorCode::NoOverlay,
            detail: Default::default(),
            retry_after_s: None,
        }))?;
        let manifest = trust.verify(&grant.manifest)?;
        let key = keys::unwrap_data_key(
            &self.secret,
            &self.session,
            &grant.manifest.body,
            &grant.wrapped_key,
        )
        .ok_or(Error::new(ErrorKind::KeyUnwrap))?;
        Envelope::new(manifest, key)
    }
}

impl Drop for Credential {
    fn drop(&mut self) {
        self.secret = [0; 32];
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("expires_in_s", &self.expires_in_s)
            .field("overlay", &self.overlay)
            .finish()
    }
}

fn tpm<T, E: fmt::Display>(op: &'static str, r: Result<T, E>) -> Result<T, Error> {
    r.map_err(|e| {
        Error::new(ErrorKind::Tpm {
            op,
            detail: format!("{e}").into(),
        })
    })
}

fn transport_failure(step: &'static str, e: &impl TransportError) -> Error {
    Error::new(ErrorKind::Transport {
        step,
        detail: format!("{e}").into(),
        unreachable: e.unreachable(),
    })
}

fn refusal(step: &'static str, status: u16, body: &[u8], retry_after_s: Option<u32>) -> Error {
    match decode::<ErrorResponse>("error", body) {
        Ok(e) => Error::new(ErrorKind::Server {
            step,
            status,
            code: e.code,
            detail: e.detail.into(),
            retry_after_s,
        }),
        Err(_) => Error::new(ErrorKind::UnexpectedResponse { step, status }),
    }
}

fn post<H: Transport>(
    http: &mut H,
    server: &Url,
    step: &'static str,
    p: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    let url = format!("{}{}", server.base_path, p);
    let resp = http
        .post(&url, bearer, body)
        .map_err(|e| transport_failure(step, &e))?;
    if resp.status != 200 {
        let err = refusal(step, resp.status, &resp.body, resp.retry_after_s);
        log::warn!("attest: {step} refused: {err}");
        return Err(err);
    }
    Ok(resp.body)
}

/// Steps 1 and 2: proves the TPM's identity and state, returns the
/// credential and the overlay metadata. `event_log` (the firmware's TCG
/// log, possibly empty) rides with the quote, cut at [`msg::MAX_EVENT_LOG`].
pub fn attest<T: AttestTpm, H: Transport>(
    tpm_dev: &mut T,
    http: &mut H,
    server: &Url,
    event_log: &[u8],
) -> Result<Credential, Error> {
    let ek_public = tpm("read EK", tpm_dev.ek_public())?;
    let ek_cert = tpm("read EK certificate", tpm_dev.ek_certificate())?;
    let ak_public = tpm("create AK", tpm_dev.create_ak())?;
    let start = encode(&StartRequest {
        version: PROTOCOL_VERSION,
        ek_public,
        ek_cert,
        ak_public,
    });
    let start_resp_bytes = post(http, server, "start", path::START, None, &start)?;
    let started: StartResponse = decode("start response", &start_resp_bytes)?;
    log::info!(
        "attest: session {} started, quoting PCR mask {:#x}",
        hex(&started.session),
        started.pcrs.mask
    );

    let secret = tpm(
        "ActivateCredential",
        tpm_dev.activate_credential(&started.credential_blob, &started.encrypted_secret),
    )?;
    let secret: [u8; 32] = secret
        .as_slice()
        .try_into()
        .map_err(|_| Error::new(ErrorKind::BadSecretLength { len: secret.len() }))?;
    let quote = tpm("Quote", tpm_dev.quote(&started.nonce, &started.pcrs))?;
    let mut finish = FinishRequest {
        version: PROTOCOL_VERSION,
        session: started.session,
        attest: quote.attest,
        signature: quote.signature,
        pcr_values: quote.pcr_values,
        proof: [0; 32],
        event_log: bounded_event_log(event_log),
    };
    let transcript = keys::start_transcript(&start, &start_resp_bytes);
    finish.proof = keys::finish_proof(&secret, &transcript, &finish);
    let finished: FinishResponse = decode(
        "finish response",
        &post(http, server, "finish", path::FINISH, None, &encode(&finish))?,
    )?;
    log::info!(
        "attest: credential for {} s, overlay {}",
        finished.expires_in_s,
        if finished.overlay.is_some() {
            "granted"
        } else {
            "none"
        }
    );
    Ok(Credential {
        session: started.session,
        secret,
        bearer: hex(&finished.credential),
        expires_in_s: finished.expires_in_s,
        overlay: finished.overlay,
    })
}

/// The event log as sent: a log over [`msg::MAX_EVENT_LOG`] is not cut
/// (a cut log replays to nothing useful) but left out, and the server
/// judges by PCR values alone where its policy allows that.
fn bounded_event_log(log: &[u8]) -> Vec<u8> {
    if log.len() > msg::MAX_EVENT_LOG {
        log::warn!(
            "attest: the event log has {} bytes, over the {} the protocol carries; sending none",
            log.len(),
            msg::MAX_EVENT_LOG
        );
        return Vec::new();
    }
    log.to_vec()
}

/// Forwards a 200 body to the caller; keeps an error body (bounded) for
/// the refusal.
struct SealedBody<'a> {
    each: &'a mut dyn FnMut(&[u8]) -> Result<(), Error>,
    status: u16,
    error_body: Vec<u8>,
    error: Option<Error>,
}

impl BodySink for SealedBody<'_> {
    fn status(&mut self, status: u16) -> bool {
        self.status = status;
        true
    }

    fn data(&mut self, piece: &[u8]) -> bool {
        if self.status != 200 {
            let room = msg::MAX_MESSAGE.saturating_sub(self.error_body.len());
            self.error_body
                .extend_from_slice(&piece[..piece.len().min(room)]);
            return room > 0;
        }
        match (self.each)(piece) {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }
}

/// Where a sealed blob is served: `<base>/v1/blob/<sha256 hex>`.
pub fn blob_path(server: &Url, blob_sha256: &[u8; 32]) -> String {
    format!("{}{}/{}", server.base_path, path::BLOB, hex(blob_sha256))
}

/// Where a boot artifact (the UKI last-known-good keeps) is served:
/// `<base>/v1/boot/<sha256 hex>`.
pub fn boot_path(server: &Url, sha256: &[u8; 32]) -> String {
    format!("{}{}/{}", server.base_path, path::BOOT, hex(sha256))
}

/// Step 3, raw: streams the sealed blob the manifest names, as served,
/// into `each` (no credential: the blob is ciphertext). The caller opens
/// it (a [`crate::sealed::Opener`]) and may keep the ciphertext too (the
/// init does, for last-known-good).
pub fn fetch_blob<H: Transport>(
    http: &mut H,
    server: &Url,
    envelope: &Envelope,
    each: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let url = blob_path(server, &envelope.manifest.blob_sha256);
    fetch_static(http, "overlay", &url, each)
}

/// Streams the content-addressed file at `url` (a sealed blob, a boot
/// artifact) into `each`; the caller checks what it received against the
/// digest it asked for. A refusal is read from the error body.
pub fn fetch_static<H: Transport>(
    http: &mut H,
    step: &'static str,
    url: &str,
    each: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut body = SealedBody {
        each,
        status: 0,
        error_body: Vec::new(),
        error: None,
    };
    let transport = http.get(url, None, &mut body);
    if let Some(e) = body.error.take() {
        return Err(e);
    }
    transport.map_err(|e| transport_failure(step, &e))?;
    if body.status != 200 {
        return Err(refusal(step, body.status, &body.error_body, None));
    }
    Ok(())
}

/// Step 3: streams the blob `envelope` names, opening it chunk by chunk
/// into `sink` (the extractor).
pub fn fetch_overlay<H: Transport, S: Sink>(
    http: &mut H,
    server: &Url,
    envelope: &Envelope,
    sink: &mut S,
) -> Result<(), Error> {
    let mut opener = Opener::for_manifest(envelope);
    fetch_blob(http, server, envelope, &mut |piece| {
        opener.write(piece, sink)
    })?;
    opener.finish(sink)?;
    log::info!(
        "attest: overlay {} (epoch {}) opened, {} bytes",
        envelope.manifest.version_id,
        envelope.manifest.epoch,
        envelope.manifest.plain_size
    );
    Ok(())
}

/// Step 4: tells the server how the boot ended.
pub fn report<H: Transport>(
    http: &mut H,
    server: &Url,
    cred: &Credential,
    outcome: Outcome,
    overlay_version: Option<u64>,
    reason: &str,
    timeline: Option<&crate::timeline::Timeline>,
) -> Result<ReportResponse, Error> {
    let req = ReportRequest {
        version: PROTOCOL_VERSION,
        outcome,
        overlay_version,
        reason: reason.to_string(),
    };
    let body = post(
        http,
        server,
        "report",
        path::REPORT,
        Some(cred.bearer()),
        &msg::encode_report(&req, timeline),
    )?;
    decode("report response", &body)
}

#[cfg(test)]
mod event_log_tests {
    use super::*;

    #[test]
    fn an_event_log_over_the_bound_is_left_out_not_cut() {
        let fits = alloc::vec![7u8; msg::MAX_EVENT_LOG];
        assert_eq!(bounded_event_log(&fits), fits);
        assert!(bounded_event_log(&alloc::vec![7u8; msg::MAX_EVENT_LOG + 1]).is_empty());
    }
}
