//! The join service and the bootstrapper's joiner, both the real code, each on its own
//! real swtpm: who gets a key, who is refused and why, and what a restart of the
//! service in the middle of a join does.

#[path = "../../attest/tests/cloud_support/mod.rs"]
mod cloud_support;
#[path = "../../attest/tests/support/mod.rs"]
mod support;
mod support_kubernetes;

use std::net::TcpListener;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use support::{LocalCa, Swtpm};
use veil_atls::AttesterIssuer;
use veil_attest::gcp::GcpVerifier;
use veil_attest::gcp::attester::GcpAttester;
use veil_attest::tpm::{TpmAttester, TpmAttesterConfig};
use veil_bootstrapper::bootstrap::Admission;
use veil_bootstrapper::join::{JoinConfig, Ticket, fetch_ticket};
use veil_joinservice::{Cluster, Credentials, Limits};
use veil_keys::MasterSecret;
use veil_protocol::activation::SharedTpm;
use veil_protocol::pb::attestation::TpmIdentity;
use veil_protocol::pb::join::Role;
use veil_protocol::pb::join::join_activation_client::JoinActivationClient;

const UUID: &str = "0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9";
/// The control-plane node's own state partition (the service's node).
const CP_UUID: &str = "cccccccc-4e5f-4061-8293-a4b5c6d7e8f9";

/// The control-plane node's WireGuard key in the test service's roster.
fn control_plane_key() -> veil_mesh::key::PrivateKey {
    veil_mesh::key::PrivateKey::from_bytes([9u8; 32])
}

/// Reference measurements (as `veil measure` writes them) that a fresh swtpm matches:
/// each of `pcrs` expected zero.
fn reference(pcrs: &[u32]) -> measured_boot::reference::ReferenceMeasurements {
    let zero = "00".repeat(32);
    let pcrs: Vec<String> = pcrs
        .iter()
        .map(|i| format!(r#""{i}":{{"expected":"{zero}","warnOnly":false}}"#))
        .collect();
    let json = format!(
        r#"{{"pcrs":{{{}}},"image":{{"ukiSha256":"{zero}","roothash":"{zero}","osRelease":{{}},"kernelVersion":"test"}}}}"#,
        pcrs.join(",")
    );
    measured_boot::reference::ReferenceMeasurements::from_json(&json).expect("reference")
}

/// How the test service is set up.
struct Setup {
    limits: Limits,
    port: Option<u16>,
    /// PCR 15 set, as on a node that joined a cluster.
    member: bool,
    /// PCRs its reference expects zero.
    reference: &'static [u32],
    /// The cluster's state disks are integrity-protected.
    integrity: bool,
    /// The cluster's platform policy.
    platform: veil_attest::PlatformPolicy,
    /// The control plane's test double.
    kubernetes: Arc<support_kubernetes::TestControlPlane>,
    /// Extends of the service's PCRs besides PCR 15 (another boot than the joiner's).
    extends: &'static [(u32, [u8; 32])],
    /// On a GCE-shaped CVM: its vTPM is provisioned by the TEST DOUBLE CA in this
    /// directory (`cloud_support`), the join port presents that vTPM's evidence, and
    /// its GCE verifier trusts that CA instead of Google's root.
    gcp_ca: Option<std::path::PathBuf>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            limits: Limits::default(),
            port: None,
            member: true,
            reference: &[4, 9, 11],
            integrity: false,
            platform: Default::default(),
            kubernetes: Default::default(),
            extends: &[],
            gcp_ca: None,
        }
    }
}

fn open(tpm: &Swtpm) -> SharedTpm {
    let mut config = TpmAttesterConfig::with_tcti(tpm.tcti());
    config.event_log = None;
    config.systemd_log = None;
    Arc::new(AttesterIssuer(Mutex::new(
        TpmAttester::open(&config).expect("open swtpm"),
    )))
}

fn extend(tpm: &SharedTpm, pcr: u32, with: &[u8; 32]) {
    tpm.0
        .lock()
        .expect("tpm lock")
        .extend_pcr(pcr, with)
        .expect("extend");
}

/// A join service on its own runtime (dropping it stops everything, as a restart
/// of the unit would), on its own swtpm with PCR 15 set like a member's.
struct Service {
    addr: String,
    runtime: Option<tokio::runtime::Runtime>,
    _tpm: Swtpm,
    /// Its GCE-shaped vTPM, when the join port presents that.
    _vtpm: Option<Swtpm>,
    _roster: tempfile::TempDir,
}

impl Service {
    fn start(master: &MasterSecret, setup: Setup) -> Service {
        let ca = LocalCa::shared();
        let swtpm = Swtpm::start(ca);
        let tpm = open(&swtpm);
        let roster_dir = tempfile::tempdir().expect("roster dir");
        if setup.member {
            extend(&tpm, 15, &master.cluster_id().0);
        }
        for (pcr, with) in setup.extends {
            extend(&tpm, *pcr, with);
        }
        let limits = setup.limits;
        let listener = TcpListener::bind(("127.0.0.1", setup.port.unwrap_or(0))).expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let settings = veil_protocol::paths::ClusterSettings {
            state_disk_integrity: setup.integrity,
            ..Default::default()
        };
        let mesh = veil_joinservice::mesh_plan(&settings).expect("mesh plan");
        let roster =
            veil_joinservice::roster::Roster::load(roster_dir.path(), vec!["node0".into()], mesh)
                .expect("roster")
                .reserve_partition(CP_UUID);
        let own = roster
            .own("node0", CP_UUID, &control_plane_key().public())
            .expect("the control-plane node's entry");
        let own_mesh = veil_joinservice::OwnMesh {
            path: roster_dir.path().join(veil_protocol::paths::MESH),
            key: control_plane_key().public(),
            address: own.mesh_ip.expect("its mesh address"),
        };
        let cluster = Cluster {
            master: MasterSecret::from_parts(master.secret(), master.salt()).expect("copy"),
            reference: reference(setup.reference),
            platform: setup.platform,
            settings,
            mesh,
            pods: "10.244.0.0/16".parse().expect("pods"),
            roster: Arc::new(roster),
            own_mesh: Some(own_mesh),
        };
        let kubernetes = setup.kubernetes.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut verifier = cluster
            .verifier(ca.trust())
            .expect("the cluster's verifier");
        let mut issuer: Arc<dyn veil_atls::EvidenceIssuer> = tpm.clone();
        let mut vtpm = None;
        if let Some(dir) = &setup.gcp_ca {
            let (gce, root) = gce_vtpm(dir, setup.member.then(|| master.cluster_id()));
            verifier = verifier.with_gcp(GcpVerifier::trusting(&root).expect("test CA"));
            issuer = gce_evidence(&gce);
            vtpm = Some(gce);
        }
        let credentials = Credentials {
            issuer,
            tpm,
            verifier,
            collateral: None,
        };
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ =
                veil_joinservice::serve(listener, credentials, cluster, limits, kubernetes).await;
        });
        Service {
            addr,
            runtime: Some(runtime),
            _tpm: swtpm,
            _vtpm: vtpm,
            _roster: roster_dir,
        }
    }

    /// The control-plane node's mesh file, as the service keeps it.
    fn own_mesh_file(&self) -> std::path::PathBuf {
        self._roster.path().join(veil_protocol::paths::MESH)
    }

    fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running join service and a joiner's TPM.
