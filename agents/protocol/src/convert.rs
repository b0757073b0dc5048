//! Between the generated messages and veil-attest's types.

use veil_attest::tpm::{AkIdentity, CredentialChallenge};

use crate::pb::attestation as pb;

impl From<AkIdentity> for pb::TpmIdentity {
    fn from(id: AkIdentity) -> Self {
        pb::TpmIdentity {
            ek_public: id.ek_public,
            ek_cert: id.ek_cert,
            ak_public: id.ak_public,
        }
    }
}

impl From<pb::TpmIdentity> for AkIdentity {
    fn from(id: pb::TpmIdentity) -> Self {
        AkIdentity {
            ek_public: id.ek_public,
            ek_cert: id.ek_cert,
            ak_public: id.ak_public,
        }
    }
}

impl From<CredentialChallenge> for pb::ActivateRequest {
    fn from(c: CredentialChallenge) -> Self {
        pb::ActivateRequest {
            credential_blob: c.credential_blob,
            encrypted_secret: c.encrypted_secret,
        }
    }
}

impl From<pb::ActivateRequest> for CredentialChallenge {
    fn from(r: pb::ActivateRequest) -> Self {
        CredentialChallenge {
            credential_blob: r.credential_blob,
            encrypted_secret: r.encrypted_secret,
        }
    }
}
