//! The node's side of the protocol: Start → Finish → Overlay → Report.
//!
//! The TPM, the HTTPS transport and the extractor come in through the
//! [`AttestTpm`], [`Transport`] and [`Sink`] traits, so PID 1 plugs in
//! `ember-tpm`, `ember-net` and `ember-fs`, and `ember attest` plugs in a
//! swtpm socket and a host TLS client.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::keys;
use crate::msg::{
    self, decode, encode, path, ErrorCode, ErrorResponse, FinishRequest, FinishResponse, Outcome,
    OverlayMeta, PcrSelection, ReportRequest, ReportResponse, StartRequest, StartResponse,
    PROTOCOL_VERSION,
};
use crate::sealed::{Expected, Opener, Sink};
use crate::Error;

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
}

/// Receives a streamed GET response.
pub trait BodySink {
    /// Called once with the status; return false to stop reading.
    fn status(&mut self, status: u16) -> bool;
    /// Called for each piece of the body; return false to stop reading.
    fn data(&mut self, piece: &[u8]) -> bool;
}

/// The HTTPS client (the node's `ember-net`, or a host TLS client). Paths are
/// absolute (`cfg.base_path` + protocol path); `bearer` goes into an
/// `Authorization: Bearer` header; POST bodies are [`msg::CONTENT_TYPE`].
pub trait Transport {
    type Error: fmt::Display;
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

/// Where the server lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Path prefix of the server's URL ("" or "/prefix", no trailing slash).
    pub base_path: String,
}

/// The parts of `ember.attest_url=https://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub base_path: String,
}

impl Url {
    pub fn parse(url: &str) -> Option<Url> {
        let rest = url.strip_prefix("https://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
            _ => (authority, 443),
        };
        if host.is_empty() {
            return None;
        }
        Some(Url {
            host: host.to_string(),
            port,
            base_path: path.to_string(),
        })
    }

    /// `https://host:port`, what [`crate::net::NetTransport`] prefixes paths with.
    pub fn origin(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }

    pub fn config(&self) -> Config {
        Config {
            base_path: self.base_path.clone(),
        }
    }
}

/// What a successful attestation yields. The secret never leaves the node.
pub struct Credential {
    pub session: [u8; 16],
    secret: [u8; 32],
    bearer: String,
    pub expires_in_s: u32,
    pub overlay: Option<OverlayMeta>,
}

impl Credential {
    /// Rebuilds a credential from its parts (replaying recorded transcripts
    /// in load tests).
    pub fn from_parts(
        session: [u8; 16],
        secret: [u8; 32],
        credential: &[u8; 32],
        expires_in_s: u32,
        overlay: Option<OverlayMeta>,
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
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The bearer credential as sent in `Authorization`.
    pub fn bearer(&self) -> &str {
        &self.bearer
    }

    /// The overlay stream key for this session.
    pub fn overlay_key(&self, overlay: &OverlayMeta) -> [u8; 32] {
        keys::overlay_key(&self.secret, &self.session, &overlay.sha256)
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

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}

fn tpm<T, E: fmt::Display>(op: &'static str, r: Result<T, E>) -> Result<T, Error> {
    r.map_err(|e| Error::Tpm {
        op,
        detail: format!("{e}"),
    })
}

fn refusal(step: &'static str, status: u16, body: &[u8]) -> Error {
    match decode::<ErrorResponse>("error", body) {
        Ok(e) => Error::Server {
            step,
            status,
            code: e.code,
            detail: e.detail,
        },
        Err(_) => Error::UnexpectedResponse { step, status },
    }
}

fn post<H: Transport>(
    http: &mut H,
    cfg: &Config,
    step: &'static str,
    p: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    let url = format!("{}{}", cfg.base_path, p);
    let resp = http
        .post(&url, bearer, body)
        .map_err(|e| Error::Transport {
            step,
            detail: format!("{e}"),
        })?;
    if resp.status != 200 {
        let err = refusal(step, resp.status, &resp.body);
        log::warn!("attest: {step} refused: {err}");
        return Err(err);
    }
    Ok(resp.body)
}

/// Steps 1 and 2: proves the TPM's identity and state, returns the
/// credential and the overlay metadata.
pub fn attest<T: AttestTpm, H: Transport>(
    tpm_dev: &mut T,
    http: &mut H,
    cfg: &Config,
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
    let start_resp_bytes = post(http, cfg, "start", path::START, None, &start)?;
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
        .map_err(|_| Error::BadSecretLength { len: secret.len() })?;
    let quote = tpm("Quote", tpm_dev.quote(&started.nonce, &started.pcrs))?;
    let mut finish = FinishRequest {
        version: PROTOCOL_VERSION,
        session: started.session,
        attest: quote.attest,
        signature: quote.signature,
        pcr_values: quote.pcr_values,
        proof: [0; 32],
    };
    let transcript = keys::start_transcript(&start, &start_resp_bytes);
    finish.proof = keys::finish_proof(&secret, &transcript, &finish);
    let finished: FinishResponse = decode(
        "finish response",
        &post(http, cfg, "finish", path::FINISH, None, &encode(&finish))?,
    )?;
    log::info!(
        "attest: credential for {} s, overlay {:?}",
        finished.expires_in_s,
        finished.overlay.as_ref().map(|o| o.version_id)
    );
    Ok(Credential {
        session: started.session,
        secret,
        bearer: hex(&finished.credential),
        expires_in_s: finished.expires_in_s,
        overlay: finished.overlay,
    })
}

struct OverlayBody<'a, S: Sink> {
    opener: Opener,
    sink: &'a mut S,
    status: u16,
    error_body: Vec<u8>,
    error: Option<Error>,
}

impl<S: Sink> BodySink for OverlayBody<'_, S> {
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
        match self.opener.write(piece, self.sink) {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }
}

