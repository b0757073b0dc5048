//! TPM event logs, and replaying them to PCR values (sha256 bank).
//!
//! * The firmware log, `/sys/kernel/security/tpm0/binary_bios_measurements`: TCG PC
//!   Client Platform Firmware Profile (PFP) 1.05 §10.2: a first `TCG_PCR_EVENT` in the
//!   SHA-1 format whose data is the `TCG_EfiSpecIDEvent` ("Spec ID Event03"), which lists
//!   the digest sizes of every algorithm; then `TCG_PCR_EVENT2` records: PCRIndex (u32),
//!   EventType (u32), `TPML_DIGEST_VALUES` (count u32, then {AlgorithmId u16, digest}),
//!   EventSize (u32), Event.
//! * systemd's userspace log, `/run/log/systemd/tpm2-measure.log`: JSON-SEQ (RFC 7464),
//!   each record `0x1E`, a JSON object, `\n`; the object has "pcr", "digests"
//!   (`[{"hashAlg":"sha256","digest":"<hex>"}]`), "content_type", "content".

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::pcr::event_type::*;
use std::collections::BTreeMap;

/// TPM_ALG_SHA256 (TCG Algorithm Registry).
pub const TPM_ALG_SHA256: u16 = 0x000b;
/// TPM_ALG_SHA1.
pub const TPM_ALG_SHA1: u16 = 0x0004;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The firmware's TCG log (firmware, systemd-stub, Linux EFI stub).
    Firmware,
    /// systemd's userspace measurement log.
    Userspace,
}

/// One event of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub source: LogSource,
    /// Byte offset of the record in its log.
    pub offset: u64,
    pub pcr: u32,
    /// TCG event type; for userspace records `EV_IPL`.
    pub event_type: u32,
    /// The sha256 digest, if the record has one.
    pub sha256: Option<Digest>,
    /// The event data (firmware) or the JSON "content" (userspace).
    pub data: Vec<u8>,
    /// A readable description of the data.
    pub description: String,
}

/// The events of one or more logs, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLog {
    pub events: Vec<LogEvent>,
    /// PCR 0's initial value comes from the StartupLocality event (PFP §10.4.5.3).
    pub startup_locality: Option<u8>,
}

struct Cursor<'a> {
    input: &'a str,
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n);
        let s = end.and_then(|e| self.b.get(self.at..e)).ok_or_else(|| {
            Error::bad_log(
                self.input,
                self.at as u64,
                format!(
                    "{what} needs {n} bytes, {} left",
                    self.b.len() - self.at.min(self.b.len())
                ),
            )
        })?;
        self.at += n;
        Ok(s)
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn left(&self) -> &'a [u8] {
        self.b.get(self.at..).unwrap_or_default()
    }
}

/// Events larger than this are treated as damage, not as data.
const MAX_EVENT: u32 = 64 << 20;

impl EventLog {
    /// Parses a binary crypto-agile TCG log. `input` names it in errors.
    pub fn parse_tcg(input: &str, bytes: &[u8]) -> Result<EventLog> {
        let mut c = Cursor {
            input,
            b: bytes,
            at: 0,
        };
        // The first event: TCG_PCR_EVENT (SHA-1 format) carrying the Spec ID event.
        let _pcr = c.u32("first event PCRIndex")?;
        let ty = c.u32("first event EventType")?;
        if ty != EV_NO_ACTION {
            return Err(Error::bad_log(
                input,
                4,
                format!("first event has type {ty:#x}, not EV_NO_ACTION"),
            ));
        }
        c.take(20, "first event SHA-1 digest")?;
        let size = c.u32("first event EventSize")?;
        let spec_at = c.at;
        let spec = c.take(size as usize, "Spec ID event")?;
        let mut s = Cursor {
            input,
            b: spec,
            at: 0,
        };
        let sig = s.take(16, "Spec ID signature")?;
        if sig != b"Spec ID Event03\0" {
            return Err(Error::bad_log(
                input,
                spec_at as u64,
                "no \"Spec ID Event03\" signature: not a crypto-agile log",
            ));
        }
        s.take(4 + 4, "Spec ID platform class and version")?;
        let n_algs = s.u32("Spec ID numberOfAlgorithms")?;
        if n_algs == 0 || n_algs > 32 {
            return Err(Error::bad_log(
                input,
                spec_at as u64,
                format!("Spec ID lists {n_algs} algorithms"),
            ));
        }
        let mut sizes = BTreeMap::new();
        for _ in 0..n_algs {
            let alg = s.u16("Spec ID algorithmId")?;
            let size = s.u16("Spec ID digestSize")?;
            sizes.insert(alg, usize::from(size));
        }

        let mut log = EventLog::default();
        while c.at < bytes.len() {
            // Some firmware pads the log area; all-0xFF or all-zero tails end the log.
            let rest = c.left();
            if rest.iter().all(|&b| b == 0xff) || rest.iter().all(|&b| b == 0) {
                break;
            }
            let offset = c.at as u64;
            let pcr = c.u32("PCRIndex")?;
            let event_type = c.u32("EventType")?;
            let count = c.u32("digest count")?;
            if count > 32 {
                return Err(Error::bad_log(
                    input,
                    offset,
                    format!("event has {count} digests"),
                ));
            }
            let mut sha256 = None;
            for _ in 0..count {
                let alg_at = c.at as u64;
                let alg = c.u16("AlgorithmId")?;
                let size = *sizes.get(&alg).ok_or_else(|| {
                    Error::bad_log(
                        input,
                        alg_at,
                        format!("digest algorithm {alg:#06x} not in the Spec ID event"),
                    )
                })?;
                let d = c.take(size, "digest")?;
                if alg == TPM_ALG_SHA256 {
                    let mut a = [0u8; 32];
                    if d.len() == 32 {
                        a.copy_from_slice(d);
                        sha256 = Some(Digest(a));
                    }
                }
            }
            let size = c.u32("EventSize")?;
            if size > MAX_EVENT {
                return Err(Error::bad_log(
                    input,
                    offset,
                    format!("EventSize {size} is implausible"),
                ));
            }
            let data = c.take(size as usize, "event data")?.to_vec();
            if event_type == EV_NO_ACTION && data.starts_with(b"StartupLocality\0") {
                log.startup_locality = data.get(16).copied();
            }
            let description = describe(event_type, &data);
            log.events.push(LogEvent {
                source: LogSource::Firmware,
                offset,
                pcr,
                event_type,
                sha256,
                data,
                description,
            });
        }
        Ok(log)
    }

