//! Cross-checks against systemd 257's own tools and pesign, run from the trixie tools
//! tree that ci/ builds (`/var/cache/veil/tools-trixie-*`). When the tree is absent or
//! chroot is not possible, each test prints why and passes without checking.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TreeDir, run_in_tree, tools_tree};
use measured_boot::testing::{sample_kernel, sample_uki, sample_uki_sections};
use measured_boot::{Digest, Uki, UnifiedSection, authenticode_sha256, expected_pcrs};
use std::path::Path;

fn tree_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let t = tools_tree();
    // ci/test sets up the tools tree before the tests: in CI a missing tree is a
    // failure, not a reason to check nothing.
    assert!(
        t.is_some() || std::env::var_os("CI").is_none(),
        "{test}: CI is set but there is no usable tools tree at /var/cache/veil/tools-trixie-*"
    );
    if t.is_none() {
        println!(
            "skipped {test}: no usable tools tree at /var/cache/veil/tools-trixie-* (needs root for chroot)"
        );
    }
    t
}

/// `systemd-measure calculate` → (phase, value) for the four default phases.
fn systemd_measure(tree: &Path, args: &[String]) -> Vec<(String, Digest)> {
    let mut cmd = vec![
        "/usr/lib/systemd/systemd-measure".to_owned(),
        "calculate".to_owned(),
        "--bank=sha256".to_owned(),
        "--json=short".to_owned(),
    ];
    cmd.extend(args.iter().cloned());
    let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let out = run_in_tree(tree, &refs);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["sha256"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let phase = e["phase"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .to_owned();
            (
                phase,
                Digest::from_hex(e["hash"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

fn our_phases(uki: &Uki) -> Vec<(String, Digest)> {
    let e = expected_pcrs(uki).unwrap();
    e.pcr11_phases
        .into_iter()
        .filter(|(p, _)| ["enter-initrd", "leave-initrd", "sysinit", "ready"].contains(&p.as_str()))
        .collect()
}

fn pesign_hash(tree: &Path, file: &str) -> Digest {
    let out = run_in_tree(tree, &["pesign", "--hash", "--in", file]);
    Digest::from_hex(out.split_whitespace().next().unwrap()).unwrap()
}

#[test]
fn pcr11_matches_systemd_measure_on_the_sample_uki() {
    let Some(tree) = tree_or_skip("pcr11_matches_systemd_measure_on_the_sample_uki") else {
        return;
    };
    let dir = TreeDir::new(&tree, "sample");
    let mut args = vec![format!("--linux={}", dir.write("linux", &sample_kernel()))];
    for (name, data) in sample_uki_sections() {
        let opt = name.trim_start_matches('.');
        args.push(format!("--{opt}={}", dir.write(opt, &data)));
    }
    let uki = Uki::parse(sample_uki()).unwrap();
    assert_eq!(our_phases(&uki), systemd_measure(&tree, &args));
}

#[test]
fn ukify_built_uki_matches_systemd_measure_and_pesign() {
    let Some(tree) = tree_or_skip("ukify_built_uki_matches_systemd_measure_and_pesign") else {
        return;
    };
    let dir = TreeDir::new(&tree, "ukify");
    let kernel = sample_kernel();
    let cmdline = b"console=ttyS0 roothash=5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\n";
    let osrel = b"ID=debian\nVERSION_ID=\"13\"\n";
    let initrd: Vec<u8> = (0..70_001u32).map(|i| (i * 7 % 256) as u8).collect();
    let k = dir.write("linux", &kernel);
    let c = dir.write("cmdline", cmdline);
    let o = dir.write("osrel", osrel);
    let i = dir.write("initrd", &initrd);
    let out = format!("{}/uki.efi", dir.inside);
    run_in_tree(
        &tree,
        &[
            "/usr/lib/systemd/ukify",
            "build",
            &format!("--linux={k}"),
            &format!("--initrd={i}"),
            &format!("--cmdline=@{c}"),
            &format!("--os-release=@{o}"),
            "--uname=6.12.0-veil-test",
            &format!("--output={out}"),
        ],
    );
    let bytes = dir.read("uki.efi");
    let uki = Uki::parse(bytes.clone()).unwrap();

    // The sections we find are the files ukify was given.
    assert_eq!(&*uki.kernel(), &kernel[..]);
    assert_eq!(
        &*uki.section(UnifiedSection::Cmdline).unwrap(),
        &cmdline[..]
    );
    assert_eq!(&*uki.section(UnifiedSection::Osrel).unwrap(), &osrel[..]);
    assert_eq!(&*uki.section(UnifiedSection::Initrd).unwrap(), &initrd[..]);
    assert_eq!(uki.uname().as_deref(), Some("6.12.0-veil-test"));

    // PCR 11 against systemd-measure fed with the original files (plus the .sbat and
    // .uname ukify generated).
    let sbat = dir.write("sbat", &uki.section(UnifiedSection::Sbat).unwrap());
    let uname = dir.write("uname", b"6.12.0-veil-test");
    let args = vec![
        format!("--linux={k}"),
        format!("--osrel={o}"),
        format!("--cmdline={c}"),
        format!("--initrd={i}"),
        format!("--uname={uname}"),
        format!("--sbat={sbat}"),
    ];
    assert_eq!(our_phases(&uki), systemd_measure(&tree, &args));

    // Authenticode of a real systemd-stub based UKI and of the kernel, against pesign.
    assert_eq!(uki.authenticode().unwrap(), pesign_hash(&tree, &out));
    assert_eq!(
        authenticode_sha256("kernel", &kernel).unwrap(),
        pesign_hash(&tree, &k)
    );
    let stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
    let stub_bytes = std::fs::read(tree.join(stub.trim_start_matches('/'))).unwrap();
    assert_eq!(
        authenticode_sha256("stub", &stub_bytes).unwrap(),
        pesign_hash(&tree, stub)
    );
}
