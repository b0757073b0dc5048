//! Real software TPMs for tests: a hermetic swtpm local CA (never the system-wide
//! /var/lib/swtpm-localca) and swtpm processes provisioned with an EK certificate from it.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Runs `program` with none of this process's descriptors above 2, through a shell
/// that closes them before it execs (closing one already closed is no error, and no
/// redirection is used, which would make bash park stderr on a descriptor it closes). The swtpm TCTI connects anew for each TPM command
/// and does not set close-on-exec, so a child started by another test while a command
/// is in flight would inherit that connection and keep it open after this process has
/// closed it: swtpm serves one connection at a time and would wait on it for good,
/// and the node using that swtpm with it. (A node's own /dev/tpmrm0 has no such limit.)
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(
            r#"for fd in /proc/$$/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done; exec "$0" "$@""#,
        )
        .arg(program);
    cmd
}

/// A swtpm local CA in its own directory: swtpm_localca creates a root CA and an
/// intermediate ("issuercert") there on first use.
pub struct LocalCa {
    dir: TempDir,
}

impl LocalCa {
    pub fn new() -> LocalCa {
        let dir = tempfile::Builder::new()
            .prefix("veil-swtpm-ca-")
            .tempdir()
            .expect("CA tempdir");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("swtpm-localca.conf"),
            format!(
                "statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/issuercert.pem\ncertserial = {d}/certserial\n"
            ),
        )
        .expect("write swtpm-localca.conf");
        std::fs::write(
            dir.path().join("swtpm-localca.options"),
            "--platform-manufacturer Veil\n--platform-version 2.1\n--platform-model test\n",
        )
        .expect("write swtpm-localca.options");
        std::fs::write(
            dir.path().join("swtpm_setup.conf"),
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {d}/swtpm-localca.conf\ncreate_certs_tool_options = {d}/swtpm-localca.options\nactive_pcr_banks = sha256\n"
            ),
        )
        .expect("write swtpm_setup.conf");
        LocalCa { dir }
    }

    /// The CA shared by the tests of one process (creating one costs RSA-3072 keygen).
    pub fn shared() -> &'static LocalCa {
        static CA: OnceLock<LocalCa> = OnceLock::new();
        CA.get_or_init(LocalCa::new)
    }

    pub fn setup_conf(&self) -> PathBuf {
        self.dir.path().join("swtpm_setup.conf")
    }

    /// Root CA certificate (PEM); exists once a TPM was provisioned.
    pub fn root_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("swtpm-localca-rootca-cert.pem")).expect("root CA cert")
    }

    /// Intermediate CA certificate that signs EK certificates (PEM).
    pub fn intermediate_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("issuercert.pem")).expect("issuer cert")
    }

    pub fn trust(&self) -> veil_attest::tpm::EkTrust {
        veil_attest::tpm::EkTrust::from_pem(&self.root_pem())
            .and_then(|t| t.with_intermediates_pem(&self.intermediate_pem()))
            .expect("EK trust")
    }
}

/// A running swtpm, killed on drop.
pub struct Swtpm {
    child: Child,
    port: u16,
    _state: TempDir,
}

impl Swtpm {
    /// Provisions a new TPM state with an EK certificate from `ca` and starts swtpm.
    pub fn start(ca: &LocalCa) -> Swtpm {
        let state = tempfile::Builder::new()
            .prefix("veil-swtpm-")
            .tempdir()
            .expect("state tempdir");
        provision(state.path(), ca);
        for _ in 0..20 {
            let port = free_port_pair();
            let mut child = command("swtpm")
                .args(["socket", "--tpm2"])
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", state.path().display()))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn swtpm (is it installed?)");
            // Another process may have taken the port between our probe and swtpm's
            // bind; swtpm then exits and we try another pair.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                    return Swtpm {
                        child,
                        port,
                        _state: state,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        panic!("could not start swtpm on any port pair");
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provision(state: &Path, ca: &LocalCa) {
    let out = command("swtpm_setup")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(state)
        .args([
            "--create-ek-cert",
            "--create-platform-cert",
            "--lock-nvram",
            "--overwrite",
        ])
        .arg("--config")
        .arg(ca.setup_conf())
        .arg("--logfile")
        .arg(state.join("setup.log"))
        .output()
        .expect("run swtpm_setup (is swtpm-tools installed?)");
    let log = std::fs::read_to_string(state.join("setup.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "swtpm_setup failed: {}\n{}\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two consecutive free TCP ports P, P+1 (swtpm's control port must be P+1). Candidates
/// start at a per-process offset so parallel test processes rarely probe the same pairs.
fn free_port_pair() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = (std::process::id() % 2000) * 20;
    loop {
        let off = NEXT.fetch_add(2, Ordering::Relaxed);
        let port = u16::try_from(20000 + (base + off) % 40000).expect("port below 60000");
        let a = TcpListener::bind(("127.0.0.1", port));
        let b = TcpListener::bind(("127.0.0.1", port + 1));
        if a.is_ok() && b.is_ok() {
            return port;
        }
    }
}
