//! One attestation exchange as the host tool records and replays it: the
//! transcript of a node (`--record` writes it, `--replay` reads it), the
//! codec that turns a recorded Finish into one for a new session, and the
//! failure that sends a client on to the next server.

use anyhow::{anyhow, Result};
use ember_proto::keys;
use ember_proto::msg::{decode, encode, FinishRequest, FinishResponse, StartResponse};

/// A failure another server may not have: this one could not be reached,
/// or failed internally (its database is down, it is restarting). The next
/// server is tried; any other refusal is the fleet's answer.
#[derive(Debug)]
pub struct ServerUnavailable {
    pub what: String,
    /// The server's `Retry-After`, when it sent one (a busy database).
    pub retry_after_s: Option<u32>,
}

impl ServerUnavailable {
    pub fn error(what: String, retry_after_s: Option<u32>) -> anyhow::Error {
        anyhow::Error::new(ServerUnavailable {
            what,
            retry_after_s,
        })
    }
}

impl std::fmt::Display for ServerUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for ServerUnavailable {}

/// One recorded node: the activated secret and the Start and Finish bodies.
pub struct Recording {
    pub secret: [u8; 32],
    pub start: Vec<u8>,
    pub finish: Vec<u8>,
}

impl Recording {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"EMBREC01".to_vec();
        out.extend_from_slice(&self.secret);
        for part in [&self.start, &self.finish] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    pub fn parse(b: &[u8]) -> Result<Recording> {
        let bad = || anyhow!("not an ember recording");
        let rest = b.strip_prefix(b"EMBREC01").ok_or_else(bad)?;
        let secret: [u8; 32] = rest.get(..32).ok_or_else(bad)?.try_into()?;
        let mut rest = &rest[32..];
        let mut take = || -> Result<Vec<u8>> {
            let len = u32::from_be_bytes(rest.get(..4).ok_or_else(bad)?.try_into()?) as usize;
            let part = rest.get(4..4 + len).ok_or_else(bad)?.to_vec();
            rest = &rest[4 + len..];
            Ok(part)
        };
        let start = take()?;
        let finish = take()?;
        Ok(Recording {
            secret,
            start,
            finish,
        })
    }
}

/// The Finish a recorded node sends again in a new session: the recorded
/// request with this session's id and a proof over this session's
/// transcript (`start_req`, `start_resp`), made with the recorded secret.
pub fn finish_for_replay(
    rec_finish: &[u8],
    start_req: &[u8],
    start_resp: &[u8],
    secret: &[u8; 32],
) -> Result<(FinishRequest, StartResponse)> {
    let started: StartResponse =
        decode("start response", start_resp).map_err(|e| anyhow!("{e}"))?;
    let mut finish: FinishRequest =
        decode("finish", rec_finish).map_err(|e| anyhow!("recorded finish: {e}"))?;
    finish.session = started.session;
    finish.proof = keys::finish_proof(
        secret,
        &keys::start_transcript(start_req, start_resp),
        &finish,
    );
    Ok((finish, started))
}

/// Decodes the server's Finish response.
pub fn decode_finish(body: &[u8]) -> Result<FinishResponse> {
    decode("finish response", body).map_err(|e| anyhow!("{e}"))
}

/// Encodes a Finish request as it goes on the wire.
pub fn encode_finish(f: &FinishRequest) -> Vec<u8> {
    encode(f)
}

#[cfg(test)]
mod tests {
    use super::Recording;

    #[test]
    fn a_recording_reads_back_as_written_and_a_cut_one_is_refused() {
        let rec = Recording {
            secret: [9; 32],
            start: b"start body".to_vec(),
            finish: b"finish body, longer".to_vec(),
        };
        let bytes = rec.to_bytes();
        let back = Recording::parse(&bytes).unwrap();
        assert_eq!(back.secret, rec.secret);
        assert_eq!(back.start, rec.start);
        assert_eq!(back.finish, rec.finish);
        for cut in [0, 8, 40, 44, bytes.len() - 1] {
            assert!(Recording::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[7] = b'2';
        assert!(Recording::parse(&other).is_err(), "another format version");
    }
}
