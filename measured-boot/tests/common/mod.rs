//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The trixie tools tree built by ci/ (systemd 257's systemd-measure, ukify, pesign),
/// if present and usable (chroot needs root).
pub fn tools_tree() -> Option<PathBuf> {
    let dir = std::fs::read_dir("/var/cache/veil").ok()?;
    let mut trees: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tools-trixie-"))
                && p.join("usr/lib/systemd/systemd-measure").exists()
        })
        .collect();
    trees.sort();
    let tree = trees.pop()?;
    // chroot needs root; check it works at all.
    let ok = Command::new("chroot")
        .arg(&tree)
        .arg("/bin/true")
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(tree)
}

/// Runs `args` inside the tools tree; returns stdout.
pub fn run_in_tree(tree: &Path, args: &[&str]) -> String {
    let out = Command::new("chroot")
        .arg(tree)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A scratch directory inside the tools tree, removed on drop.
pub struct TreeDir {
    pub host: PathBuf,
    pub inside: String,
}

impl TreeDir {
    pub fn new(tree: &Path, name: &str) -> TreeDir {
        let inside = format!("/tmp/measured-boot-test-{name}-{}", std::process::id());
        let host = tree.join(inside.trim_start_matches('/'));
        let _ = std::fs::remove_dir_all(&host);
        std::fs::create_dir_all(&host).unwrap();
        TreeDir { host, inside }
    }

    pub fn write(&self, name: &str, data: &[u8]) -> String {
        std::fs::write(self.host.join(name), data).unwrap();
        format!("{}/{name}", self.inside)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.host.join(name)).unwrap()
    }
}

impl Drop for TreeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.host);
    }
}

/// The diff of a UKI whose `.cmdline` changed (and nothing else) names exactly the
/// components that measure the command line.
pub fn assert_cmdline_change_named(lines: &[String]) {
    for want in [
        "PCR 11: .cmdline changed",
        "PCR 4: UKI PE hash changed",
        "PCR 9: kernel command line (LoadOptions) changed",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "no '{want}' in {lines:#?}"
        );
    }
}
