//! Bounds-checked reading of TPM 2.0 wire structures (big-endian, TPM2B = u16 size + bytes).
//!
//! Everything the verifier parses comes from the network, so every read checks the
//! remaining length and reports *what* was being read and *where* it stopped, instead of
//! indexing (which could panic). TPM 2.0 Library Part 1 §16 / Part 2 give the layouts.

use thiserror::Error;

/// Why a TPM structure could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The input ended inside `what`.
    #[error(
        "input truncated while reading {what} at offset {offset}: need {needed} bytes, {available} left"
    )]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// The bytes were read but do not form a valid or supported `what`.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

impl ParseError {
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        ParseError::Malformed {
            what,
            reason: reason.into(),
        }
    }
}

/// A cursor over a byte slice; all reads are checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let available = self.remaining();
        let end = self.pos.checked_add(n).filter(|_| n <= available);
        match end.and_then(|end| self.buf.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(ParseError::Truncated {
                what,
                offset: self.pos,
                needed: n,
                available,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ParseError> {
        let s = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A TPM2B: 16-bit big-endian size, then that many bytes.
    pub(crate) fn tpm2b(&mut self, what: &'static str) -> Result<&'a [u8], ParseError> {
        let n = self.u16(what)?;
        self.bytes(usize::from(n), what)
    }

    /// Fails unless the whole input was consumed: trailing bytes would be unsigned or
    /// unexplained data riding along with a structure.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), ParseError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(ParseError::malformed(
                what,
                format!("{n} trailing bytes after offset {}", self.pos),
            )),
        }
    }
}

/// Appends a TPM2B (u16 size + bytes). Callers pass at most a few hundred bytes.
pub(crate) fn put_tpm2b(out: &mut Vec<u8>, data: &[u8]) -> Result<(), ParseError> {
    let n = u16::try_from(data.len()).map_err(|_| {
        ParseError::malformed("TPM2B", format!("{} bytes exceed 65535", data.len()))
    })?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}

/// TPM_ALG_ID values used here (TPM 2.0 Library Part 2 §6.3).
pub(crate) mod alg {
    pub const RSA: u16 = 0x0001;
    pub const AES: u16 = 0x0006;
    pub const SHA256: u16 = 0x000B;
    pub const NULL: u16 = 0x0010;
    pub const RSASSA: u16 = 0x0014;
    pub const RSAPSS: u16 = 0x0016;
    pub const ECDSA: u16 = 0x0018;
    pub const ECDAA: u16 = 0x001A;
    pub const ECC: u16 = 0x0023;
    pub const CFB: u16 = 0x0043;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let mut r = Reader::new(&[0x00, 0x03, 0xaa, 0xbb]);
        let err = r.tpm2b("thing").expect_err("short");
        assert_eq!(
            err,
            ParseError::Truncated {
                what: "thing",
                offset: 2,
                needed: 3,
                available: 2
            }
        );
        let mut r = Reader::new(&[0x01]);
        assert!(r.u32("x").is_err());
        assert_eq!(r.u8("y"), Ok(1));
        assert!(r.finish("z").is_ok());
    }
}
