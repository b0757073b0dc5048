//! The LUKS2 header is the host's to write: it can set the data segment's cipher to
//! `cipher_null`, make a keyslot decrypt to a volume key it knows, and recompute the
//! header checksums (they are unkeyed); the node's correct key may then still "open"
//! the volume, and everything the node writes lands in the clear or under the host's
//! key (the attack class of CVE-2025-59054 and CVE-2025-58356). So before the node
//! uses a header it:
//!
//! 1. checks it is exactly what Veil writes ([`check_structure`]): one crypt segment
//!    with aes-xts-plain64 (and the cluster's integrity setting), one keyslot with a
//!    512-bit key, an aes-xts-plain64 key area and PBKDF2-SHA256, one PBKDF2 digest,
//!    no `cipher_null` anywhere, no reencryption or other requirements, no tokens but
//!    Veil's; anything else is refused, naming what differs;
//! 2. checks its MAC ([`verify_mac`]): HMAC-SHA256 over the header's JSON in a
//!    canonical form (keys sorted, no whitespace, Veil's token left out), under a key
//!    derived from the disk key with HKDF-SHA256 (`veil/v1/luks2-header-mac`), kept in
//!    a LUKS2 token of type [`TOKEN_TYPE`]. The host does not have the disk key, so it
//!    cannot make a header whose values look plausible but differ from Veil's.
//!
//! Only then is the key tried on it, from the same loaded copy of the header; and
//! once the volume is active, what the kernel runs (its dm-crypt table) is checked
//! against it too, so a header changed on the disk in between does not matter.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{Integrity, KEYSLOT_ITERATIONS, VOLUME_KEY_LEN};

/// The LUKS2 token that holds the header's MAC.
pub const TOKEN_TYPE: &str = "veil-header-mac";
const MAC_INFO: &[u8] = b"veil/v1/luks2-header-mac";
const CIPHER: &str = "aes-xts-plain64";

/// The MAC key for the header of a volume whose disk key is `disk_key`.
pub fn mac_key(disk_key: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 8160: this cannot fail.
    let _ = hkdf::Hkdf::<Sha256>::new(None, disk_key).expand(MAC_INFO, key.as_mut());
    key
}

/// The header's JSON in canonical form: object keys sorted, no whitespace, and the
/// tokens of type [`TOKEN_TYPE`] left out (they hold the MAC itself).
pub fn canonical(json: &Value) -> String {
    let mut copy = json.clone();
    if let Some(tokens) = copy.get_mut("tokens").and_then(Value::as_object_mut) {
        tokens.retain(|_, t| t["type"] != TOKEN_TYPE);
    }
    let mut out = String::new();
    write_canonical(&copy, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn mac(json: &Value, key: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(canonical(json).as_bytes());
    m
}

/// The token that carries the MAC of `json` under `key`.
pub fn mac_token(json: &Value, key: &[u8; 32]) -> Value {
    let tag = mac(json, key).finalize().into_bytes();
    serde_json::json!({
        "type": TOKEN_TYPE,
        "keyslots": [],
        "version": 1,
        "mac": tag.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    })
}

/// Checks the header's MAC (constant-time). The error says what is wrong, never the
/// expected value.
pub fn verify_mac(json: &Value, key: &[u8; 32]) -> Result<(), String> {
    let tokens: Vec<&Value> = json["tokens"]
        .as_object()
        .map(|t| t.values().filter(|t| t["type"] == TOKEN_TYPE).collect())
        .unwrap_or_default();
    let token = match tokens.as_slice() {
        [one] => *one,
        [] => {
            return Err(format!(
                "it carries no {TOKEN_TYPE} token: Veil did not write it"
            ));
        }
        _ => {
            return Err(format!(
                "it carries {} {TOKEN_TYPE} tokens, not one",
                tokens.len()
            ));
        }
    };
    let tag = token["mac"]
        .as_str()
        .filter(|h| h.len() == 64)
        .and_then(|h| {
            (0..32)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()
        })
        .ok_or_else(|| format!("its {TOKEN_TYPE} token holds no 32-byte hex MAC"))?;
    mac(json, key).verify_slice(&tag).map_err(|_| {
        "its MAC does not match: it was changed since Veil wrote it, or this is not the key \
         it was made for"
            .to_owned()
    })
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{what} is missing or not an object"))
}

/// The one entry of a LUKS2 section (keyslots, segments, digests), which must be "0".
fn only_entry<'a>(json: &'a Value, section: &str) -> Result<&'a Value, String> {
    let map = object(&json[section], section)?;
    match map.len() {
        1 => map
            .get("0")
            .ok_or_else(|| format!("{section} has one entry, not numbered 0")),
        n => Err(format!(
            "{section} has {n} entries; Veil writes exactly one"
        )),
    }
}

fn expect(what: &str, got: &Value, want: &Value) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} is {got}; Veil writes {want}"))
    }
}

fn expect_keys(what: &str, v: &Value, allowed: &[&str]) -> Result<(), String> {
    for k in object(v, what)?.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!("{what} has '{k}', which Veil never writes"));
        }
    }
    Ok(())
}

