//! The node's container runtime and kubelet: systemd units in the image
//! (`units/system/{containerd,kubelet}.service`), started by the bootstrapper only
//! once the state disk they keep their data on is open; and the system images,
//! imported from the root's OCI archive into containerd's `k8s.io` namespace (the
//! only one the CRI sees) and pinned, so kubelet never collects them.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{KubeError, SYSTEM_IMAGE_LIST, SYSTEM_IMAGES};

pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// Label by which containerd's CRI marks an image that kubelet must never remove.
const PINNED: &str = "io.cri-containerd.pinned=pinned";

/// Runs `cmd` to completion; its stdout, or an error with what it printed.
pub fn run(cmd: &mut Command) -> Result<String, KubeError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| KubeError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if output.is_empty() {
            output = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        return Err(KubeError::Command {
            command,
            status: out.status.to_string(),
            output: tail(&output, 20),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Loads an nftables ruleset (`nft -f -`, one transaction: all of it or none);
/// `what` names it in an error.
pub fn nft(ruleset: &str, what: &str) -> Result<(), KubeError> {
    use std::io::Write;
    let command = format!("nft -f - ({what})");
    let spawn = |source| KubeError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if !out.status.success() {
        return Err(KubeError::Command {
            command,
            status: out.status.to_string(),
            output: tail(String::from_utf8_lossy(&out.stderr).trim(), 20),
        });
    }
    Ok(())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `systemctl start UNIT`: returns once the unit is up (containerd and kubelet are
/// Type=notify).
pub fn start_unit(unit: &str) -> Result<(), KubeError> {
    run(Command::new("systemctl").args(["start", unit])).map(|_| ())
}

/// Starts containerd and waits for its socket.
pub fn start_containerd(timeout: Duration) -> Result<(), KubeError> {
    start_unit("containerd.service")?;
    let deadline = Instant::now() + timeout;
    while !Path::new(CONTAINERD_SOCKET).exists() {
        if Instant::now() > deadline {
            return Err(KubeError::Timeout {
                what: format!("containerd's socket {CONTAINERD_SOCKET}"),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn ctr() -> Command {
    let mut c = Command::new("ctr");
    c.args(["--address", CONTAINERD_SOCKET, "--namespace", "k8s.io"]);
    c
}

/// The system image names the image was built with.
pub fn system_image_names(list: &Path) -> Result<Vec<String>, KubeError> {
    let text = std::fs::read_to_string(list).map_err(|source| KubeError::Read {
        path: list.to_owned(),
        source,
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err(KubeError::Malformed {
            path: list.to_owned(),
            reason: "it names no image".into(),
        });
    }
    Ok(names)
}

/// Imports the root's system images into containerd (again at every boot: importing
/// what is there costs little, and it restores an image someone removed), checks
/// that each one kubeadm will ask for is there, and pins them. Returns their names.
pub fn import_system_images() -> Result<Vec<String>, KubeError> {
    let names = system_image_names(Path::new(SYSTEM_IMAGE_LIST))?;
    run(ctr().args(["images", "import"]).arg(SYSTEM_IMAGES))?;
    let present = run(ctr().args(["images", "list", "--quiet"]))?;
    let present: Vec<&str> = present.lines().map(str::trim).collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !present.contains(&n.as_str()))
        .collect();
    if !missing.is_empty() {
        return Err(KubeError::Malformed {
            path: SYSTEM_IMAGES.into(),
            reason: format!("after importing it, containerd lacks {missing:?}"),
        });
    }
    for name in &names {
        run(ctr().args(["images", "label", name, PINNED]))?;
    }
    Ok(names)
}
