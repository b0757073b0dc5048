//! TPM credential activation over the plain side of a port, both ways round.
//!
//! A verifier trusts an attester's AK only after the attester's TPM has decrypted a
//! credential made for that AK and the EK that the verifier's TPM CA certified. The
//! agent port and the join port serve the attester's side ([`ActivationService`]);
//! [`activate_peer`] is the verifier's side.

use tonic::transport::Channel;
use veil_attest::tpm::{AkIdentity, TpmVerifier, TpmVerifyError, TrustedAk};

use crate::MAX_MESSAGE;
use crate::pb::attestation::activation_client::ActivationClient;
use crate::pb::attestation::{ActivateRequest, GetIdentityRequest};

/// Why a peer's AK is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("{peer} did not give its TPM identity: {message}")]
    Identity { peer: String, message: String },
    #[error("the TPM identity of {peer} is not trusted: {source}")]
    NotTrusted {
        peer: String,
        #[source]
        source: TpmVerifyError,
    },
    #[error("{peer} could not activate its AK: {message}")]
    Activate { peer: String, message: String },
    #[error("{peer}'s attestation key is not in the TPM its EK certificate names: {source}")]
    WrongAnswer {
        peer: String,
        #[source]
        source: TpmVerifyError,
    },
}

/// Activates the AK of the attester behind `channel` and returns it, trusted.
pub async fn activate_peer(
    channel: Channel,
    peer: &str,
    verifier: &TpmVerifier,
) -> Result<TrustedAk, ActivationError> {
    let mut activation = ActivationClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let identity: AkIdentity = activation
        .get_identity(GetIdentityRequest {})
        .await
        .map_err(|s| ActivationError::Identity {
            peer: peer.into(),
            message: s.message().into(),
        })?
        .into_inner()
        .into();
    let (challenge, pending) =
        verifier
            .challenge(&identity)
            .map_err(|source| ActivationError::NotTrusted {
                peer: peer.into(),
                source,
            })?;
    let secret = activation
        .activate(ActivateRequest::from(challenge))
        .await
        .map_err(|s| ActivationError::Activate {
            peer: peer.into(),
            message: s.message().into(),
        })?
        .into_inner()
        .secret;
    pending
        .finish(&secret)
        .map_err(|source| ActivationError::WrongAnswer {
            peer: peer.into(),
            source,
        })
}

#[cfg(feature = "tpm")]
pub use served::{ActivationService, SharedTpm, with_tpm};

#[cfg(feature = "tpm")]
mod served {
    use std::sync::Arc;

    use tonic::{Request, Response, Status};
    use veil_atls::AttesterIssuer;
    use veil_attest::tpm::TpmAttester;

    use crate::pb::attestation::activation_server::Activation;
    use crate::pb::attestation::{
        ActivateRequest, ActivateResponse, GetIdentityRequest, TpmIdentity,
    };

    /// A node's TPM, shared by every connection (one operation at a time).
    pub type SharedTpm = Arc<AttesterIssuer<TpmAttester>>;

    /// Runs `op` on the TPM from tokio's blocking pool: TPM commands take milliseconds
    /// to seconds and must not stall the connections being served meanwhile.
    pub async fn with_tpm<T: Send + 'static>(
        tpm: &SharedTpm,
        op: impl FnOnce(&mut TpmAttester) -> Result<T, String> + Send + 'static,
    ) -> Result<T, Status> {
        let tpm = tpm.clone();
        tokio::task::spawn_blocking(move || {
            let mut attester = tpm.0.lock().map_err(|_| "TPM lock poisoned".to_owned())?;
            op(&mut attester)
        })
        .await
        .map_err(|e| Status::internal(format!("TPM task failed: {e}")))?
        .map_err(Status::failed_precondition)
    }

    /// The attester's side: the TPM's identity, and answers to credential challenges.
    pub struct ActivationService {
        pub tpm: SharedTpm,
    }

    #[tonic::async_trait]
    impl Activation for ActivationService {
        async fn get_identity(
            &self,
            _request: Request<GetIdentityRequest>,
        ) -> Result<Response<TpmIdentity>, Status> {
            let identity = with_tpm(&self.tpm, |att| Ok(att.identity().clone())).await?;
            Ok(Response::new(identity.into()))
        }

        async fn activate(
            &self,
            request: Request<ActivateRequest>,
        ) -> Result<Response<ActivateResponse>, Status> {
            let challenge = request.into_inner().into();
            let secret = with_tpm(&self.tpm, move |att| {
                att.activate(&challenge)
                    .map_err(|e| format!("credential activation failed: {e}"))
            })
            .await?;
            tracing::info!("activated the AK for a verifier");
            Ok(Response::new(ActivateResponse {
                secret: secret.to_vec(),
            }))
        }
    }
}