/// Step 3: streams the sealed overlay, opening it chunk by chunk into `sink`
/// (the extractor). Returns the overlay it wrote. Fails with
/// [`ErrorCode::NoOverlay`] when none is assigned.
pub fn fetch_overlay<H: Transport, S: Sink>(
    http: &mut H,
    cfg: &Config,
    cred: &Credential,
    sink: &mut S,
) -> Result<OverlayMeta, Error> {
    let step = "overlay";
    let Some(meta) = cred.overlay.clone() else {
        return Err(Error::Server {
            step,
            status: 404,
            code: ErrorCode::NoOverlay,
            detail: String::new(),
        });
    };
    let expected = Expected {
        sha256: meta.sha256,
        size: meta.size,
    };
    let mut body = OverlayBody {
        opener: Opener::new(cred.overlay_key(&meta), expected),
        sink,
        status: 0,
        error_body: Vec::new(),
        error: None,
    };
    let url = format!("{}{}", cfg.base_path, path::OVERLAY);
    let transport = http.get(&url, Some(cred.bearer()), &mut body);
    if let Some(e) = body.error.take() {
        return Err(e);
    }
    transport.map_err(|e| Error::Transport {
        step,
        detail: format!("{e}"),
    })?;
    if body.status != 200 {
        return Err(refusal(step, body.status, &body.error_body));
    }
    body.opener.finish(body.sink)?;
    log::info!(
        "attest: overlay {} opened, {} bytes",
        meta.version_id,
        meta.size
    );
    Ok(meta)
}

/// Step 4: tells the server how the boot ended.
pub fn report<H: Transport>(
    http: &mut H,
    cfg: &Config,
    cred: &Credential,
    outcome: Outcome,
    overlay_version: Option<u64>,
    reason: &str,
) -> Result<ReportResponse, Error> {
    let req = ReportRequest {
        version: PROTOCOL_VERSION,
        outcome,
        overlay_version,
        reason: reason.to_string(),
    };
    let body = post(
        http,
        cfg,
        "report",
        path::REPORT,
        Some(cred.bearer()),
        &encode(&req),
    )?;
    decode("report response", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts() {
        assert_eq!(
            Url::parse("https://boot.example:8443/ember/"),
            Some(Url {
                host: "boot.example".into(),
                port: 8443,
                base_path: "/ember".into()
            })
        );
        assert_eq!(
            Url::parse("https://10.0.2.2"),
            Some(Url {
                host: "10.0.2.2".into(),
                port: 443,
                base_path: "".into()
            })
        );
        assert_eq!(Url::parse("http://x"), None);
        assert_eq!(Url::parse("https://:9"), None);
        assert_eq!(Url::parse("https://h:notaport"), None);
    }
}
