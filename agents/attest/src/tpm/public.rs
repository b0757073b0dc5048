//! TPM2B_PUBLIC parsing (TPM 2.0 Library Part 2 §12.2) and object names (Part 1 §16).
//!
//! Only the two shapes Veil uses are accepted: an RSA key (the EK) and an ECC key (the
//! AK). Parsing by hand keeps the verifier free of libtss2; the name is computed over the
//! exact bytes received, which is what the TPM hashed when it created the object.

use sha2::{Digest, Sha256};

use super::wire::{ParseError, Reader, alg};

/// TPMA_OBJECT bits (Part 2 §8.3).
pub mod attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN_ENCRYPT: u32 = 1 << 18;
}

/// TPM_ECC_NIST_P256 (Part 2 §6.4).
pub const ECC_NIST_P256: u16 = 0x0003;

/// A symmetric definition of a storage key (TPMT_SYM_DEF_OBJECT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    pub algorithm: u16,
    pub key_bits: u16,
    pub mode: u16,
}

/// The key-type specific part of a public area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        symmetric: Option<SymDef>,
        /// Scheme algorithm and its hash, if not TPM_ALG_NULL.
        scheme: Option<(u16, u16)>,
        key_bits: u16,
        /// 0 means the default 65537 (Part 2 §12.2.3.5).
        exponent: u32,
        modulus: Vec<u8>,
    },
    Ecc {
        symmetric: Option<SymDef>,
        scheme: Option<(u16, u16)>,
        curve: u16,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// A parsed TPMT_PUBLIC together with the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    /// The marshalled TPMT_PUBLIC (without the TPM2B size), as hashed into the name.
    pub tpmt_bytes: Vec<u8>,
    pub name_alg: u16,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub key: PublicKey,
}

impl TpmPublic {
    /// Parses a marshalled TPM2B_PUBLIC; the whole input must be consumed.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let inner = r.tpm2b("TPM2B_PUBLIC")?;
        r.finish("TPM2B_PUBLIC")?;
        Self::from_tpmt(inner)
    }

    /// Parses a marshalled TPMT_PUBLIC; the whole input must be consumed.
    pub fn from_tpmt(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let kind = r.u16("TPMT_PUBLIC.type")?;
        let name_alg = r.u16("TPMT_PUBLIC.nameAlg")?;
        let attributes = r.u32("TPMT_PUBLIC.objectAttributes")?;
        let auth_policy = r.tpm2b("TPMT_PUBLIC.authPolicy")?.to_vec();
        let key = match kind {
            alg::RSA => {
                let symmetric = sym_def(&mut r)?;
                let scheme = read_scheme(&mut r, "TPMT_RSA_SCHEME")?;
                let key_bits = r.u16("TPMS_RSA_PARMS.keyBits")?;
                let exponent = r.u32("TPMS_RSA_PARMS.exponent")?;
                let modulus = r.tpm2b("TPM2B_PUBLIC_KEY_RSA")?.to_vec();
                PublicKey::Rsa {
                    symmetric,
                    scheme,
                    key_bits,
                    exponent,
                    modulus,
                }
            }
            alg::ECC => {
                let symmetric = sym_def(&mut r)?;
                let scheme = read_scheme(&mut r, "TPMT_ECC_SCHEME")?;
                if matches!(scheme, Some((alg::ECDAA, _))) {
                    // ECDAA carries an extra count field; Veil never uses ECDAA keys.
                    return Err(ParseError::malformed(
                        "TPMT_ECC_SCHEME",
                        "ECDAA keys are not supported",
                    ));
                }
                let curve = r.u16("TPMS_ECC_PARMS.curveID")?;
                let _kdf = read_scheme(&mut r, "TPMT_KDF_SCHEME")?;
                let x = r.tpm2b("TPMS_ECC_POINT.x")?.to_vec();
                let y = r.tpm2b("TPMS_ECC_POINT.y")?.to_vec();
                PublicKey::Ecc {
                    symmetric,
                    scheme,
                    curve,
                    x,
                    y,
                }
            }
            other => {
                return Err(ParseError::malformed(
                    "TPMT_PUBLIC.type",
                    format!("algorithm {other:#06x} is neither RSA nor ECC"),
                ));
            }
        };
        r.finish("TPMT_PUBLIC")?;
        Ok(TpmPublic {
            tpmt_bytes: bytes.to_vec(),
            name_alg,
            attributes,
            auth_policy,
            key,
        })
    }

    /// The object's name: nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1 §16).
    pub fn name(&self) -> Result<Vec<u8>, ParseError> {
        if self.name_alg != alg::SHA256 {
            return Err(ParseError::malformed(
                "TPMT_PUBLIC.nameAlg",
                format!("{:#06x} is not SHA-256", self.name_alg),
            ));
        }
        let mut name = alg::SHA256.to_be_bytes().to_vec();
        name.extend_from_slice(&Sha256::digest(&self.tpmt_bytes));
        Ok(name)
    }

    pub fn has(&self, bits: u32) -> bool {
        self.attributes & bits == bits
    }
}

