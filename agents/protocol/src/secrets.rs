//! Messages that carry secrets wipe them when dropped: the master secret and salt
//! (Init, Recover), the init secret, disk keys and the measurement secret (join
//! tickets), bootstrap tokens, and the admin kubeconfig (it holds a client key).
//!
//! What this reaches is every copy Veil's code holds in a message. The buffers tonic
//! encodes into and decodes from are its own and are not wiped; they live only for
//! the one call. Code that needs a secret out of a message takes it with
//! `std::mem::take` into a zeroizing type.

use zeroize::Zeroize;

use crate::pb::bootstrap::{BootstrapResponse, InitRequest, RecoverRequest};
use crate::pb::join::{JoinTicket, KubernetesJoin, RejoinTicket};

/// Wipes the secrets a message carries (also done when it is dropped).
pub trait Wipe {
    fn wipe(&mut self);
}

macro_rules! wipe_on_drop {
    ($ty:ty, |$m:ident| $body:block) => {
        impl Wipe for $ty {
            fn wipe(&mut self) {
                let $m = self;
                $body
            }
        }
        impl Drop for $ty {
            fn drop(&mut self) {
                self.wipe();
            }
        }
    };
}

wipe_on_drop!(InitRequest, |m| {
    m.master_secret.zeroize();
    m.salt.zeroize();
    m.init_secret.zeroize();
});
wipe_on_drop!(RecoverRequest, |m| {
    m.master_secret.zeroize();
    m.salt.zeroize();
});
wipe_on_drop!(BootstrapResponse, |m| {
    m.admin_kubeconfig.zeroize();
});
wipe_on_drop!(KubernetesJoin, |m| {
    m.bootstrap_token.zeroize();
});
wipe_on_drop!(JoinTicket, |m| {
    m.disk_key.zeroize();
    m.measurement_secret.zeroize();
});
wipe_on_drop!(RejoinTicket, |m| {
    m.disk_key.zeroize();
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiping_leaves_no_secret_in_a_message() {
        // (Struct-update syntax moves out of a Drop type: fields are set one by one.)
        let mut init = InitRequest::default();
        init.master_secret = vec![1; 32];
        init.salt = vec![2; 32];
        init.init_secret = vec![3; 32];
        init.reference_measurements = "kept".into();
        init.wipe();
        assert!(init.master_secret.is_empty() && init.salt.is_empty());
        assert!(init.init_secret.is_empty());
        assert_eq!(init.reference_measurements, "kept", "only secrets go");

        let mut ticket = JoinTicket::default();
        ticket.disk_key = vec![4; 64];
        ticket.measurement_secret = vec![5; 32];
        ticket.cluster_id = vec![6; 32];
        ticket.wipe();
        assert!(ticket.disk_key.is_empty() && ticket.measurement_secret.is_empty());
        assert_eq!(ticket.cluster_id, vec![6; 32]);

        let mut token = KubernetesJoin::default();
        token.bootstrap_token = "abcdef.0123456789abcdef".into();
        token.wipe();
        assert!(token.bootstrap_token.is_empty());
        let mut rejoin = RejoinTicket::default();
        rejoin.disk_key = vec![7; 64];
        rejoin.wipe();
        assert!(rejoin.disk_key.is_empty());
        let mut response = BootstrapResponse::default();
        response.admin_kubeconfig = b"client-key-data: x".to_vec();
        response.wipe();
        assert!(response.admin_kubeconfig.is_empty());
        let mut recover = RecoverRequest::default();
        recover.master_secret = vec![1; 32];
        recover.salt = vec![2; 32];
        recover.wipe();
        assert!(recover.master_secret.is_empty() && recover.salt.is_empty());
    }
}
