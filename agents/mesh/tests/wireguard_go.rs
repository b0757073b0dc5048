//! The mesh's WireGuard configuration ([`veil_mesh::wg`]) on a real WireGuard:
//! `wireguard-go` in two network namespaces joined by a veth pair, the way two nodes
//! share a cloud network. What crosses the veth is captured with tcpdump, as the host
//! would see it. Needs root, `ip`, `wireguard-go`, `tcpdump` and `socat`
//! (`ci/setup-host` installs them); the nodes' kernel WireGuard is the same
//! configuration through netlink.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veil_mesh::address::MeshPlan;
use veil_mesh::peers::{Peer, PeerTable, RosterView, WgKey};
use veil_mesh::psk::MeshSecret;
use veil_mesh::wg::{LISTEN_PORT, WgInterface};
use zeroize::Zeroizing;

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (run ci/setup-host)"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// X25519 public key of `private` (clamped as WireGuard does), by `wg pubkey`.
fn public_key(private: &[u8; 32]) -> WgKey {
    use std::io::Write;
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wg pubkey (wireguard-tools)");
    // A private key's text form is base64 of its 32 bytes, as a public key's is.
    let b64 = WgKey::from_bytes(*private).to_string();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b64.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wg pubkey");
    WgKey::parse(String::from_utf8_lossy(&out.stdout).trim()).expect("a public key")
}

/// One node: a network namespace, its end of the veth, its wireguard-go interface.
struct Node {
    netns: String,
    veth: String,
    wg: String,
    underlay: Ipv4Addr,
    mesh: Ipv4Addr,
    private: Zeroizing<[u8; 32]>,
    public: WgKey,
}

impl Node {
    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).args(args);
        c
    }

    fn peer(&self) -> Peer {
        Peer {
            name: self.netns.clone(),
            public_key: self.public,
            endpoint: (self.underlay, LISTEN_PORT).into(),
            mesh_ip: self.mesh,
            pod_cidr: None,
        }
    }
}

