//! The node's state partition: found by its GPT label, or created with systemd-repart
//! on the disk that holds the root; then unlocked with the disk key (veil-disk),
//! mounted, and bound into the places Kubernetes writes. Until then nothing a node
//! writes outlives a reboot (`/var` is a tmpfs, the root is read-only).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount};

/// GPT partition label of the state partition.
pub const PARTITION_LABEL: &str = "veil-state";
/// The unlocked volume: `/dev/mapper/veil-state`.
pub const MAPPER_NAME: &str = "veil-state";
/// Where the unlocked file system is mounted.
pub const MOUNT_POINT: &str = "/var/lib/veil/state";
/// systemd-repart definitions (not in repart.d, so the stock unit leaves disks alone).
pub const REPART_DEFINITIONS: &str = "/usr/lib/veil/repart.d";
/// Directories on the state disk and where they are bound.
pub const BINDS: [(&str, &str); 4] = [
    ("containerd", "/var/lib/containerd"),
    ("kubelet", "/var/lib/kubelet"),
    ("etcd", "/var/lib/etcd"),
    ("kubernetes", "/etc/kubernetes"),
];
/// File on the state disk naming the cluster it was created for.
const MARKER: &str = "veil/cluster";

/// A located state partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePartition {
    pub device: PathBuf,
    /// GPT partition UUID (lower case): the disk key is derived for it.
    pub partuuid: String,
}

/// What opening the state disk did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Formatted now (first boot of this node).
    pub created: bool,
    /// The marker's contents (written at creation, read back afterwards).
    pub marker: String,
}

/// The whole disk holding the root file system: the parent of the first device under
/// the root's device-mapper device (`root_dev` is `major:minor`). `root` is `/` except
/// in tests.
pub fn root_disk(root: &Path, root_dev: &str) -> Result<PathBuf> {
    let slaves = root.join(format!("sys/dev/block/{root_dev}/slaves"));
    let mut names: Vec<String> = std::fs::read_dir(&slaves)
        .with_context(|| format!("listing {}", slaves.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let first = names.first().with_context(|| {
        format!(
            "{} is empty: the root is not on a partition",
            slaves.display()
        )
    })?;
    let part = std::fs::canonicalize(root.join("sys/class/block").join(first))
        .with_context(|| format!("resolving block device {first}"))?;
    if !part.join("partition").exists() {
        bail!("{first}, under the root, is not a partition");
    }
    let disk = part
        .parent()
        .and_then(Path::file_name)
        .with_context(|| format!("no parent disk for {}", part.display()))?;
    Ok(Path::new("/dev").join(disk))
}

/// The state partition, if udev knows it (`/dev/disk/by-partlabel/veil-state`).
pub fn find(dev: &Path) -> Result<Option<StatePartition>> {
    let link = dev.join("disk/by-partlabel").join(PARTITION_LABEL);
    let Ok(device) = std::fs::canonicalize(&link) else {
        return Ok(None);
    };
    let by_uuid = dev.join("disk/by-partuuid");
    let entries =
        std::fs::read_dir(&by_uuid).with_context(|| format!("listing {}", by_uuid.display()))?;
    for entry in entries.flatten() {
        if std::fs::canonicalize(entry.path()).ok().as_deref() == Some(device.as_path()) {
            return Ok(Some(StatePartition {
                device,
                partuuid: entry.file_name().to_string_lossy().to_ascii_lowercase(),
            }));
        }
    }
    bail!(
        "{} has no link in {}: cannot tell its partition UUID",
        device.display(),
        by_uuid.display()
    )
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Finds the state partition, creating it first if the root disk has none (then the
/// second value is true and its header area has been cleared).
pub fn find_or_create(root_dev: &str) -> Result<(StatePartition, bool)> {
    if let Some(found) = find(Path::new("/dev"))? {
        return Ok((found, false));
    }
    let disk = root_disk(Path::new("/"), root_dev)?;
    tracing::info!(disk = %disk.display(), "creating the state partition");
    run(Command::new("systemd-repart")
        .args(["--dry-run=no", "--no-pager"])
        .arg(format!("--definitions={REPART_DEFINITIONS}"))
        .arg(&disk))
    .context("creating the state partition")?;
    let _ = Command::new("udevadm")
        .args(["settle", "--timeout=30"])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = find(Path::new("/dev"))? {
            // The space was the image's tail (its old backup GPT lies there).
            veil_disk::clear_new_partition(&found.device)?;
            return Ok((found, true));
        }
        if Instant::now() > deadline {
            bail!(
                "systemd-repart ran on {} but no partition labelled {PARTITION_LABEL} appeared",
                disk.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Unlocks the state partition with `key` (formatting it first when `create`),
/// mounts it and binds its directories. `marker` is written to a new disk.
pub fn open(part: &StatePartition, key: &[u8], create: bool, marker: &str) -> Result<Opened> {
    if create {
        veil_disk::format(&part.device, key)?;
    }
    let mapped = veil_disk::unlock(&part.device, MAPPER_NAME, key)?;
    if create {
        run(Command::new("mkfs.ext4")
            .args(["-q", "-L", PARTITION_LABEL])
            .arg(&mapped))
        .context("making the state file system")?;
    }
    std::fs::create_dir_all(MOUNT_POINT).with_context(|| format!("creating {MOUNT_POINT}"))?;
    mount(
        Some(&mapped),
        MOUNT_POINT,
        Some("ext4"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .with_context(|| format!("mounting {} on {MOUNT_POINT}", mapped.display()))?;
    for (dir, target) in BINDS {
        let source = Path::new(MOUNT_POINT).join(dir);
        std::fs::create_dir_all(&source)
            .with_context(|| format!("creating {}", source.display()))?;
        // /var is a tmpfs (the targets are made here); /etc/kubernetes is in the image.
        std::fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
        mount(
            Some(&source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("binding {} to {target}", source.display()))?;
    }
    let marker_path = Path::new(MOUNT_POINT).join(MARKER);
    let marker = if create {
        if let Some(parent) = marker_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&marker_path, format!("{marker}\n"))
            .with_context(|| format!("writing {}", marker_path.display()))?;
        marker.to_owned()
    } else {
        std::fs::read_to_string(&marker_path)
            .with_context(|| format!("reading {}", marker_path.display()))?
            .trim()
            .to_owned()
    };
    Ok(Opened {
        created: create,
        marker,
    })
}