struct Fixture {
    master: MasterSecret,
    service: Service,
    joiner: SharedTpm,
    _joiner_tpm: Swtpm,
}

fn fixture(setup: Setup) -> Fixture {
    let master = MasterSecret::generate();
    let service = Service::start(&master, setup);
    let joiner_tpm = Swtpm::start(LocalCa::shared());
    Fixture {
        joiner: open(&joiner_tpm),
        master,
        service,
        _joiner_tpm: joiner_tpm,
    }
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(service: &Service, ca: &LocalCa) -> JoinConfig {
    JoinConfig {
        endpoint: service.addr.clone(),
        trust: ca.trust(),
        role: Role::Worker,
        cluster_id: None,
        service_hardware: None,
        own_td: None,
        cloud_evidence: None,
        gcp: None,
    }
}

/// One attempt to join `service` by a node launched to join `cluster`.
fn join_cluster(
    service: &Service,
    joiner: &SharedTpm,
    cluster: veil_keys::ClusterId,
) -> anyhow::Result<Ticket> {
    let wireguard = x25519_dalek::StaticSecret::from([7u8; 32]);
    client_runtime().block_on(fetch_ticket(
        joiner,
        &JoinConfig {
            cluster_id: Some(cluster),
            ..config(service, LocalCa::shared())
        },
        Admission::Join,
        UUID,
        &wireguard,
        &veil_kube::NodeName::new("node1").expect("name"),
    ))
}

fn ticket(service: &Service, joiner: &SharedTpm, how: Admission) -> anyhow::Result<Ticket> {
    ticket_named(service, joiner, how, "node1")
}

fn ticket_named(
    service: &Service,
    joiner: &SharedTpm,
    how: Admission,
    name: &str,
) -> anyhow::Result<Ticket> {
    let wireguard = x25519_dalek::StaticSecret::from([7u8; 32]);
    client_runtime().block_on(fetch_ticket(
        joiner,
        &config(service, LocalCa::shared()),
        how,
        UUID,
        &wireguard,
        &veil_kube::NodeName::new(name).expect("name"),
    ))
}

#[test]
fn a_matching_node_joins_then_rejoins_with_its_disk_key_only() {
    let f = fixture(Setup::default());
    let (master, service, joiner) = (&f.master, &f.service, &f.joiner);

    let t = ticket(service, joiner, Admission::Join).expect("join");
    let expected = master.disk_key(UUID).expect("disk key");
    assert_eq!(t.disk_key.as_slice(), expected.as_slice());
    assert_eq!(t.disk_key.len(), 64);
    assert_eq!(t.cluster_id, Some(master.cluster_id()));

    assert_eq!(t.integrity, veil_disk::Integrity::None);

    let t = ticket(service, joiner, Admission::Rejoin).expect("rejoin");
    assert_eq!(t.disk_key.as_slice(), expected.as_slice());
    assert_eq!(
        t.cluster_id, None,
        "Rejoin gives the disk key and nothing else"
    );
}

/// A vTPM provisioned as GCE provisions one, certified by the TEST DOUBLE CA in `dir`
/// (`cloud_support`), with PCR 15 extended by `member`'s id; and that CA (PEM).
fn gce_vtpm(dir: &std::path::Path, member: Option<veil_keys::ClusterId>) -> (Swtpm, Vec<u8>) {
    let vtpm = Swtpm::start(LocalCa::shared());
    let root = cloud_support::gce_provisioning_test_double(&vtpm.tcti(), dir);
    if let Some(cluster) = member {
        extend(&open(&vtpm), 15, &cluster.0);
    }
    (vtpm, root)
}

/// What a GCE-shaped node presents: its certified AK's quote of PCRs 0 to 15. (swtpm
/// serves one connection at a time: this holds the vTPM's.)
fn gce_evidence(vtpm: &Swtpm) -> Arc<dyn veil_atls::EvidenceIssuer> {
    let attester = GcpAttester::open(&vtpm.tcti(), (0..16).collect(), Vec::new(), None)
        .expect("the certified AK");
    Arc::new(AttesterIssuer(Mutex::new(attester)))
}

/// A service and a joiner, both on GCE-shaped CVMs whose vTPMs one TEST DOUBLE CA
/// certifies (it plays Google; both sides trust it in place of the pinned root). The
/// returned config presents the joiner's cloud evidence; the vTPM and the CA's files
/// go with it. The joiner's own PCRs (which it compares with the service's) are read
/// from the fixture's fresh swtpm, which holds what the fresh vTPM does.
fn cloud_fixture(limits: Limits) -> (Fixture, JoinConfig, Swtpm, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fixture(Setup {
        platform: veil_attest::PlatformPolicy::from_json("test policy", r#"{"gcp": {}}"#)
            .expect("policy"),
        gcp_ca: Some(dir.path().to_owned()),
        limits,
        ..Setup::default()
    });
    let (vtpm, root) = gce_vtpm(dir.path(), None);
    let cloud = cloud_joiner(&f.service, &vtpm, &root);
    (f, cloud, vtpm, dir)
}

/// A joiner that presents `vtpm`'s GCE-shaped evidence and trusts `root` for Google.
fn cloud_joiner(service: &Service, vtpm: &Swtpm, root: &[u8]) -> JoinConfig {
    JoinConfig {
        cloud_evidence: Some(gce_evidence(vtpm)),
        gcp: Some(GcpVerifier::trusting(root).expect("test CA")),
        ..config(service, LocalCa::shared())
    }
}

fn fetch(f: &Fixture, config: &JoinConfig, how: Admission) -> anyhow::Result<Ticket> {
    let wireguard = x25519_dalek::StaticSecret::from([7u8; 32]);
    let name = veil_kube::NodeName::new("node1").expect("name");
    client_runtime().block_on(fetch_ticket(
        &f.joiner, config, how, UUID, &wireguard, &name,
    ))
}

#[test]
fn a_cloud_joiner_is_admitted_by_its_certified_ak_without_activation_and_rejoins_by_it() {
    // No activation can start: a joiner that tried would be told the service is busy.
    let (f, cloud, _vtpm, _dir) = cloud_fixture(Limits {
        max_in_flight: 0,
        ..Limits::default()
    });
    let t = fetch(&f, &cloud, Admission::Join).expect("a cloud joiner");
    let expected = f.master.disk_key(UUID).expect("disk key");
    assert_eq!(t.disk_key.as_slice(), expected.as_slice());
    assert_eq!(t.cluster_id, Some(f.master.cluster_id()));
    let t = fetch(&f, &cloud, Admission::Rejoin).expect("the same VM rejoins");
    assert_eq!(t.disk_key.as_slice(), expected.as_slice());

    // Whereas the fixture's TPM, certified by the image's CA, must activate its AK
    // before it can speak at all.
    let e = fetch(&f, &config(&f.service, LocalCa::shared()), Admission::Join)
        .expect_err("a TPM joiner at a service with no activation slots");
    let text = format!("{e:#}");
    assert!(text.contains("too many joins in flight"), "{text}");
}

#[test]
fn a_cloud_members_partition_goes_to_no_other_machine() {
    let (f, cloud, _vtpm, dir) = cloud_fixture(Limits::default());
    fetch(&f, &cloud, Admission::Join).expect("a cloud joiner");
    // Another VM of the same cloud passes every check, but its vTPM's AK is its own.
    let (other_vtpm, root) = gce_vtpm(dir.path(), None);
    let other = cloud_joiner(&f.service, &other_vtpm, &root);
    let e = fetch(&f, &other, Admission::Rejoin)
        .expect_err("another VM asks for the cloud member's partition");
    let text = format!("{e:#}");
    assert!(text.contains("refused Rejoin"), "{text}");
    assert!(text.contains("not to this node's TPM"), "{text}");

    // A joiner that knows only TPM quotes cannot check a cloud's join service, and
    // says why.
    let e = fetch(&f, &config(&f.service, LocalCa::shared()), Admission::Join)
        .expect_err("a TPM-only joiner");
    let text = format!("{e:#}");
    assert!(text.contains("it is gcp-vtpm evidence"), "{text}");
}

#[test]
fn a_node_that_differs_from_the_reference_gets_nothing() {
    // Another kernel command line, say: PCR 11 is not what the reference says. (The
    // service runs it too, or the joiner would stop first: see below.)
    let f = fixture(Setup {
        extends: &[(11, [0x11; 32])],
        ..Setup::default()
    });
    let (service, joiner) = (&f.service, &f.joiner);
    extend(joiner, 11, &[0x11; 32]);
    let e = ticket(service, joiner, Admission::Join).expect_err("tampered joiner");
    let text = format!("{e:#}");
    assert!(text.contains("refused Join"), "{text}");
    assert!(text.contains("refused our evidence"), "{text}");
}

#[test]
fn a_node_that_already_joined_is_refused() {
    let f = fixture(Setup::default());
    let (service, joiner) = (&f.service, &f.joiner);
    extend(joiner, 15, &[0x15; 32]);
    let e = ticket(service, joiner, Admission::Join).expect_err("joined already");
    // The alert (AccessDenied) or, when it loses the race with the close, the close.
    assert!(format!("{e:#}").contains("refused our evidence"), "{e:#}");
}

#[test]
fn a_tpm_from_another_ca_is_refused_at_its_challenge() {
    let master = MasterSecret::generate();
    let service = Service::start(&master, Setup::default());
    let other_ca = LocalCa::new();
    let joiner_tpm = Swtpm::start(&other_ca);
    let joiner = open(&joiner_tpm);
    let e = ticket(&service, &joiner, Admission::Join).expect_err("foreign TPM");
    let text = format!("{e:#}");
    assert!(text.contains("refused our TPM identity"), "{text}");
    assert!(text.contains("not trusted"), "{text}");
}

#[test]
fn a_joiner_sends_nothing_to_a_service_outside_a_cluster() {
    let f = fixture(Setup {
        member: false,
        ..Setup::default()
    });
    let (service, joiner) = (&f.service, &f.joiner);
    let e = ticket(service, joiner, Admission::Join).expect_err("service in no cluster");
    assert!(format!("{e:#}").contains("belongs to no cluster"), "{e:#}");
}

#[test]
fn a_joiner_sends_nothing_to_a_service_running_another_uki() {
    // The service's reference leaves PCR 4 out, so it would admit this joiner; the
    // joiner sees the service's PCR 4 differ from its own and stops.
    let f = fixture(Setup {
        reference: &[9, 11],
        ..Setup::default()
    });
    let (service, joiner) = (&f.service, &f.joiner);
    extend(joiner, 4, &[0x04; 32]);
    let e = ticket(service, joiner, Admission::Join).expect_err("another UKI");
    assert!(
        format!("{e:#}").contains("does not run our image as we do: its PCR 4"),
        "{e:#}"
    );
}

#[test]
fn a_joiner_refuses_a_service_booted_otherwise_even_where_its_reference_is_silent() {
    // The service's reference checks 4, 9 and 11 only; the joiner also wants the
    // service's PCRs 12 and 13 equal to its own (no credentials, no extensions).
    for pcr in [12, 13] {
        let extends: &'static [(u32, [u8; 32])] = if pcr == 12 {
            &[(12, [0x12; 32])]
        } else {
            &[(13, [0x13; 32])]
        };
        let f = fixture(Setup {
            extends,
            ..Setup::default()
        });
        let e = ticket(&f.service, &f.joiner, Admission::Join).expect_err("booted otherwise");
        assert!(
            format!("{e:#}").contains(&format!("its PCR {pcr} is")),
            "PCR {pcr}: {e:#}"
        );
    }
}

#[test]
fn a_joiner_launched_for_one_cluster_refuses_a_service_of_another() {
    let f = fixture(Setup::default());
    let theirs = f.master.cluster_id();
    let ours = MasterSecret::generate().cluster_id();
    let e = join_cluster(&f.service, &f.joiner, ours).expect_err("another cluster");
    let text = format!("{e:#}");
    assert!(text.contains("belongs to another cluster"), "{text}");
    assert!(text.contains(&ours.to_hex()), "{text}");
    // The same joiner, launched for the service's cluster, gets in.
    let t = join_cluster(&f.service, &f.joiner, theirs).expect("its own cluster");
    assert_eq!(t.cluster_id, Some(theirs));
}

#[test]
fn a_joiner_in_a_confidential_vm_refuses_a_service_whose_quote_has_no_hardware_report() {
    let f = fixture(Setup::default());
    let wireguard = x25519_dalek::StaticSecret::from([7u8; 32]);
    let name = veil_kube::NodeName::new("node1").expect("name");
    // What a joiner on SEV-SNP derives from its own report (veil_attest::peer): the
    // service's quote must carry a report with that launch measurement.
    let cvm = JoinConfig {
        service_hardware: Some(hardware_required()),
        own_td: None,
        ..config(&f.service, LocalCa::shared())
    };
    let e = client_runtime()
        .block_on(fetch_ticket(
            &f.joiner,
            &cvm,
            Admission::Join,
            UUID,
            &wireguard,
            &name,
        ))
        .expect_err("a service with a bare TPM quote");
    let text = format!("{e:#}");
    assert!(text.contains("requires a hardware report"), "{text}");
    // Nothing was asked for: the same node, not a confidential VM, joins.
    let t = ticket(&f.service, &f.joiner, Admission::Join).expect("a TPM-only joiner");
    assert_eq!(t.cluster_id, Some(f.master.cluster_id()));
}

#[test]
fn a_restart_mid_join_fails_that_join_clearly_and_the_next_attempt_gets_in() {
    let master = MasterSecret::generate();
    let mut service = Service::start(&master, Setup::default());
    let joiner_tpm = Swtpm::start(LocalCa::shared());
    let joiner = open(&joiner_tpm);
    let port: u16 = service
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");

    // The joiner has its challenge; then the service goes away and comes back.
    let rt = client_runtime();
    let identity = joiner.0.lock().expect("lock").identity().clone();
    let challenge = rt.block_on(async {
        let channel = veil_protocol::client::plain(&service.addr)
            .await
            .expect("plain");
        JoinActivationClient::new(channel)
            .challenge(TpmIdentity::from(identity))
            .await
            .expect("challenge")
            .into_inner()
    });
    service.stop();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let service = Service::start(
        &master,
        Setup {
            port: Some(port),
            ..Setup::default()
        },
    );
    let credential = challenge.credential.expect("credential").into();
    let secret = joiner
        .0
        .lock()
        .expect("lock")
        .activate(&credential)
        .expect("activate");
    let status = rt
        .block_on(async {
            let channel = veil_protocol::client::plain(&service.addr)
                .await
                .expect("plain");
            JoinActivationClient::new(channel)
                .prove(veil_protocol::pb::join::ProveRequest {
                    challenge_id: challenge.challenge_id,
                    secret: secret.to_vec(),
                })
                .await
        })
        .expect_err("the restarted service knows no such challenge");
    assert!(
        status.message().contains("start again with Challenge"),
        "{status}"
    );

    // What the joiner's loop does next: a whole new attempt, which succeeds.
    let t = ticket(&service, &joiner, Admission::Join).expect("join after the restart");
    assert_eq!(t.cluster_id, Some(master.cluster_id()));
}

/// Plain `Challenge` calls to `service` with each of `identities`, in order, on one
/// connection (nobody answers them).
fn challenges(
    service: &Service,
    identities: &[veil_attest::tpm::AkIdentity],
) -> Vec<Result<(), tonic::Status>> {
    client_runtime().block_on(async {
        let channel = veil_protocol::client::plain(&service.addr)
            .await
            .expect("plain");
        let mut client = JoinActivationClient::new(channel);
        let mut out = Vec::new();
        for identity in identities {
            out.push(
                client
                    .challenge(TpmIdentity::from(identity.clone()))
                    .await
                    .map(|_| ()),
            );
        }
        out
    })
}

#[test]
fn one_peer_calling_too_often_is_told_to_wait() {
    let master = MasterSecret::generate();
    let limits = Limits {
        per_peer_per_minute: NonZeroU32::new(1).expect("1"),
        per_peer_burst: NonZeroU32::new(2).expect("2"),
        ..Limits::default()
    };
    let service = Service::start(
        &master,
        Setup {
            limits,
            ..Setup::default()
        },
    );
    let joiner_tpm = Swtpm::start(LocalCa::shared());
    let joiner = open(&joiner_tpm);
    let identity = joiner.0.lock().expect("lock").identity().clone();
    let codes = challenges(&service, &vec![identity; 3]);
    assert!(codes[0].is_ok() && codes[1].is_ok(), "{codes:?}");
    let status = codes[2].as_ref().expect_err("third call within the minute");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("try again in"), "{status}");
}