/// Two nodes on a veth "segment", each running wireguard-go, torn down on drop.
struct Lab {
    a: Node,
    b: Node,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Lab {
    /// `tag` keeps the names of tests running at once apart (interface names are
    /// global to wireguard-go's UAPI directory, and at most 15 bytes).
    fn new(tag: char) -> Lab {
        let id = std::process::id() % 100_000;
        let node = |side: char, underlay: [u8; 4], mesh: [u8; 4], key: u8| {
            let private = Zeroizing::new([key; 32]);
            Node {
                netns: format!("veil-mesh-{id}-{tag}{side}"),
                veth: format!("vv{id}{tag}{side}"),
                wg: format!("vw{id}{tag}{side}"),
                underlay: underlay.into(),
                mesh: mesh.into(),
                public: public_key(&private),
                private,
            }
        };
        let lab = Lab {
            a: node('a', [192, 168, 77, 1], [10, 90, 0, 1], 0x11),
            b: node('b', [192, 168, 77, 2], [10, 90, 0, 2], 0x22),
            dir: tempfile::tempdir().expect("tempdir"),
            children: Vec::new(),
        };
        for n in [&lab.a, &lab.b] {
            run(&["ip", "netns", "add", &n.netns]);
        }
        run(&[
            "ip",
            "link",
            "add",
            &lab.a.veth,
            "netns",
            &lab.a.netns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.b.veth,
            "netns",
            &lab.b.netns,
        ]);
        for n in [&lab.a, &lab.b] {
            let ns = n.netns.as_str();
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            let underlay = format!("{}/24", n.underlay);
            run(&["ip", "-n", ns, "addr", "add", &underlay, "dev", &n.veth]);
            run(&["ip", "-n", ns, "link", "set", &n.veth, "up"]);
            let status = n
                .exec(&["wireguard-go", &n.wg])
                .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("wireguard-go (ci/setup-host)");
            assert!(status.success(), "wireguard-go {}", n.wg);
            let sock = PathBuf::from(format!("/var/run/wireguard/{}.sock", n.wg));
            wait_for(Duration::from_secs(10), || sock.exists(), "the UAPI socket");
            let mesh = format!("{}/16", n.mesh);
            run(&["ip", "-n", ns, "addr", "add", &mesh, "dev", &n.wg]);
            let mtu = veil_mesh::mesh_mtu(1500).to_string();
            run(&["ip", "-n", ns, "link", "set", &n.wg, "mtu", &mtu, "up"]);
        }
        lab
    }

    /// `node` configured with `peers` at roster `version`, under `secret`.
    fn configure(node: &Node, peers: Vec<Peer>, secret: &MeshSecret) {
        let plan = MeshPlan::new("10.90.0.0/16".parse().expect("cidr"), &[]).expect("plan");
        let mut table = PeerTable::new(node.public, plan);
        table
            .apply(RosterView { version: 1, peers })
            .expect("roster");
        WgInterface::userspace(&node.wg)
            .expect("name")
            .configure(&node.private, &table, secret)
            .expect("configure");
    }

    /// Starts capturing what crosses A's end of the veth; returns the file.
    fn capture(&mut self) -> PathBuf {
        let file = self.dir.path().join("segment.pcap");
        let log = self.dir.path().join("tcpdump.log");
        let child = self
            .a
            .exec(&["tcpdump", "-i", &self.a.veth, "-U", "-n", "-w"])
            .arg(&file)
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("tcpdump (ci/setup-host)");
        self.children.push(child);
        wait_for(
            Duration::from_secs(10),
            || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on")),
            "tcpdump to listen",
        );
        file
    }

    /// Starts a UDP receiver on B at `ip:port`; returns the file it writes.
    fn receive(&mut self, ip: Ipv4Addr, port: u16) -> PathBuf {
        let file = self.dir.path().join(format!("received-{port}"));
        let child = self
            .b
            .exec(&["socat", "-u", &format!("UDP4-RECV:{port},bind={ip}"), "-"])
            .stdout(std::fs::File::create(&file).expect("out"))
            .spawn()
            .expect("socat");
        self.children.push(child);
        std::thread::sleep(Duration::from_millis(300));
        file
    }

    /// Sends `text` from A to `ip:port`, again every half second until `received`
    /// holds it or `within` passed (the first packets wait for a handshake).
    fn send_until(
        &self,
        text: &str,
        ip: Ipv4Addr,
        port: u16,
        received: &Path,
        within: Duration,
    ) -> bool {
        let started = Instant::now();
        while started.elapsed() < within {
            let mut c = self
                .a
                .exec(&["socat", "-u", "-", &format!("UDP4-SENDTO:{ip}:{port}")])
                .stdin(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("socat");
            {
                use std::io::Write;
                let _ = c.stdin.take().expect("stdin").write_all(text.as_bytes());
            }
            let _ = c.wait();
            if std::fs::read_to_string(received).is_ok_and(|r| r.contains(text)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in [&self.a, &self.b] {
            // Deleting the interface ends its wireguard-go.
            let _ = Command::new("ip")
                .args(["-n", &n.netns, "link", "del", &n.wg])
                .status();
            let _ = Command::new("ip").args(["netns", "del", &n.netns]).status();
        }
    }
}

fn wait_for(within: Duration, mut ok: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < within, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn secret(b: u8) -> MeshSecret {
    MeshSecret::new(Zeroizing::new([b; 32]))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn a_marker_crosses_the_mesh_and_the_segment_shows_only_wireguard() {
    let mut lab = Lab::new('1');
    Lab::configure(&lab.a, vec![lab.a.peer(), lab.b.peer()], &secret(1));
    Lab::configure(&lab.b, vec![lab.a.peer(), lab.b.peer()], &secret(1));
    let pcap = lab.capture();

    let over_mesh = lab.receive(lab.b.mesh, 7777);
    let marker = "VEIL-MESH-MARKER-a6f3";
    assert!(
        lab.send_until(
            marker,
            lab.b.mesh,
            7777,
            &over_mesh,
            Duration::from_secs(20)
        ),
        "the marker did not cross the mesh"
    );
    // The same capture sees what is sent in the clear: it would have seen the marker.
    let in_clear = lab.receive(lab.b.underlay, 7778);
    let plain = "VEIL-PLAIN-CONTROL-77c1";
    assert!(
        lab.send_until(
            plain,
            lab.b.underlay,
            7778,
            &in_clear,
            Duration::from_secs(10)
        ),
        "the control did not arrive"
    );
    // tcpdump writes each packet as it comes, in order; once the control is in the
    // file, so is everything sent before it.
    wait_for(
        Duration::from_secs(20),
        || std::fs::read(&pcap).is_ok_and(|c| contains(&c, plain)),
        "the capture to hold the cleartext control",
    );
    let captured = std::fs::read(&pcap).expect("capture");
    assert!(
        !contains(&captured, marker),
        "the mesh marker crossed the segment in the clear"
    );
    let summary = run(&["tcpdump", "-n", "-r", pcap.to_str().expect("utf-8 path")]);
    let wireguard = summary
        .lines()
        .filter(|l| l.contains(&format!(".{LISTEN_PORT} > ")))
        .count();
    // At least the marker's own packet (the handshake may have come before the capture:
    // the keepalive starts one as soon as a peer is configured).
    assert!(wireguard >= 1, "no WireGuard packets captured:\n{summary}");
}

#[test]
fn a_peer_with_another_mesh_secret_gets_no_session_until_the_secrets_agree() {
    let mut lab = Lab::new('2');
    Lab::configure(&lab.a, vec![lab.b.peer()], &secret(1));
    // Same X25519 keys, another cluster's mesh secret: the pair's preshared keys differ.
    Lab::configure(&lab.b, vec![lab.a.peer()], &secret(2));
    let received = lab.receive(lab.b.mesh, 7777);
    let marker = "VEIL-PSK-MISMATCH-0b1e";
    assert!(
        !lab.send_until(marker, lab.b.mesh, 7777, &received, Duration::from_secs(7)),
        "a handshake succeeded with different preshared keys"
    );
    Lab::configure(&lab.b, vec![lab.a.peer()], &secret(1));
    assert!(
        lab.send_until(marker, lab.b.mesh, 7777, &received, Duration::from_secs(20)),
        "with the same mesh secret the marker should cross"
    );
}

#[test]
fn a_peer_the_roster_drops_is_dropped_from_the_interface() {
    let mut lab = Lab::new('3');
    let s = secret(3);
    Lab::configure(&lab.a, vec![lab.b.peer()], &s);
    Lab::configure(&lab.b, vec![lab.a.peer()], &s);
    let received = lab.receive(lab.b.mesh, 7777);
    assert!(
        lab.send_until(
            "before-removal",
            lab.b.mesh,
            7777,
            &received,
            Duration::from_secs(20)
        ),
        "the mesh did not come up"
    );

    // Roster version 2 no longer names B: A applies the change.
    let plan = MeshPlan::new("10.90.0.0/16".parse().expect("cidr"), &[]).expect("plan");
    let mut table = PeerTable::new(lab.a.public, plan);
    table
        .apply(RosterView {
            version: 1,
            peers: vec![lab.b.peer()],
        })
        .expect("v1");
    let changes = table
        .apply(RosterView {
            version: 2,
            peers: vec![lab.a.peer()],
        })
        .expect("v2");
    assert_eq!(changes.removed, vec![lab.b.public]);
    WgInterface::userspace(&lab.a.wg)
        .expect("name")
        .apply(&lab.a.public, &changes, &s)
        .expect("apply");
    let peers = run(&["wg", "show", &lab.a.wg, "peers"]);
    assert!(peers.trim().is_empty(), "A still has peers: {peers}");
    assert!(
        !lab.send_until(
            "after-removal",
            lab.b.mesh,
            7777,
            &received,
            Duration::from_secs(4)
        ),
        "A still reaches the removed peer"
    );
}
