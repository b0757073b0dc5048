//! How much the join service takes on: joins in flight, how long an activation and an
//! activated AK stay good, and a per-peer rate (governor's keyed GCRA limiter) so one
//! address cannot keep the TPM CA checks and key derivations busy for everyone.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::Status;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Challenges waiting for their answer, and AKs trusted at once.
    pub max_in_flight: usize,
    /// Challenges waiting at once for one EK. An EK certificate is public (any node's
    /// can be replayed), so a challenge slot is keyed by the EK: a replayer fills that
    /// EK's few slots, not everyone's, and the newest challenge replaces its oldest.
    pub per_ek_in_flight: usize,
    /// How long a challenge may wait for its answer.
    pub activation_ttl: Duration,
    /// How long an activated AK may be used to join.
    pub trusted_ak_ttl: Duration,
    /// Calls per peer address per minute (Challenge, Join, Rejoin each count).
    pub per_peer_per_minute: NonZeroU32,
    /// Calls a peer may make at once before the rate applies.
    pub per_peer_burst: NonZeroU32,
    /// What the port takes on before any peer is verified (connections per address,
    /// handshakes in flight).
    pub connections: veil_protocol::server::ConnectionLimits,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_in_flight: 256,
            per_ek_in_flight: 2,
            activation_ttl: Duration::from_secs(60),
            trusted_ak_ttl: Duration::from_secs(120),
            per_peer_per_minute: NonZeroU32::new(60).unwrap_or(NonZeroU32::MIN),
            per_peer_burst: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            connections: Default::default(),
        }
    }
}

/// Per-address rate limiting; calls without an address (never over TCP) share one.
pub struct PeerLimiter {
    limiter: DefaultKeyedRateLimiter<Option<IpAddr>>,
}

impl PeerLimiter {
    pub fn new(limits: &Limits) -> PeerLimiter {
        let quota =
            Quota::per_minute(limits.per_peer_per_minute).allow_burst(limits.per_peer_burst);
        PeerLimiter {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// Admits one call from `peer`, or says when to come back.
    pub fn admit(&self, peer: Option<IpAddr>, call: &str) -> Result<(), Status> {
        self.limiter.check_key(&peer).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            tracing::warn!(?peer, call, "rate limited");
            Status::resource_exhausted(format!(
                "{call}: too many calls from {}; try again in {} ms",
                peer.map_or_else(|| "this peer".to_owned(), |p| p.to_string()),
                wait.as_millis()
            ))
        })?;
        // Addresses seen once must not be kept forever.
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        Ok(())
    }
}