#[test]
fn under_a_cloud_profile_the_service_activates_nothing_and_says_why() {
    let policy = veil_attest::PlatformPolicy::from_json(
        "test policy",
        &format!(
            r#"{{"profile": "gcp-sev-snp", "gcp": {{}},
                 "sevSnp": {{"product": "milan", "measurements": ["{}"]}}}}"#,
            "a5".repeat(48)
        ),
    )
    .expect("policy");
    let f = fixture(Setup {
        platform: policy,
        ..Setup::default()
    });
    let identity = f.joiner.0.lock().expect("lock").identity().clone();
    let got = challenges(&f.service, &[identity]);
    let e = got[0]
        .as_ref()
        .expect_err("no activation under gcp-sev-snp");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("profile (gcp-sev-snp)"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains("nothing to activate"),
        "{}",
        e.message()
    );
    // A TPM joiner therefore gets nowhere, and is told so.
    let e = ticket(&f.service, &f.joiner, Admission::Join).expect_err("a TPM joiner");
    assert!(format!("{e:#}").contains("nothing to activate"), "{e:#}");
}

#[test]
fn a_replayed_ek_certificate_cannot_fill_the_challenge_slots() {
    let master = MasterSecret::generate();
    let many = NonZeroU32::new(10_000).expect("n");
    let limits = Limits {
        max_in_flight: 4,
        per_peer_per_minute: many,
        per_peer_burst: many,
        ..Limits::default()
    };
    let service = Service::start(
        &master,
        Setup {
            limits,
            ..Setup::default()
        },
    );
    let joiner_tpm = Swtpm::start(LocalCa::shared());
    let joiner = open(&joiner_tpm);
    let other_tpm = Swtpm::start(LocalCa::shared());
    let other = open(&other_tpm);
    // Someone who saw the joiner's public EK certificate (and an AK) replays them and
    // never answers: more challenges than the service has slots.
    let replayed = joiner.0.lock().expect("lock").identity().clone();
    let another = other.0.lock().expect("lock").identity().clone();
    let replies = challenges(&service, &vec![replayed; 10]);
    let theirs = challenges(&service, &[another]).remove(0);
    // Each replay takes the place of that EK's oldest challenge, never another's.
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    theirs.expect("another node still gets a challenge slot");
    // And the node whose certificate was replayed joins.
    let t = ticket(&service, &joiner, Admission::Join).expect("the replayed node joins");
    assert_eq!(t.cluster_id, Some(master.cluster_id()));
}

