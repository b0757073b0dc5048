//! Parsing and replaying TCG and systemd logs, and explaining mismatches.
#![allow(clippy::unwrap_used)]

mod common;
use measured_boot::eventlog::LogSource;
use measured_boot::testing::{
    LogRecord, build_uki, firmware_log_for, sample_kernel, sample_uki, sample_uki_sections,
    tcg_log, userspace_log_for,
};
use measured_boot::{
    Digest, Error, EventLog, Uki, diff_against_log, diff_reference_against_log, expected_pcrs,
};

fn booted_log(uki: &Uki) -> EventLog {
    let e = expected_pcrs(uki).unwrap();
    let mut log = EventLog::parse_tcg("bios.log", &firmware_log_for(&e)).unwrap();
    log.append(EventLog::parse_systemd_json("tpm2-measure.log", &userspace_log_for(&e)).unwrap());
    log
}

/// The sample UKI with another `.cmdline`.
fn changed_cmdline_uki() -> Uki {
    let mut sections = sample_uki_sections();
    sections[1].1 = b"console=ttyS0 init=/bin/sh".to_vec();
    Uki::parse(build_uki(&sample_kernel(), &sections)).unwrap()
}

#[test]
fn replaying_a_matching_log_gives_the_expected_pcrs() {
    let uki = Uki::parse(sample_uki()).unwrap();
    let e = expected_pcrs(&uki).unwrap();
    let log = booted_log(&uki);
    let pcrs = log.replay();
    assert_eq!(pcrs[&4], e.pcr4);
    assert_eq!(pcrs[&9], e.pcr9);
    assert_eq!(pcrs[&11], e.pcr11);
    assert!(!pcrs.contains_key(&12));
    assert!(diff_against_log(&e, &log).is_empty());
    // Descriptions come from the event data.
    let first11 = log.extends(11).next().unwrap();
    assert_eq!(first11.description, ".linux");
    assert_eq!(first11.source, LogSource::Firmware);
    let last11 = log.extends(11).last().unwrap();
    assert_eq!(last11.source, LogSource::Userspace);
    assert_eq!(last11.description, "phase: ready");
}

#[test]
fn pcr0_starts_at_the_startup_locality() {
    let log = EventLog::parse_tcg("t", &tcg_log(&[])).unwrap();
    assert_eq!(log.startup_locality, Some(0));
    let d = Digest::of(b"x");
    let log = EventLog::parse_tcg(
        "t",
        &tcg_log(&[LogRecord {
            pcr: 0,
            event_type: 1,
            sha256: d,
            data: vec![],
        }]),
    )
    .unwrap();
    assert_eq!(log.replay()[&0], Digest::ZERO.extend(&d));
}

#[test]
fn a_node_with_another_cmdline_is_explained() {
    let expected_uki = Uki::parse(sample_uki()).unwrap();
    let booted = changed_cmdline_uki();
    let diffs = diff_against_log(&expected_pcrs(&expected_uki).unwrap(), &booted_log(&booted));
    let lines: Vec<String> = diffs.iter().map(ToString::to_string).collect();
    common::assert_cmdline_change_named(&lines);
    assert!(!lines.iter().any(|l| l.contains("initrd")), "{lines:#?}");
}

#[test]
fn an_extra_measurement_is_unexpected() {
    let uki = Uki::parse(sample_uki()).unwrap();
    let e = expected_pcrs(&uki).unwrap();
    let mut bytes = firmware_log_for(&e);
    // A credential cpio measured into PCR 12 by the stub.
    let extra = tcg_log(&[LogRecord {
        pcr: 12,
        event_type: 0xd,
        sha256: Digest::of(b"cpio"),
        data: "Credentials initrd\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect(),
    }]);
    // Append just the record (skip the extra log's header events).
    let header_len = tcg_log(&[]).len();
    bytes.extend_from_slice(&extra[header_len..]);
    let log = EventLog::parse_tcg("t", &bytes).unwrap();
    let lines: Vec<String> = diff_against_log(&e, &log)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PCR 12: unexpected extra measurement: Credentials initrd")),
        "{lines:#?}"
    );
}

