//! Constant-time equality, for secrets, proofs, MACs and key commitments.
//!
//! A module of its own: the session derivations ([`crate::keys`]) and the
//! signed manifests and sealed streams ([`crate::manifest`],
//! [`crate::sealed`]) all compare secrets, and none of them should need
//! another of them for it.

use subtle::ConstantTimeEq;

/// Constant-time equality of secrets, proofs and MACs. Only the lengths
/// (which are public) are compared in variable time.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn equal_bytes_are_equal_and_any_difference_is_not() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(&[7; 32], &[7; 32]));
        let mut other = [7u8; 32];
        other[31] ^= 1;
        assert!(!ct_eq(&[7; 32], &other));
        assert!(!ct_eq(&[7; 32], &[7; 31]), "another length is never equal");
    }
}
