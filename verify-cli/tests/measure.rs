//! Runs the `veil` binary on synthetic images built in the test.
#![allow(clippy::unwrap_used)]

use measured_boot::testing::{SAMPLE_ROOTHASH, disk_with_uki, sample_uki};
use measured_boot::{Uki, expected_pcrs};
use std::process::Command;

fn veil(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn measure_json_has_the_reference_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("veil.raw");
    let uki = sample_uki();
    std::fs::write(&path, disk_with_uki(&uki)).unwrap();

    let out = veil(&[
        "measure".as_ref(),
        path.as_os_str(),
        "--output".as_ref(),
        "json".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let expected = expected_pcrs(&Uki::parse(uki.clone()).unwrap()).unwrap();
    let pcrs = v["pcrs"].as_object().unwrap();
    let mut keys: Vec<u32> = pcrs.keys().map(|k| k.parse().unwrap()).collect();
    keys.sort();
    assert_eq!(keys, [4, 9, 11, 12, 13]);
    // Written in numeric order, phases in boot order.
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let at = |s: &str| text.find(s).unwrap();
    assert!(at("\"4\"") < at("\"9\"") && at("\"9\"") < at("\"11\"") && at("\"11\"") < at("\"12\""));
    assert!(at("\"stub\"") < at("\"enter-initrd\"") && at("\"sysinit\"") < at("\"ready\""));
    for (k, want) in [
        ("4", expected.pcr4),
        ("9", expected.pcr9),
        ("11", expected.pcr11),
        ("12", expected.pcr12),
        ("13", expected.pcr13),
    ] {
        assert_eq!(pcrs[k]["expected"], want.to_hex(), "PCR {k}");
        assert_eq!(pcrs[k]["warnOnly"], false, "PCR {k}");
    }
    assert_eq!(pcrs["12"]["expected"], "0".repeat(64));
    let phases = pcrs["11"]["phases"].as_object().unwrap();
    let mut names: Vec<&str> = phases.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "enter-initrd",
            "final",
            "leave-initrd",
            "ready",
            "shutdown",
            "stub",
            "sysinit"
        ]
    );
    assert_eq!(phases["ready"], pcrs["11"]["expected"]);
    assert!(pcrs["4"].get("phases").is_none());

    let image = &v["image"];
    assert_eq!(image["ukiSha256"], measured_boot::Digest::of(&uki).to_hex());
    assert_eq!(image["roothash"], SAMPLE_ROOTHASH);
    assert_eq!(image["osRelease"]["ID"], "debian");
    assert_eq!(image["kernelVersion"], "6.12.48+deb13-cloud-amd64");

    // The verifier side reads the same file back.
    let r =
        measured_boot::ReferenceMeasurements::from_json(std::str::from_utf8(&out.stdout).unwrap())
            .unwrap();
    assert_eq!(
        r.pcrs[&11].phases.get("stub"),
        Some(expected.pcr11_phases[0].1)
    );
}

#[test]
fn measure_table_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("veil.efi");
    std::fs::write(&path, sample_uki()).unwrap();
    let out = veil(&["measure".as_ref(), path.as_os_str()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("image:       UKI file"), "{text}");
    assert!(
        text.contains(&format!("roothash:    {SAMPLE_ROOTHASH}")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("11 ") && l.ends_with("enforced")),
        "{text}"
    );

    let bad = dir.path().join("notes.txt");
    std::fs::write(&bad, "hello\n".repeat(200)).unwrap();
    let out = veil(&["measure".as_ref(), bad.as_os_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("notes.txt: not a disk image or a UKI"),
        "{err}"
    );
}

#[test]
fn measure_records_a_profile_only_when_given_and_refuses_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("veil.raw");
    std::fs::write(&path, disk_with_uki(&sample_uki())).unwrap();
    let json = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "measure".as_ref(),
            path.as_os_str(),
            "--output".as_ref(),
            "json".as_ref(),
        ];
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        veil(&args)
    };
    let plain: serde_json::Value = serde_json::from_slice(&json(&[]).stdout).unwrap();
    assert!(plain.get("profile").is_none(), "{plain}");
    let out = json(&["--profile", "gcp-tdx"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["profile"], "gcp-tdx");
    assert_eq!(v["pcrs"], plain["pcrs"], "the profile changes no PCR");
    let out = json(&["--profile", "azure"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'azure' is not a profile"), "{stderr}");
}