/// Checks that the header is one Veil wrote (see the module's docs); returns its
/// integrity setting, which must be `expected` where the node knows it.
pub fn check_structure(json: &Value, expected: Option<Integrity>) -> Result<Integrity, String> {
    // (No base64 salt can hold the '_'.)
    if json.to_string().contains("cipher_null") {
        return Err("it names cipher_null: a volume in the clear".into());
    }
    expect_keys(
        "the header",
        json,
        &["keyslots", "tokens", "segments", "digests", "config"],
    )?;
    // Flags or requirements (online reencryption, ...) change how the volume is read.
    expect_keys("config", &json["config"], &["json_size", "keyslots_size"])?;

    let segment = only_entry(json, "segments")?;
    expect_keys(
        "segment 0",
        segment,
        &[
            "type",
            "offset",
            "size",
            "iv_tweak",
            "encryption",
            "sector_size",
            "integrity",
        ],
    )?;
    expect("segment 0's type", &segment["type"], &"crypt".into())?;
    expect("segment 0's cipher", &segment["encryption"], &CIPHER.into())?;
    expect("segment 0's size", &segment["size"], &"dynamic".into())?;
    expect("segment 0's IV tweak", &segment["iv_tweak"], &"0".into())?;
    let integrity = match &segment["integrity"] {
        Value::Null => Integrity::None,
        i => {
            expect("segment 0's integrity", &i["type"], &"hmac(sha256)".into())?;
            expect(
                "segment 0's journal encryption",
                &i["journal_encryption"],
                &"none".into(),
            )?;
            expect(
                "segment 0's journal integrity",
                &i["journal_integrity"],
                &"none".into(),
            )?;
            Integrity::HmacSha256
        }
    };
    if let Some(want) = expected {
        if want != integrity {
            return Err(format!(
                "its integrity is {}, the cluster's is {}",
                integrity.name(),
                want.name()
            ));
        }
    }
    let sector = match integrity {
        Integrity::None => &[512, 4096][..],
        Integrity::HmacSha256 => &[4096][..],
    };
    if !segment["sector_size"]
        .as_u64()
        .is_some_and(|s| sector.contains(&s))
    {
        return Err(format!(
            "segment 0's sector size is {}; Veil writes {sector:?}",
            segment["sector_size"]
        ));
    }

    let slot = only_entry(json, "keyslots")?;
    let key_size = match integrity {
        Integrity::None => VOLUME_KEY_LEN,
        Integrity::HmacSha256 => VOLUME_KEY_LEN + crate::INTEGRITY_KEY_LEN,
    };
    expect("keyslot 0's type", &slot["type"], &"luks2".into())?;
    expect("keyslot 0's key size", &slot["key_size"], &key_size.into())?;
    expect(
        "keyslot 0's key area type",
        &slot["area"]["type"],
        &"raw".into(),
    )?;
    expect(
        "keyslot 0's key area cipher",
        &slot["area"]["encryption"],
        &CIPHER.into(),
    )?;
    expect(
        "keyslot 0's key area key size",
        &slot["area"]["key_size"],
        &VOLUME_KEY_LEN.into(),
    )?;
    expect(
        "keyslot 0's anti-forensic splitter",
        &slot["af"]["type"],
        &"luks1".into(),
    )?;
    expect(
        "keyslot 0's splitter hash",
        &slot["af"]["hash"],
        &"sha256".into(),
    )?;
    expect("keyslot 0's KDF", &slot["kdf"]["type"], &"pbkdf2".into())?;
    expect(
        "keyslot 0's KDF hash",
        &slot["kdf"]["hash"],
        &"sha256".into(),
    )?;
    expect(
        "keyslot 0's KDF iterations",
        &slot["kdf"]["iterations"],
        &KEYSLOT_ITERATIONS.into(),
    )?;

    let digest = only_entry(json, "digests")?;
    expect("digest 0's type", &digest["type"], &"pbkdf2".into())?;
    expect("digest 0's hash", &digest["hash"], &"sha256".into())?;
    expect(
        "digest 0's keyslots",
        &digest["keyslots"],
        &serde_json::json!(["0"]),
    )?;
    expect(
        "digest 0's segments",
        &digest["segments"],
        &serde_json::json!(["0"]),
    )?;
    if digest["iterations"].as_u64().is_none_or(|i| i < 1000) {
        return Err(format!(
            "digest 0's iterations are {}; Veil's are at least 1000",
            digest["iterations"]
        ));
    }

    for (id, token) in object(&json["tokens"], "tokens")? {
        if token["type"] != TOKEN_TYPE {
            return Err(format!(
                "token {id} is of type {}; Veil writes only {TOKEN_TYPE}",
                token["type"]
            ));
        }
    }
    Ok(integrity)
}

/// What the kernel runs for an unlocked volume: a `dmsetup table`-style crypt target
/// line's parameters (`<cipher> <key> <iv offset> <device> <offset> [options]`),
/// checked against the integrity the header said.
pub fn check_table(target: &str, params: &str, integrity: Integrity) -> Result<(), String> {
    if target != "crypt" {
        return Err(format!("the active target is '{target}', not crypt"));
    }
    let mut words = params.split_whitespace();
    let cipher = words.next().unwrap_or_default();
    let key = words.next().unwrap_or_default();
    let (want_cipher, want_key) = match integrity {
        Integrity::None => (CIPHER, VOLUME_KEY_LEN),
        Integrity::HmacSha256 => (
            "capi:authenc(hmac(sha256),xts(aes))-plain64",
            VOLUME_KEY_LEN + crate::INTEGRITY_KEY_LEN,
        ),
    };
    if cipher != want_cipher {
        return Err(format!(
            "the kernel runs cipher '{cipher}', not {want_cipher}"
        ));
    }
    // The key is a keyring reference, ":<bytes>:<type>:<description>", or hex.
    let bytes = match key.strip_prefix(':') {
        Some(r) => r.split(':').next().and_then(|n| n.parse::<usize>().ok()),
        None => Some(key.len() / 2),
    };
    if bytes != Some(want_key) {
        return Err(format!(
            "the kernel's key is {} bytes, not {want_key}",
            bytes.map_or_else(|| "an unknown number of".into(), |b| b.to_string())
        ));
    }
    Ok(())
}
