//! Everything both sides derive from the activated secret. Keeping the
//! derivations in one place is what makes the node and the server agree.

use ember_aead::{AeadInPlace, ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::msg::{encode, FinishRequest};

/// Where [`ct_eq`] always was: the server compares its proofs and
/// credential hashes through this path.
pub use crate::ct::ct_eq;

type HmacSha256 = Hmac<Sha256>;

const START_LABEL: &[u8] = b"ember/attest/v1/start";
const FINISH_LABEL: &[u8] = b"ember/attest/v1/finish";
const WRAP_LABEL: &[u8] = b"ember/overlay-key-wrap/v1";

/// An RSA EK's identity (`ek_hash`): SHA-256 over its public key, not its
/// template, so an EK enrolled from its certificate matches the public
/// area the node sends. The server names nodes by it; a last-known-good
/// slot's signed boot image record names the node it was made for by it.
pub fn ek_hash_rsa(modulus: &[u8], exponent: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"ember/ek/rsa");
    h.update(exponent.to_be_bytes());
    h.update(strip_zeros(modulus));
    h.finalize().into()
}

/// An ECC EK's identity (see [`ek_hash_rsa`]).
pub fn ek_hash_ecc(curve: u16, x: &[u8], y: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"ember/ek/ecc");
    h.update(curve.to_be_bytes());
    let (x, y) = (strip_zeros(x), strip_zeros(y));
    h.update((x.len() as u16).to_be_bytes());
    h.update(x);
    h.update(y);
    h.finalize().into()
}

/// `v` without its leading zero bytes.
pub fn strip_zeros(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    &v[start..]
}

/// Hash of the Start exchange exactly as sent: binds the proof to the EK,
/// AK, nonce and session the node saw.
pub fn start_transcript(start_request: &[u8], start_response: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(START_LABEL);
    h.update((start_request.len() as u64).to_be_bytes());
    h.update(start_request);
    h.update((start_response.len() as u64).to_be_bytes());
    h.update(start_response);
    h.finalize().into()
}

/// The node's proof that it holds the secret ActivateCredential released:
/// HMAC-SHA256(secret, label || start transcript || Finish with a zero proof).
pub fn finish_proof(
    secret: &[u8; 32],
    start_transcript: &[u8; 32],
    finish: &FinishRequest,
) -> [u8; 32] {
    let mut unproved = finish.clone();
    unproved.proof = [0; 32];
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(FINISH_LABEL);
    mac.update(start_transcript);
    mac.update(&encode(&unproved));
    mac.finalize().into_bytes().into()
}

// HMAC accepts keys of any length; this cannot be reached.
fn unreachable_hmac() -> HmacSha256 {
    unreachable!("HMAC takes keys of any length")
}

/// Checks a proof in constant time.
pub fn verify_finish_proof(
    secret: &[u8; 32],
    start_transcript: &[u8; 32],
    finish: &FinishRequest,
) -> bool {
    let expected = finish_proof(secret, start_transcript, finish);
    ct_eq(&expected, &finish.proof)
}

/// Length of a wrapped data key: the key and its Poly1305 tag.
pub const WRAPPED_KEY_LEN: usize = 32 + 16;

/// The key that wraps an overlay's data key for one session: HKDF-SHA256
/// of the activated secret, the session id as salt, bound to the signed
/// manifest's bytes, so only the attested node unwraps it, and only for
/// the manifest it came with.
fn wrap_key(secret: &[u8; 32], session: &[u8; 16], signed_manifest: &[u8]) -> ChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(session), secret);
    let mut info = [0u8; WRAP_LABEL.len() + 32];
    info[..WRAP_LABEL.len()].copy_from_slice(WRAP_LABEL);
    info[WRAP_LABEL.len()..].copy_from_slice(&Sha256::digest(signed_manifest));
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
    let _ = hk.expand(&info, &mut key);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
    key.iter_mut().for_each(|b| *b = 0);
    cipher
}

/// The server's side: the data key, encrypted for this session. The wrap
/// key is used once (one session, one manifest), so the nonce is zero.
pub fn wrap_data_key(
    secret: &[u8; 32],
    session: &[u8; 16],
    signed_manifest: &[u8],
    data_key: &[u8; 32],
) -> [u8; WRAPPED_KEY_LEN] {
    let mut out = [0u8; WRAPPED_KEY_LEN];
    out[..32].copy_from_slice(data_key);
    let (body, tag) = out.split_at_mut(32);
    if let Ok(t) = wrap_key(secret, session, signed_manifest).encrypt_in_place_detached(
        &Nonce::default(),
        WRAP_LABEL,
        body,
    ) {
        tag.copy_from_slice(&t);
    }
    out
}

/// The node's side; `None` when the wrapped key was not made for this
/// session and manifest.
pub fn unwrap_data_key(
    secret: &[u8; 32],
    session: &[u8; 16],
    signed_manifest: &[u8],
    wrapped: &[u8],
) -> Option<[u8; 32]> {
    if wrapped.len() != WRAPPED_KEY_LEN {
        return None;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&wrapped[..32]);
    let tag = Tag::clone_from_slice(&wrapped[32..]);
    wrap_key(secret, session, signed_manifest)
        .decrypt_in_place_detached(&Nonce::default(), WRAP_LABEL, &mut key, &tag)
        .ok()?;
    Some(key)
}

/// SHA-256 of a bearer credential: what the server stores and looks up.
pub fn credential_hash(credential: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(credential).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::PcrSelection;

    fn finish() -> FinishRequest {
        let _ = PcrSelection::sha256(1);
        FinishRequest {
            version: 1,
            session: [1; 16],
            attest: vec![2; 50],
            signature: vec![3; 70],
            pcr_values: vec![vec![4; 32]],
            proof: [0; 32],
            event_log: vec![5; 10],
        }
    }

    #[test]
    fn proof_verifies_only_with_the_same_secret_and_transcript() {
        let t = start_transcript(b"req", b"resp");
        let mut f = finish();
        f.proof = finish_proof(&[7; 32], &t, &f);
        assert!(verify_finish_proof(&[7; 32], &t, &f));
        assert!(!verify_finish_proof(&[8; 32], &t, &f));
        assert!(!verify_finish_proof(
            &[7; 32],
            &start_transcript(b"req", b"other"),
            &f
        ));
        f.pcr_values[0][0] ^= 1;
        assert!(!verify_finish_proof(&[7; 32], &t, &f));
    }

    #[test]
    fn wrapped_key_opens_only_for_its_session_secret_and_manifest() {
        let w = wrap_data_key(&[1; 32], &[2; 16], b"manifest", &[3; 32]);
        assert_ne!(&w[..32], &[3; 32][..], "the key travels encrypted");
        assert_eq!(
            unwrap_data_key(&[1; 32], &[2; 16], b"manifest", &w),
            Some([3; 32])
        );
        assert_eq!(unwrap_data_key(&[9; 32], &[2; 16], b"manifest", &w), None);
        assert_eq!(unwrap_data_key(&[1; 32], &[9; 16], b"manifest", &w), None);
        assert_eq!(unwrap_data_key(&[1; 32], &[2; 16], b"other", &w), None);
        let mut bad = w;
        bad[5] ^= 1;
        assert_eq!(unwrap_data_key(&[1; 32], &[2; 16], b"manifest", &bad), None);
        assert_eq!(
            unwrap_data_key(&[1; 32], &[2; 16], b"manifest", &w[..47]),
            None
        );
    }

    #[test]
    fn transcript_is_length_framed() {
        assert_ne!(start_transcript(b"ab", b"c"), start_transcript(b"a", b"bc"));
    }
}