#[test]
fn a_wrong_answer_to_the_challenge_is_refused_and_that_challenge_is_spent() {
    let f = fixture(Setup::default());
    let (service, joiner) = (&f.service, &f.joiner);
    let identity = joiner.0.lock().expect("lock").identity().clone();
    let rt = client_runtime();
    let (wrong, again) = rt.block_on(async {
        let channel = veil_protocol::client::plain(&service.addr)
            .await
            .expect("plain");
        let mut client = JoinActivationClient::new(channel);
        let challenge = client
            .challenge(TpmIdentity::from(identity))
            .await
            .expect("challenge")
            .into_inner();
        let prove = |secret: Vec<u8>| veil_protocol::pb::join::ProveRequest {
            challenge_id: challenge.challenge_id.clone(),
            secret,
        };
        // Not what the TPM would answer: someone without the EK's private key.
        let wrong = client.prove(prove(vec![0; 32])).await;
        let again = client.prove(prove(vec![0; 32])).await;
        (wrong, again)
    });
    let status = wrong.expect_err("a guessed secret");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    assert!(status.message().contains("not in the TPM"), "{status}");
    let status = again.expect_err("a challenge answers once");
    assert!(
        status.message().contains("unknown or expired challenge"),
        "{status}"
    );
}

#[test]
fn the_ticket_says_how_the_cluster_formats_state_disks() {
    let f = fixture(Setup {
        integrity: true,
        ..Setup::default()
    });
    let (service, joiner) = (&f.service, &f.joiner);
    let t = ticket(service, joiner, Admission::Join).expect("join");
    assert_eq!(t.integrity, veil_disk::Integrity::HmacSha256);
}

/// A policy that accepts SEV-SNP reports and requires one with every quote.
fn hardware_required() -> veil_attest::PlatformPolicy {
    veil_attest::PlatformPolicy::from_json(
        "test policy",
        &format!(
            r#"{{"requireHardware": true, "sevSnp": {{"product": "milan", "measurements": ["{}"]}}}}"#,
            "a5".repeat(48)
        ),
    )
    .expect("policy")
}

#[test]
fn a_cluster_that_requires_hardware_refuses_a_bare_tpm_quote_and_says_why() {
    // Over the network: the joiner learns it was refused.
    let f = fixture(Setup {
        platform: hardware_required(),
        ..Setup::default()
    });
    let e = ticket(&f.service, &f.joiner, Admission::Join).expect_err("no hardware report");
    assert!(format!("{e:#}").contains("refused our evidence"), "{e:#}");

    // The service's reason, from its validator (what its log says).
    use veil_atls::{EvidenceIssuer, EvidenceValidator};
    let verifier = veil_attest::PlatformVerifier::new(
        veil_attest::tpm::TpmVerifier::new(LocalCa::shared().trust()),
        &hardware_required(),
        "test policy",
    )
    .expect("verifier");
    let admission = Arc::new(veil_joinservice::Admission::new(
        verifier,
        Limits::default(),
    ));
    let identity = f.joiner.0.lock().expect("lock").identity().clone();
    let (id, credential) = admission.challenge(&identity).expect("challenge");
    let secret = f
        .joiner
        .0
        .lock()
        .expect("lock")
        .activate(&credential)
        .expect("activate");
    admission.prove(&id, &secret).expect("prove");
    let validator = veil_joinservice::JoinerValidator::new(
        admission,
        &reference(&[4, 9, 11]),
        &f.master.cluster_id(),
    );
    let user_data = [0x33; 32];
    let evidence = f.joiner.issue(&user_data).expect("evidence");
    let err = validator
        .validate(&evidence, &user_data)
        .expect_err("bare TPM quote");
    assert!(
        err.to_string().contains("requires a hardware report"),
        "{err}"
    );
}

