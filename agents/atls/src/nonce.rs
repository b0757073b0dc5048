//! How the nonces travel inside the TLS 1.3 handshake, so each side can bind its
//! evidence to the other's nonce before it sends its certificate.
//!
//! - client → server: an extra ALPN entry `veil-nonce:` + 32 bytes (ALPN entries are
//!   opaque byte strings of up to 255 bytes; the server reads the client's list before
//!   choosing its certificate and selects only [`crate::ALPN`]).
//! - server → client: a certificate-authority hint `veil-nonce:` + 32 bytes in the
//!   CertificateRequest (opaque to TLS; aTLS uses no CAs, so the list has no other use).

use crate::binding::NONCE_LEN;

const PREFIX: &[u8] = b"veil-nonce:";

/// The wire form of a nonce.
pub fn encode(nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    [PREFIX, nonce.as_slice()].concat()
}

/// The nonce in `entries`, if exactly one entry carries one.
pub fn find<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Option<[u8; NONCE_LEN]> {
    let mut found = entries
        .into_iter()
        .filter_map(|e| e.strip_prefix(PREFIX))
        .filter_map(|n| <[u8; NONCE_LEN]>::try_from(n).ok());
    let first = found.next()?;
    // Two nonces would let a peer pick which one its evidence answers: refuse.
    found.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_among_other_entries() {
        let n = [7u8; 32];
        let enc = encode(&n);
        let entries: Vec<&[u8]> = vec![b"h2", &enc, b"veil-atls/1"];
        assert_eq!(find(entries), Some(n));
    }

    #[test]
    fn wrong_length_or_duplicate_is_no_nonce() {
        let short = [PREFIX, &[1u8; 31][..]].concat();
        assert_eq!(find([short.as_slice()]), None);
        let a = encode(&[1; 32]);
        let b = encode(&[2; 32]);
        assert_eq!(find([a.as_slice(), b.as_slice()]), None);
        assert_eq!(find([b"h2".as_slice()]), None);
    }
}