fn sym_def(r: &mut Reader<'_>) -> Result<Option<SymDef>, ParseError> {
    let algorithm = r.u16("TPMT_SYM_DEF_OBJECT.algorithm")?;
    if algorithm == alg::NULL {
        return Ok(None);
    }
    Ok(Some(SymDef {
        algorithm,
        key_bits: r.u16("TPMT_SYM_DEF_OBJECT.keyBits")?,
        mode: r.u16("TPMT_SYM_DEF_OBJECT.mode")?,
    }))
}

/// A scheme: algorithm, then (unless TPM_ALG_NULL) its hash algorithm.
fn read_scheme(r: &mut Reader<'_>, what: &'static str) -> Result<Option<(u16, u16)>, ParseError> {
    let scheme = r.u16(what)?;
    if scheme == alg::NULL {
        return Ok(None);
    }
    Ok(Some((scheme, r.u16(what)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ECC P-256 ECDSA-SHA256 restricted signing key, as tss-esapi's AK template makes it.
    fn ak_bytes() -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&alg::ECC.to_be_bytes());
        t.extend_from_slice(&alg::SHA256.to_be_bytes());
        t.extend_from_slice(&0x0005_0072u32.to_be_bytes());
        t.extend_from_slice(&[0, 0]); // authPolicy
        t.extend_from_slice(&alg::NULL.to_be_bytes()); // symmetric
        t.extend_from_slice(&alg::ECDSA.to_be_bytes());
        t.extend_from_slice(&alg::SHA256.to_be_bytes());
        t.extend_from_slice(&ECC_NIST_P256.to_be_bytes());
        t.extend_from_slice(&alg::NULL.to_be_bytes()); // kdf
        for v in [1u8, 2] {
            t.extend_from_slice(&[0, 32]);
            t.extend_from_slice(&[v; 32]);
        }
        t
    }

    #[test]
    fn parses_ecc_key_and_names_it() {
        let tpmt = ak_bytes();
        let p = TpmPublic::from_tpmt(&tpmt).expect("parse");
        assert!(p.has(attr::RESTRICTED | attr::SIGN_ENCRYPT | attr::FIXED_TPM));
        assert!(matches!(
            p.key,
            PublicKey::Ecc {
                curve: ECC_NIST_P256,
                scheme: Some((alg::ECDSA, alg::SHA256)),
                ..
            }
        ));
        let name = p.name().expect("name");
        assert_eq!(name.len(), 34);
        assert_eq!(&name[..2], &[0x00, 0x0b]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let tpmt = ak_bytes();
        for cut in 0..tpmt.len() {
            assert!(TpmPublic::from_tpmt(&tpmt[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = tpmt.clone();
        long.push(0);
        assert!(TpmPublic::from_tpmt(&long).is_err());
    }
}