/// The joiner's key in `ticket` and `ticket_named`.
fn joiner_key() -> veil_mesh::peers::WgKey {
    veil_mesh::key::PrivateKey::from_bytes([7u8; 32]).public()
}

#[test]
fn the_ticket_puts_the_node_on_the_mesh_with_the_control_plane_as_its_peer() {
    let f = fixture(Setup::default());
    let (master, service, joiner) = (&f.master, &f.service, &f.joiner);
    let t = ticket(service, joiner, Admission::Join).expect("join");
    let mesh = &t.mesh;
    let state = &mesh.0;
    assert_eq!(
        state.plan.subnet().to_string(),
        veil_mesh::address::DEFAULT_MESH_SUBNET
    );
    assert_eq!(
        state.address.to_string(),
        "10.90.0.2",
        "the control plane has .1"
    );
    assert_eq!(state.secret.as_bytes(), &*master.mesh_secret());

    let table = mesh.peers(&joiner_key()).expect("its own entry, checked");
    let peers: Vec<_> = table.peers().collect();
    assert_eq!(peers.len(), 1, "{peers:?}");
    let cp = peers[0];
    assert_eq!(cp.name, "node0");
    assert_eq!(cp.public_key, control_plane_key().public());
    assert_eq!(cp.mesh_ip.to_string(), "10.90.0.1");
    // Where the joiner reached the join service, on WireGuard's port.
    assert_eq!(cp.endpoint.to_string(), "127.0.0.1:51820");
    let own = state
        .roster
        .peers
        .iter()
        .find(|p| p.public_key == joiner_key())
        .expect("own entry");
    assert_eq!(
        own.endpoint.to_string(),
        "127.0.0.1:51820",
        "where it joined from"
    );

    // A ticket is for the key that joined: another key finds no place in it.
    let other = veil_mesh::key::PrivateKey::from_bytes([8u8; 32]).public();
    let e = mesh.peers(&other).expect_err("another key");
    assert!(
        format!("{e:#}").contains("does not hold this node's WireGuard key"),
        "{e:#}"
    );

    // The service's own node follows the roster: its mesh file now has the joiner.
    let path = service._roster.path().join(veil_protocol::paths::MESH);
    let own = veil_mesh::state::MeshState::read(&path).expect("the control plane's mesh file");
    assert_eq!(own.address.to_string(), "10.90.0.1");
    assert_eq!(own.roster.version, state.roster.version);
    let names: Vec<_> = own.roster.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["node1"], "every member but itself");
    assert_eq!(own.roster.peers[0].public_key, joiner_key());
    assert_eq!(own.secret.as_bytes(), &*master.mesh_secret());

    // A reboot keeps the address; the roster it gets is no older.
    let again = ticket(service, joiner, Admission::Rejoin).expect("rejoin");
    assert_eq!(again.mesh.0.address, state.address);
    assert!(again.mesh.0.roster.version >= state.roster.version);
    again.mesh.peers(&joiner_key()).expect("the same place");
}

#[test]
fn a_joiner_with_another_members_wireguard_key_is_refused() {
    let f = fixture(Setup::default());
    let (service, joiner) = (&f.service, &f.joiner);
    ticket(service, joiner, Admission::Join).expect("node1 joins");
    // Another disk (partition) on a node that sends node1's public key again.
    let wireguard = x25519_dalek::StaticSecret::from([7u8; 32]);
    let e = client_runtime()
        .block_on(fetch_ticket(
            joiner,
            &config(service, LocalCa::shared()),
            Admission::Join,
            "11111111-4e5f-4061-8293-a4b5c6d7e8f9",
            &wireguard,
            &veil_kube::NodeName::new("node2").expect("name"),
        ))
        .expect_err("node1's key");
    assert!(
        format!("{e:#}").contains("belongs to member 'node1'"),
        "{e:#}"
    );
}

#[test]
fn a_member_may_not_join_again_and_a_node_that_has_not_joined_may_not_watch() {
    let f = fixture(Setup::default());
    let (master, service, joiner) = (&f.master, &f.service, &f.joiner);
    let e = client_runtime()
        .block_on(veil_bootstrapper::mesh::watch(
            joiner,
            &config(service, LocalCa::shared()),
            0,
        ))
        .expect_err("not a member");
    assert!(format!("{e:#}").contains("Watch is for members"), "{e:#}");

    ticket(service, joiner, Admission::Join).expect("join");
    extend(joiner, 15, &master.cluster_id().0);
    let e = ticket(service, joiner, Admission::Join).expect_err("a member");
    assert!(
        format!("{e:#}").contains("Join is for a node that has not joined a cluster in this boot"),
        "{e:#}"
    );
}

/// node1 joins and is a member (PCR 15 set); returns its ticket and its state disk's
/// cluster directory as the ticket left it (its WireGuard key, its mesh file).
fn member(
    master: &MasterSecret,
    service: &Service,
    joiner: &SharedTpm,
) -> (Ticket, tempfile::TempDir) {
    let t = ticket(service, joiner, Admission::Join).expect("node1 joins");
    extend(joiner, 15, &master.cluster_id().0);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(veil_protocol::paths::WIREGUARD_KEY),
        veil_mesh::key::PrivateKey::from_bytes([7u8; 32])
            .to_base64()
            .as_bytes(),
    )
    .expect("key");
    veil_bootstrapper::mesh::keep(dir.path(), &t.mesh).expect("keep the ticket's mesh");
    (t, dir)
}

