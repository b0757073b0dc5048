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
pub const MOUNT_POINT: &str = veil_protocol::paths::STATE_MOUNT;
/// systemd-repart definitions (not in repart.d, so the stock unit leaves disks alone).
pub const REPART_DEFINITIONS: &str = "/usr/lib/veil/repart.d";
/// Directories on the state disk and where they are bound.
pub const BINDS: [(&str, &str); 5] = [
    ("containerd", "/var/lib/containerd"),
    ("kubelet", "/var/lib/kubelet"),
    ("etcd", "/var/lib/etcd"),
    ("kubernetes", "/etc/kubernetes"),
    ("cni", "/etc/cni/net.d"),
];

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
    /// The volume's integrity protection (from its authenticated header).
    pub integrity: veil_disk::Integrity,
    /// The marker's contents (written at creation, read back afterwards).
    pub marker: String,
    /// How long each step took, in order (for the boot report and benchmarks).
    pub timings: Vec<(&'static str, Duration)>,
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
    parent_disk(root, first)
}

/// The disk a partition (`vda4`) belongs to, as `/dev/vda`.
pub fn parent_disk(root: &Path, partition: &str) -> Result<PathBuf> {
    let part = std::fs::canonicalize(root.join("sys/class/block").join(partition))
        .with_context(|| format!("resolving block device {partition}"))?;
    if !part.join("partition").exists() {
        bail!("{partition} is not a partition");
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

/// The state partition if it is on `disk`: a partition with that label on any other
/// disk (one attached by someone else) is refused, not used.
fn find_on(disk: &Path) -> Result<Option<StatePartition>> {
    let Some(found) = find(Path::new("/dev"))? else {
        return Ok(None);
    };
    let name = found
        .device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let on = parent_disk(Path::new("/"), &name)?;
    if on != disk {
        bail!(
            "the partition labelled {PARTITION_LABEL} ({}) is on {}, not on the root's disk {}: refusing it",
            found.device.display(),
            on.display(),
            disk.display()
        );
    }
    Ok(Some(found))
}

/// Finds the state partition on the root's disk, creating it first if there is none
/// (a partition created here has its header area cleared).
pub fn find_or_create(root_dev: &str) -> Result<StatePartition> {
    let disk = root_disk(Path::new("/"), root_dev)?;
    if let Some(found) = find_on(&disk)? {
        return Ok(found);
    }
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
        if let Some(found) = find_on(&disk)? {
            // The space was the image's tail (its old backup GPT lies there).
            veil_disk::clear_new_partition(&found.device)?;
            return Ok(found);
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

/// Unlocks the state partition with `key` (formatting it first when `create`), mounts
/// it and binds its directories. `integrity` is the cluster's setting where the node
/// knows it (a new disk is formatted with it; an existing one must have it); an
/// existing disk's header is checked and authenticated before it is used
/// (veil-disk). `marker` is written to a new disk.
pub fn open(
    part: &StatePartition,
    key: &[u8],
    create: bool,
    integrity: Option<veil_disk::Integrity>,
    marker: &str,
) -> Result<Opened> {
    let mut timings = Vec::new();
    let mut step = Instant::now();
    let mut lap = |name: &'static str| {
        timings.push((name, step.elapsed()));
        step = Instant::now();
    };
    let (mapped, integrity) = if create {
        let integrity =
            integrity.context("a new state disk needs the cluster's integrity setting")?;
        let (_, mapped) = veil_disk::format_and_unlock(&part.device, MAPPER_NAME, key, integrity)?;
        lap("luks-format-unlock");
        (mapped, integrity)
    } else {
        let opened = veil_disk::unlock(&part.device, MAPPER_NAME, key, integrity)?;
        lap("unlock");
        opened
    };
    if create && integrity != veil_disk::Integrity::None {
        veil_disk::wipe_new_volume(&part.device, &mapped)?;
        lap("integrity-wipe");
    }
    if create {
        run(Command::new("mkfs.ext4")
            .args(["-q", "-L", PARTITION_LABEL])
            .arg(&mapped))
        .context("making the state file system")?;
        lap("mkfs");
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
        // /var is a tmpfs (the targets are made here); /etc/kubernetes and
        // /etc/cni/net.d are in the image.
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
    lap("mount");
    // The marker: which cluster the disk was created for.
    let marker_path =
        Path::new(veil_protocol::paths::CLUSTER_DIR).join(veil_protocol::paths::CLUSTER_ID);
    let marker = if create {
        write_synced(&marker_path, format!("{marker}\n").as_bytes())?;
        lap("sync");
        marker.to_owned()
    } else {
        std::fs::read_to_string(&marker_path)
            .with_context(|| format!("reading {}", marker_path.display()))?
            .trim()
            .to_owned()
    };
    Ok(Opened {
        integrity,
        marker,
        timings,
    })
}

/// The size of a block device (from sysfs: 512-byte sectors), for the boot report.
pub fn size_bytes(device: &Path) -> Option<u64> {
    let name = device.file_name()?;
    let sectors =
        std::fs::read_to_string(Path::new("/sys/class/block").join(name).join("size")).ok()?;
    sectors.trim().parse::<u64>().ok().map(|s| s * 512)
}

/// Writes `contents` to a new file on the state disk and syncs the file system: a
/// node reports success only once its writes are on disk, since a cloud VM can be
/// reset at any moment and ext4 would otherwise hold the data back for seconds.
pub fn write_synced(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Mode 0600 whatever the umask: the WireGuard key is among these files, and
    // nothing else on the node needs to read any of them.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    nix::unistd::syncfs(&file)
        .with_context(|| format!("syncing the file system of {}", path.display()))?;
    Ok(())
}

/// Replaces `path` whole with `contents` (mode 0600, synced): a crash leaves the old
/// file or the new one, never half of either.
pub fn replace_synced(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    veil_protocol::paths::replace_file(path, contents)
        .with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_files_are_private_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("veil/wireguard.key");
        write_synced(&key, b"secret").expect("write");
        let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = write_synced(&key, b"other").expect_err("exists");
        assert!(format!("{e:#}").contains("wireguard.key"), "{e:#}");
        assert_eq!(std::fs::read(&key).expect("read"), b"secret");
    }

    /// A sysfs with disk `vda` (partitions vda2, vda3 under a dm root 254:0) and disk
    /// `vdb` (partition vdb1), linked the way the kernel does.
    fn fake_sysfs() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        for (disk, part) in [("vda", "vda2"), ("vda", "vda3"), ("vdb", "vdb1")] {
            let dir = r.join(format!("sys/devices/virtio/block/{disk}/{part}"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("partition"), "1\n").expect("partition");
            std::fs::create_dir_all(r.join("sys/class/block")).expect("mkdir");
            std::os::unix::fs::symlink(
                format!("../../devices/virtio/block/{disk}/{part}"),
                r.join("sys/class/block").join(part),
            )
            .expect("link");
        }
        let slaves = r.join("sys/dev/block/254:0/slaves");
        std::fs::create_dir_all(&slaves).expect("mkdir");
        for part in ["vda3", "vda2"] {
            std::fs::write(slaves.join(part), "").expect("slave");
        }
        std::fs::create_dir_all(r.join("sys/dev/block/8:1/slaves")).expect("mkdir");
        root
    }

    #[test]
    fn root_disk_is_the_parent_of_the_verity_roots_partitions() {
        let root = fake_sysfs();
        assert_eq!(
            root_disk(root.path(), "254:0").expect("root disk"),
            Path::new("/dev/vda")
        );
        assert_eq!(
            parent_disk(root.path(), "vdb1").expect("parent"),
            Path::new("/dev/vdb")
        );
    }

    #[test]
    fn a_root_on_no_partition_is_an_error_not_a_guess() {
        let root = fake_sysfs();
        // Like a host whose root is a plain partition: no slaves at all.
        let err = root_disk(root.path(), "8:1").expect_err("no slaves");
        assert!(err.to_string().contains("is empty"), "{err}");
        let err = root_disk(root.path(), "9:9").expect_err("no such device");
        assert!(err.to_string().contains("9:9"), "{err:#}");
    }
}
