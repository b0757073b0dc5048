//! What Veil's agents and the `veil` CLI say to each other on a node's agent port, and
//! how it is framed: a 4-byte big-endian length, then one JSON message, at most
//! [`MAX_FRAME`] bytes (a peer cannot make us allocate more).
//!
//! The attestation endpoint (see [`Request`]): the verifier asks for the node's TPM
//! identity (EK certificate, EK and AK public areas), activates the AK against the
//! certified EK (only the TPM holding that EK can answer, so this needs no secure
//! channel), then asks to attest: the node answers [`Response::Attesting`] and the same
//! connection turns into one-way aTLS, whose server certificate carries a quote bound
//! to the verifier's nonce and the TLS key.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use thiserror::Error;
use veil_attest::tpm::{AkIdentity, CredentialChallenge};

/// The node's agent port (attestation; later Init/Join), TCP.
pub const AGENT_PORT: u16 = 7443;

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The node's TPM identity, for credential activation.
    Identity,
    /// Answer this MakeCredential challenge with the TPM (ActivateCredential).
    Activate { challenge: CredentialChallenge },
    /// Switch this connection to one-way aTLS with the node's evidence.
    Attest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Response {
    Identity {
        identity: AkIdentity,
    },
    /// The activated secret, hex.
    Activated {
        secret: String,
    },
    /// The next bytes on the connection are the aTLS handshake.
    Attesting,
    /// The request failed; nothing changed on the node.
    Error {
        message: String,
    },
}

#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("connection failed while {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("peer sent a {len}-byte frame; the limit is {MAX_FRAME}")]
    TooLarge { len: usize },
    #[error("peer sent a malformed message: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// Writes one framed message.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtocolError> {
    let body = serde_json::to_vec(msg).map_err(ProtocolError::Malformed)?;
    if body.len() > MAX_FRAME {
        return Err(ProtocolError::TooLarge { len: body.len() });
    }
    let io = |source| ProtocolError::Io {
        what: "sending",
        source,
    };
    let len = u32::try_from(body.len()).map_err(|_| ProtocolError::TooLarge { len: body.len() })?;
    w.write_all(&len.to_be_bytes()).map_err(io)?;
    w.write_all(&body).map_err(io)?;
    w.flush().map_err(io)
}

/// Reads one framed message.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, ProtocolError> {
    let io = |source| ProtocolError::Io {
        what: "receiving",
        source,
    };
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge { len });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(io)?;
    serde_json::from_slice(&body).map_err(ProtocolError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Attest).expect("write");
        write_frame(&mut buf, &Request::Identity).expect("write");
        let mut r = buf.as_slice();
        assert!(matches!(read_frame(&mut r), Ok(Request::Attest)));
        assert!(matches!(read_frame(&mut r), Ok(Request::Identity)));
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff, b'{'];
        let err = read_frame::<_, Request>(&mut r).expect_err("too large");
        assert!(matches!(err, ProtocolError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let mut r: &[u8] = &[0, 0, 0, 3, b'x', b'y', b'z'];
        assert!(matches!(
            read_frame::<_, Request>(&mut r),
            Err(ProtocolError::Malformed(_))
        ));
        let mut r: &[u8] = &[0, 0, 0, 9, b'{'];
        assert!(matches!(
            read_frame::<_, Request>(&mut r),
            Err(ProtocolError::Io { .. })
        ));
        let mut r: &[u8] = br#"{"op":"launch-missiles"}"#;
        let framed: Vec<u8> = [&(r.len() as u32).to_be_bytes()[..], r].concat();
        r = &framed;
        assert!(matches!(
            read_frame::<_, Request>(&mut r),
            Err(ProtocolError::Malformed(_))
        ));
    }
}