#[test]
fn a_member_watching_the_roster_sees_the_next_node_join_and_keeps_only_newer_rosters() {
    let f = fixture(Setup {
        limits: lifted(),
        ..Setup::default()
    });
    let (master, service, joiner) = (&f.master, &f.service, &f.joiner);
    let (t, dir) = member(master, service, joiner);
    let joined_at = t.mesh.0.roster.version;

    let other_tpm = Swtpm::start(LocalCa::shared());
    let other = open(&other_tpm);
    let rosters = client_runtime().block_on(async {
        let mut stream =
            veil_bootstrapper::mesh::watch(joiner, &config(service, LocalCa::shared()), 0)
                .await
                .expect("watch");
        let now = stream.message().await.expect("first").expect("a roster");
        // node2 joins while node1 watches.
        let wireguard = x25519_dalek::StaticSecret::from([8u8; 32]);
        fetch_ticket(
            &other,
            &config(service, LocalCa::shared()),
            Admission::Join,
            "22222222-4e5f-4061-8293-a4b5c6d7e8f9",
            &wireguard,
            &veil_kube::NodeName::new("node2").expect("name"),
        )
        .await
        .expect("node2 joins");
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
            .await
            .expect("a change within seconds")
            .expect("stream")
            .expect("a roster");
        (now, next)
    });
    let (now, next) = rosters;
    assert_eq!(now.version, joined_at, "the roster as it was, at once");
    assert!(next.version > now.version);
    let names: Vec<_> = next.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["node0", "node1", "node2"]);

    let kept = veil_bootstrapper::mesh::keep_roster(dir.path(), next.clone()).expect("newer");
    assert_eq!(kept, next.version);
    let path = dir.path().join(veil_protocol::paths::MESH);
    let before = std::fs::read(&path).expect("mesh file");
    for (stale, why) in [(next.clone(), "the same version"), (now, "an older one")] {
        let e = veil_bootstrapper::mesh::keep_roster(dir.path(), stale).expect_err(why);
        assert!(format!("{e:#}").contains("is not newer"), "{why}: {e:#}");
    }
    // A roster that leaves this node out, or gives its key another address, is refused.
    let mut without = next.clone();
    without.version += 1;
    without.peers.retain(|p| p.name != "node1");
    let e = veil_bootstrapper::mesh::keep_roster(dir.path(), without).expect_err("left out");
    assert!(
        format!("{e:#}").contains("does not hold this node's WireGuard key"),
        "{e:#}"
    );
    let mut twice = next;
    twice.version += 1;
    let node2_ip = twice.peers[2].mesh_ip.clone();
    twice.peers[0].mesh_ip = node2_ip;
    let e = veil_bootstrapper::mesh::keep_roster(dir.path(), twice).expect_err("one address twice");
    assert!(format!("{e:#}").contains("given twice"), "{e:#}");
    assert_eq!(
        std::fs::read(&path).expect("mesh file"),
        before,
        "nothing changed"
    );
}