#[test]
fn damaged_tcg_log_names_the_offset() {
    let uki = Uki::parse(sample_uki()).unwrap();
    let bytes = firmware_log_for(&expected_pcrs(&uki).unwrap());
    let cut = &bytes[..bytes.len() - 3];
    let e = EventLog::parse_tcg("binary_bios_measurements", cut).unwrap_err();
    assert!(matches!(e, Error::BadEventLog { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("binary_bios_measurements: damaged event log at offset "),
        "{msg}"
    );
    assert!(msg.contains("event data"), "{msg}");

    let e = EventLog::parse_tcg("log", b"\0\0\0\0\x01\0\0\0").unwrap_err();
    assert!(e.to_string().contains("not EV_NO_ACTION"), "{e}");
    let mut sha1_only = tcg_log(&[]);
    sha1_only[32..47].copy_from_slice(b"Spec ID Event02");
    let e = EventLog::parse_tcg("log", &sha1_only).unwrap_err();
    assert!(e.to_string().contains("not a crypto-agile log"), "{e}");
}

#[test]
fn damaged_systemd_log_names_the_offset() {
    let good = "\u{1e}{\"pcr\":11,\"digests\":[{\"hashAlg\":\"sha256\",\"digest\":\"00\"}]}\n";
    let e = EventLog::parse_systemd_json("tpm2-measure.log", good.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("bad sha256 digest"), "{e}");
    let bad = "\u{1e}{\"pcr\":11,\"digests\":[]}\n\u{1e}{not json\n";
    let e = EventLog::parse_systemd_json("tpm2-measure.log", bad.as_bytes()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("tpm2-measure.log: damaged event log at offset 26: not a JSON record"),
        "{e}"
    );
}

/// The PCRs a node with this log would quote (its log replays to them).
fn quoted(log: &EventLog) -> std::collections::BTreeMap<u32, Digest> {
    let mut q = log.replay();
    for pcr in [4, 9, 11, 12, 13] {
        q.entry(pcr).or_insert(Digest::ZERO);
    }
    q
}

#[test]
fn reference_file_names_the_component_from_a_quoted_nodes_log() {
    let expected_uki = Uki::parse(sample_uki()).unwrap();
    let reference = measured_boot::ReferenceMeasurements::new(
        &expected_pcrs(&expected_uki).unwrap(),
        &expected_uki,
    );
    // Through JSON, as `veil verify` reads it.
    let reference = measured_boot::ReferenceMeasurements::from_json(&reference.to_json()).unwrap();
    assert!(!reference.pcrs[&11].events.is_empty());

    // The same image: nothing to explain.
    let log = booted_log(&expected_uki);
    assert!(diff_reference_against_log(&reference, &quoted(&log), &log).is_empty());

    let booted = changed_cmdline_uki();
    let log = booted_log(&booted);
    let lines: Vec<String> = diff_reference_against_log(&reference, &quoted(&log), &log)
        .iter()
        .map(ToString::to_string)
        .collect();
    common::assert_cmdline_change_named(&lines);
}

#[test]
fn a_log_that_does_not_replay_to_the_quote_is_not_believed() {
    let expected_uki = Uki::parse(sample_uki()).unwrap();
    let reference = measured_boot::ReferenceMeasurements::new(
        &expected_pcrs(&expected_uki).unwrap(),
        &expected_uki,
    );
    // The node quotes a PCR 11 its (honest-looking) log does not account for.
    let log = booted_log(&expected_uki);
    let mut q = quoted(&log);
    q.insert(11, Digest::of(b"something else"));
    let diffs = diff_reference_against_log(&reference, &q, &log);
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    let line = diffs[0].to_string();
    assert!(line.starts_with("PCR 11: differs"), "{line}");
    assert!(line.contains("cannot name the component"), "{line}");

    // A reference without events (older format) says so rather than guessing.
    let mut bare = reference.clone();
    for p in bare.pcrs.values_mut() {
        p.events.clear();
    }
    let booted = changed_cmdline_uki();
    let log = booted_log(&booted);
    let lines: Vec<String> = diff_reference_against_log(&bare, &quoted(&log), &log)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PCR 11: differs") && l.contains("lists no extends")),
        "{lines:#?}"
    );
}