    /// Parses systemd's JSON-SEQ userspace measurement log.
    pub fn parse_systemd_json(input: &str, bytes: &[u8]) -> Result<EventLog> {
        let mut log = EventLog::default();
        let mut offset = 0usize;
        for chunk in bytes.split(|&b| b == 0x1e) {
            let at = offset;
            offset += chunk.len() + 1;
            let text = std::str::from_utf8(chunk)
                .map_err(|e| Error::bad_log(input, at as u64, format!("not UTF-8: {e}")))?;
            if text.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| Error::bad_log(input, at as u64, format!("not a JSON record: {e}")))?;
            let pcr = v
                .get("pcr")
                .and_then(serde_json::Value::as_u64)
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| Error::bad_log(input, at as u64, "record has no numeric \"pcr\""))?;
            let digests = v
                .get("digests")
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| {
                    Error::bad_log(input, at as u64, "record has no \"digests\" array")
                })?;
            let mut sha256 = None;
            for d in digests {
                if d.get("hashAlg").and_then(serde_json::Value::as_str) == Some("sha256") {
                    let hexd = d
                        .get("digest")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("");
                    sha256 = Some(Digest::from_hex(hexd).ok_or_else(|| {
                        Error::bad_log(input, at as u64, format!("bad sha256 digest {hexd:?}"))
                    })?);
                }
            }
            let content = v.get("content").cloned().unwrap_or(serde_json::Value::Null);
            let description = match (v.get("content_type").and_then(|t| t.as_str()), &content) {
                (_, serde_json::Value::Object(o)) => match (o.get("eventType"), o.get("string")) {
                    (Some(t), Some(s)) => format!(
                        "{}: {}",
                        t.as_str().unwrap_or("?"),
                        s.as_str().unwrap_or("?")
                    ),
                    _ => content.to_string(),
                },
                (Some(t), _) => t.to_owned(),
                _ => String::new(),
            };
            log.events.push(LogEvent {
                source: LogSource::Userspace,
                offset: at as u64,
                pcr,
                event_type: EV_IPL,
                sha256,
                data: content.to_string().into_bytes(),
                description,
            });
        }
        Ok(log)
    }

    /// Appends another log's events (the userspace log after the firmware log).
    pub fn append(&mut self, other: EventLog) {
        self.events.extend(other.events);
        if self.startup_locality.is_none() {
            self.startup_locality = other.startup_locality;
        }
    }

    /// The events that extend `pcr` (EV_NO_ACTION does not extend).
    pub fn extends(&self, pcr: u32) -> impl Iterator<Item = &LogEvent> {
        self.events
            .iter()
            .filter(move |e| e.pcr == pcr && e.event_type != EV_NO_ACTION)
    }

    /// Replays the sha256 bank: PCR index → value.
    pub fn replay(&self) -> BTreeMap<u32, Digest> {
        let mut pcrs: BTreeMap<u32, Digest> = BTreeMap::new();
        for e in &self.events {
            if e.event_type == EV_NO_ACTION {
                continue;
            }
            let Some(d) = e.sha256 else { continue };
            let pcr = pcrs.entry(e.pcr).or_insert_with(|| {
                let mut init = Digest::ZERO;
                if e.pcr == 0 {
                    init.0[31] = self.startup_locality.unwrap_or(0);
                }
                init
            });
            *pcr = pcr.extend(&d);
        }
        pcrs
    }
}

fn utf16_text(data: &[u8]) -> Option<String> {
    if data.len() < 2 || data.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let s = String::from_utf16(&units).ok()?;
    (!s.is_empty() && s.chars().all(|c| !c.is_control())).then_some(s)
}

fn ascii_text(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(data.get(..end).unwrap_or_default()).into_owned()
}

/// A short description of an event's data, for diffs.
fn describe(event_type: u32, data: &[u8]) -> String {
    match event_type {
        EV_EFI_ACTION | EV_ACTION => ascii_text(data),
        EV_SEPARATOR => "separator".into(),
        EV_EFI_BOOT_SERVICES_APPLICATION => "EFI application".into(),
        EV_IPL => utf16_text(data).unwrap_or_else(|| ascii_text(data)),
        EV_EVENT_TAG => {
            // TCG_PCClientTaggedEvent: taggedEventID u32, size u32, data.
            let id = data
                .get(0..4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let text = ascii_text(data.get(8..).unwrap_or_default());
            format!("tag {id:#010x} {text}")
        }
        EV_NO_ACTION => ascii_text(data),
        t => format!("event type {t:#x}"),
    }
}