#[test]
fn pod_ranges_from_the_control_plane_reach_a_watching_member_and_the_control_planes_wg0() {
    let kube = Arc::new(support_kubernetes::TestControlPlane::default());
    let f = fixture(Setup {
        limits: lifted(),
        kubernetes: kube.clone(),
        ..Setup::default()
    });
    let (master, service, joiner) = (&f.master, &f.service, &f.joiner);
    let (t, dir) = member(master, service, joiner);
    assert!(t.mesh.0.roster.peers.iter().all(|p| p.pod_cidr.is_none()));

    let net = |s: &str| -> ipnet::Ipv4Net { s.parse().expect("net") };
    let next = client_runtime().block_on(async {
        let mut stream =
            veil_bootstrapper::mesh::watch(joiner, &config(service, LocalCa::shared()), 0)
                .await
                .expect("watch");
        stream.message().await.expect("first").expect("a roster");
        // The controller manager gives both nodes their slices (and one that is no
        // member's, which the roster ignores).
        kube.pod_ranges.send_replace(
            [
                ("node0".to_owned(), net("10.244.0.0/24")),
                ("node1".to_owned(), net("10.244.1.0/24")),
                ("stranger".to_owned(), net("10.244.7.0/24")),
            ]
            .into(),
        );
        tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
            .await
            .expect("a change within seconds")
            .expect("stream")
            .expect("a roster")
    });
    let ranges: Vec<(&str, &str)> = next
        .peers
        .iter()
        .map(|p| (p.name.as_str(), p.pod_cidr.as_str()))
        .collect();
    assert_eq!(
        ranges,
        [("node0", "10.244.0.0/24"), ("node1", "10.244.1.0/24")]
    );
    // The member takes it: its wg0 would route node0's pods to node0 alone.
    veil_bootstrapper::mesh::keep_roster(dir.path(), next.clone()).expect("newer");
    let kept = veil_mesh::state::MeshState::read(&dir.path().join(veil_protocol::paths::MESH))
        .expect("mesh file");
    let node0 = kept
        .roster
        .peers
        .iter()
        .find(|p| p.name == "node0")
        .expect("node0");
    assert_eq!(
        node0.allowed_ips(),
        [net("10.90.0.1/32"), net("10.244.0.0/24")]
    );
    // The control-plane node's own mesh file: node1 with its pod range.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let own = veil_mesh::state::MeshState::read(&service.own_mesh_file()).expect("own file");
        if own.roster.version == next.version {
            let node1 = own
                .roster
                .peers
                .iter()
                .find(|p| p.name == "node1")
                .expect("node1");
            assert_eq!(node1.pod_cidr, Some(net("10.244.1.0/24")));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mesh file follows the roster"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn the_cluster_is_loaded_from_what_init_kept_and_a_bad_file_is_named() {
    use veil_protocol::paths;
    let dir = tempfile::tempdir().expect("tempdir");
    let master = MasterSecret::generate();
    master
        .write_file(&dir.path().join(paths::MASTER_SECRET))
        .expect("master secret");
    let zero = "00".repeat(32);
    std::fs::write(
        dir.path().join(paths::REFERENCE),
        format!(
            r#"{{"pcrs":{{"4":{{"expected":"{zero}","warnOnly":false}}}},"image":{{"ukiSha256":"{zero}","osRelease":{{}}}}}}"#
        ),
    )
    .expect("reference");

    // Only what every Init keeps: TPM quotes only, plain state disks.
    let c = Cluster::load(dir.path()).expect("load");
    assert_eq!(c.master.cluster_id(), master.cluster_id());
    assert_eq!(c.platform, veil_attest::PlatformPolicy::default());
    assert!(!c.settings.state_disk_integrity);

    std::fs::write(
        dir.path().join(paths::SETTINGS),
        r#"{"stateDiskIntegrity":true}"#,
    )
    .expect("settings");
    std::fs::write(
        dir.path().join(paths::PLATFORM_POLICY),
        format!(
            r#"{{"requireHardware": true, "tdx": {{"mrtd": ["{}"]}}}}"#,
            "a5".repeat(48)
        ),
    )
    .expect("policy");
    let c = Cluster::load(dir.path()).expect("load");
    assert!(c.platform.require_hardware && c.platform.tdx.is_some());
    assert!(c.settings.state_disk_integrity);

    // The control-plane node's own key puts it on the mesh, first, once.
    std::fs::write(
        dir.path().join(paths::NODE),
        format!(r#"{{"name":"node0","role":"control-plane","partuuid":"{CP_UUID}"}}"#),
    )
    .expect("node record");
    std::fs::write(
        dir.path().join(paths::WIREGUARD_KEY),
        control_plane_key().to_base64().as_bytes(),
    )
    .expect("key");
    for _ in 0..2 {
        let c = Cluster::load(dir.path()).expect("load");
        let snapshot = c.roster.snapshot();
        assert_eq!(snapshot.members.len(), 1, "{snapshot:?}");
        let cp = &snapshot.members[0];
        assert_eq!(
            (cp.name.as_str(), cp.mesh_ip.map(|a| a.to_string())),
            ("node0", Some("10.90.0.1".into()))
        );
        assert_eq!(cp.wireguard_public_key, control_plane_key().public());
    }
    std::fs::write(
        dir.path().join(paths::SETTINGS),
        r#"{"meshSubnet":"10.244.128.0/24"}"#,
    )
    .expect("settings");
    let err = Cluster::load(dir.path()).err().expect("mesh over the pods");
    assert!(err.to_string().contains("pod network"), "{err}");
    std::fs::write(dir.path().join(paths::SETTINGS), "{}").expect("settings");

    std::fs::write(dir.path().join(paths::PLATFORM_POLICY), r#"{"tdx": 5}"#).expect("policy");
    let err = Cluster::load(dir.path()).err().expect("bad policy");
    assert!(err.to_string().contains(paths::PLATFORM_POLICY), "{err}");
    assert!(err.to_string().contains("invalid type"), "{err}");
}

#[test]
fn a_joiner_gets_a_token_for_its_name_and_a_taken_name_is_refused() {
    let setup = Setup::default();
    let kube = setup.kubernetes.clone();
    kube.registered.lock().expect("lock").insert("node7".into());
    let f = fixture(setup);
    let (service, joiner) = (&f.service, &f.joiner);

    // The control-plane node's own name, and a name Kubernetes has, are taken.
    let err = ticket_named(service, joiner, Admission::Join, "node0").expect_err("reserved");
    assert!(
        format!("{err:#}").contains("'node0' belongs to another member"),
        "{err:#}"
    );
    let err = ticket_named(service, joiner, Admission::Join, "node7").expect_err("registered");
    assert!(
        format!("{err:#}").contains("registered in Kubernetes already"),
        "{err:#}"
    );
    assert!(
        kube.tokens_for.lock().expect("lock").is_empty(),
        "no token for a refused name"
    );

    let t = ticket(service, joiner, Admission::Join).expect("join");
    assert_eq!(t.node_name.as_deref(), Some("node1"));
    let k = t.kubernetes.expect("what kubeadm join needs");
    veil_kube::token::check_token(&k.bootstrap_token).expect("a well-formed token");
    veil_kube::token::check_ca_hash(&k.ca_cert_hash).expect("a CA pin");
    assert_eq!(*kube.tokens_for.lock().expect("lock"), ["node1"]);

    // A member that never registered (its kubeadm join failed) gets a new token on
    // Rejoin; once registered, only its disk key.
    let t = ticket(service, joiner, Admission::Rejoin).expect("rejoin");
    assert!(
        t.kubernetes.is_some(),
        "an unregistered member may try again"
    );
    kube.registered.lock().expect("lock").insert("node1".into());
    let t = ticket(service, joiner, Admission::Rejoin).expect("rejoin");
    assert!(t.kubernetes.is_none(), "a registered member needs no token");
    assert_eq!(*kube.tokens_for.lock().expect("lock"), ["node1", "node1"]);
}

#[test]
fn while_the_control_plane_is_down_joiners_retry_and_members_still_rejoin() {
    let kubernetes = Arc::new(support_kubernetes::TestControlPlane::default());
    let f = fixture(Setup {
        kubernetes: kubernetes.clone(),
        ..Setup::default()
    });
    ticket(&f.service, &f.joiner, Admission::Join).expect("a member joins");
    // A full restart: the control plane is not up yet.
    kubernetes
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let newcomer_tpm = Swtpm::start(LocalCa::shared());
    let newcomer = open(&newcomer_tpm);
    let wireguard = x25519_dalek::StaticSecret::from([8u8; 32]);
    let err = client_runtime()
        .block_on(fetch_ticket(
            &newcomer,
            &config(&f.service, LocalCa::shared()),
            Admission::Join,
            "3a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9",
            &wireguard,
            &veil_kube::NodeName::new("node2").expect("name"),
        ))
        .expect_err("down");
    assert!(format!("{err:#}").contains("not up yet"), "{err:#}");
    // Members rejoin before the control plane answers.
    let t = ticket(&f.service, &f.joiner, Admission::Rejoin).expect("rejoin");
    assert_eq!(
        t.disk_key.as_slice(),
        f.master.disk_key(UUID).expect("key").as_slice()
    );
    assert!(t.kubernetes.is_none());
}

#[test]
fn joining_as_a_second_control_plane_node_is_refused_for_now() {
    let f = fixture(Setup::default());
    let mut config = config(&f.service, LocalCa::shared());
    config.role = Role::ControlPlane;
    let wireguard = x25519_dalek::StaticSecret::from([7u8; 32]);
    let err = client_runtime()
        .block_on(fetch_ticket(
            &f.joiner,
            &config,
            Admission::Join,
            UUID,
            &wireguard,
            &veil_kube::NodeName::new("cp2").expect("name"),
        ))
        .expect_err("HA not yet");
    assert!(format!("{err:#}").contains("not supported yet"), "{err:#}");
}

/// Activation both ways as a joiner does it, then, after `wait`, the mutual aTLS
/// handshake and a Join under the activated AK.
fn join_after(
    service: &Service,
    joiner: &SharedTpm,
    wait: std::time::Duration,
    name: &str,
    uuid: &str,
) -> Result<(), String> {
    use veil_atls::{EvidenceIssuer, VerifierValidator};
    use veil_attest::tpm::{CredentialChallenge, TpmVerifier};
    use veil_protocol::pb::join::join_client::JoinClient;
    use veil_protocol::pb::join::{JoinRequest, ProveRequest};
    let ep = service.addr.clone();
    let joiner = joiner.clone();
    client_runtime().block_on(async move {
        let plain = veil_protocol::client::plain(&ep)
            .await
            .map_err(|e| e.to_string())?;
        let mut verifier = TpmVerifier::new(LocalCa::shared().trust());
        let ak = veil_protocol::activation::activate_peer(plain.clone(), &ep, &verifier)
            .await
            .map_err(|e| e.to_string())?;
        verifier.add_trusted_ak(ak);
        let identity = joiner.0.lock().expect("lock").identity().clone();
        let mut activation = JoinActivationClient::new(plain);
        let challenge = activation
            .challenge(TpmIdentity::from(identity))
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        let credential: CredentialChallenge = challenge.credential.expect("credential").into();
        let secret = joiner
            .0
            .lock()
            .expect("lock")
            .activate(&credential)
            .expect("activate")
            .to_vec();
        activation
            .prove(ProveRequest {
                challenge_id: challenge.challenge_id,
                secret,
            })
            .await
            .map_err(|s| s.to_string())?;
        tokio::time::sleep(wait).await;
        let own: Arc<dyn EvidenceIssuer> = joiner.clone();
        let (channel, _) =
            veil_protocol::client::atls(&ep, Some(own), Arc::new(VerifierValidator(verifier)))
                .await
                .map_err(|e| e.to_string())?;
        JoinClient::new(channel)
            .join(JoinRequest {
                state_partition_uuid: uuid.into(),
                wireguard_public_key: vec![9; 32],
                role: Role::Worker.into(),
                node_name: name.into(),
            })
            .await
            .map(|_| ())
            .map_err(|s| {
                let mut text = s.to_string();
                let mut source = std::error::Error::source(&s);
                while let Some(e) = source {
                    text.push_str(&format!(": {e}"));
                    source = e.source();
                }
                text
            })
    })
}

#[test]
fn an_activated_ak_expires_when_its_quote_is_checked_not_only_when_another_arrives() {
    // Long enough that activating and joining fit in it on a loaded 2-core machine
    // (2 s did not, once, beside a release build).
    let ttl = std::time::Duration::from_secs(8);
    let f = fixture(Setup {
        limits: Limits {
            trusted_ak_ttl: ttl,
            ..Limits::default()
        },
        ..Setup::default()
    });
    // Within its time the AK is good.
    join_after(
        &f.service,
        &f.joiner,
        std::time::Duration::ZERO,
        "node1",
        UUID,
    )
    .expect("within the AK's time");
    // Past it, with no other activation in between, the handshake is refused.
    let e = join_after(
        &f.service,
        &f.joiner,
        ttl + std::time::Duration::from_secs(1),
        "node2",
        "1a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9",
    )
    .expect_err("an expired AK");
    assert!(e.contains("AccessDenied") || e.contains("refused"), "{e}");
}

#[test]
fn a_members_disk_key_goes_to_its_own_tpm_only() {
    let f = fixture(Setup::default());
    let (service, member) = (&f.service, &f.joiner);
    ticket(service, member, Admission::Join).expect("the member joins");

    // Another attested node (its own vTPM), with a copy of the member's disk: its
    // partition UUID is the member's.
    let other_tpm = Swtpm::start(LocalCa::shared());
    let other = open(&other_tpm);
    let e = ticket(service, &other, Admission::Rejoin).expect_err("another TPM's Rejoin");
    let text = format!("{e:#}");
    assert!(text.contains("belongs to member 'node1'"), "{text}");
    assert!(text.contains("not to this node's TPM"), "{text}");
    let e =
        ticket_named(service, &other, Admission::Join, "node2").expect_err("another TPM's Join");
    assert!(
        format!("{e:#}").contains("belongs to member 'node1'"),
        "{e:#}"
    );

    // A partition nobody joined with is not Rejoined either.
    let wireguard = x25519_dalek::StaticSecret::from([7u8; 32]);
    let e = client_runtime()
        .block_on(fetch_ticket(
            &other,
            &config(service, LocalCa::shared()),
            Admission::Rejoin,
            "2a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9",
            &wireguard,
            &veil_kube::NodeName::new("node2").expect("name"),
        ))
        .expect_err("unknown partition");
    assert!(
        format!("{e:#}").contains("no member has state partition"),
        "{e:#}"
    );

    // The member itself still rejoins.
    let t = ticket(service, member, Admission::Rejoin).expect("the member rejoins");
    assert_eq!(
        t.disk_key.as_slice(),
        f.master.disk_key(UUID).expect("key").as_slice()
    );
}

/// Limits without the per-address one: every call in a test comes from 127.0.0.1
/// (that limit has its own test).
fn lifted() -> Limits {
    Limits {
        per_peer_per_minute: NonZeroU32::MAX,
        per_peer_burst: NonZeroU32::MAX,
        ..Limits::default()
    }
}

/// An operator's channel to the join port: the service's AK activated and its quote
/// checked, this side anonymous (as `veil remove` connects).
async fn anonymous(service: &Service) -> tonic::transport::Channel {
    let ep = service.addr.as_str();
    let plain = veil_protocol::client::plain(ep).await.expect("plain");
    let mut verifier = veil_attest::tpm::TpmVerifier::new(LocalCa::shared().trust());
    let ak = veil_protocol::activation::activate_peer(plain, ep, &verifier)
        .await
        .expect("the service's AK");
    verifier.add_trusted_ak(ak);
    let (channel, _) =
        veil_protocol::client::atls(ep, None, Arc::new(veil_atls::VerifierValidator(verifier)))
            .await
            .expect("aTLS, anonymous");
    channel
}

async fn remove(
    service: &Service,
    name: &str,
    credential: &[u8],
) -> Result<veil_protocol::pb::join::RemoveResponse, tonic::Status> {
    veil_protocol::pb::join::mesh_client::MeshClient::new(anonymous(service).await)
        .remove(veil_protocol::pb::join::RemoveRequest {
            node_name: name.into(),
            admin_credential: credential.to_vec(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[test]
fn veil_remove_drops_a_member_for_good_and_its_peers_see_it_within_seconds() {
    // Every call here comes from 127.0.0.1: lift the per-address limit (tested above).
    let f = fixture(Setup {
        limits: lifted(),
        ..Setup::default()
    });
    let (master, service, joiner) = (&f.master, &f.service, &f.joiner);
    ticket(service, joiner, Admission::Join).expect("node1 joins");
    // node2 joins and watches the roster, as a member.
    let other_tpm = Swtpm::start(LocalCa::shared());
    let other = open(&other_tpm);
    let rt = client_runtime();
    rt.block_on(fetch_ticket(
        &other,
        &config(service, LocalCa::shared()),
        Admission::Join,
        "22222222-4e5f-4061-8293-a4b5c6d7e8f9",
        &x25519_dalek::StaticSecret::from([8u8; 32]),
        &veil_kube::NodeName::new("node2").expect("name"),
    ))
    .expect("node2 joins");
    extend(&other, 15, &master.cluster_id().0);

    rt.block_on(async {
        let mut watch =
            veil_bootstrapper::mesh::watch(&other, &config(service, LocalCa::shared()), 0)
                .await
                .expect("node2 watches");
        let before = watch.message().await.expect("roster").expect("a roster");
        assert!(before.peers.iter().any(|p| p.name == "node1"));

        // An operator's channel is anonymous: it may not join or watch.
        let e = veil_protocol::pb::join::join_client::JoinClient::new(anonymous(service).await)
            .rejoin(veil_protocol::pb::join::RejoinRequest {
                state_partition_uuid: UUID.into(),
            })
            .await
            .expect_err("anonymous");
        assert!(
            e.message().contains("needs a joiner verified by its TPM"),
            "{e}"
        );

        let wrong = MasterSecret::generate();
        let e = remove(service, "node1", &wrong.admin_credential()[..])
            .await
            .expect_err("another cluster's credential");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        assert!(e.message().contains("nothing was removed"), "{e}");
        let e = remove(service, "nobody", &master.admin_credential()[..])
            .await
            .expect_err("unknown");
        assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
        assert!(e.message().contains("no member is named 'nobody'"), "{e}");
        let e = remove(service, "node0", &master.admin_credential()[..])
            .await
            .expect_err("the control-plane node");
        assert!(e.message().contains("cannot be removed"), "{e}");

        let done = remove(service, "node1", &master.admin_credential()[..])
            .await
            .expect("removed");
        assert_eq!(done.mesh_ip, "10.90.0.2");
        assert!(
            done.roster_version > before.version,
            "only the removal changed it"
        );
        let after = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
            .await
            .expect("within seconds")
            .expect("stream")
            .expect("a roster");
        assert_eq!(after.version, done.roster_version);
        let names: Vec<_> = after.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["node0", "node2"]);
    });

    // The control-plane node's own wg0 follows too.
    let path = service._roster.path().join(veil_protocol::paths::MESH);
    let own = veil_mesh::state::MeshState::read(&path).expect("its mesh file");
    let names: Vec<_> = own.roster.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["node2"]);

    // node1 "reboots" (its PCR 15 is still zero): its disk key is refused, by Rejoin
    // and by Join with the same partition.
    for how in [Admission::Rejoin, Admission::Join] {
        let e = ticket(service, joiner, how).expect_err("removed");
        assert!(
            format!("{e:#}").contains("was removed from the cluster"),
            "{how:?}: {e:#}"
        );
    }
    // Still running with PCR 15 set, the removed node may not watch the roster either.
    extend(joiner, 15, &master.cluster_id().0);
    let e = rt
        .block_on(veil_bootstrapper::mesh::watch(
            joiner,
            &config(service, LocalCa::shared()),
            0,
        ))
        .expect_err("removed");
    assert!(
        format!("{e:#}").contains("it was removed from the cluster"),
        "{e:#}"
    );
}
