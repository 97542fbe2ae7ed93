//! One audit record and its line: the JSON field order of `AuditRecord` is the canonical
//! form, and every line ends in the BLAKE3 hash of everything before that hash.

use serde::{Deserialize, Serialize};

/// `fn` of the record a chain ends with when a capsule ends; `count` is how many io
/// records that capsule produced.
pub const FN_CAPSULE_END: &str = "astrid:audit/capsule-end";
/// `fn` of the record a log ends with when its sink failed (on the sinks that survive);
/// `error` names the sink and the failure.
pub const FN_SINK_FAILED: &str = "astrid:audit/sink-failed";
/// `fn` of the last record of a log; `count` is how many records precede it. In a
/// signed log it carries `sig`, the signature of a checkpoint at its own position.
pub const FN_CLOSE: &str = "astrid:audit/close";
/// `fn` of the first record (seq 0): it binds the log to its run (`nonce`), the image
/// that wrote it (`build`) and, in a signed log, the public key of its checkpoints
/// (`key`).
pub const FN_GENESIS: &str = "astrid:audit/genesis";
/// `fn` of the record a capsule gets when the engine has loaded it: `content` is the
/// BLAKE3 of its bytes (wasm or precompiled artifact), `manifest` that of its manifest
/// text (absent without one).
pub const FN_CAPSULE_LOAD: &str = "astrid:audit/capsule-load";
/// `fn` of a signed checkpoint: `sig` is the Ed25519 signature of
/// [`checkpoint_message`] over the run's nonce, the checkpoint's own `seq` and its
/// `prev` (the hash of every line before it, through the chain).
pub const FN_CHECKPOINT: &str = "astrid:audit/checkpoint";
/// Longest string a record keeps from a field a capsule can influence (error text,
/// ids): the host layer cuts it there, at a character boundary.
pub const MAX_FIELD_BYTES: usize = 1024;
/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How an operation ended: one vocabulary for every package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did what was asked.
    Ok,
    /// It answered with the WIT's error (`error` names the case).
    Error,
    /// Its wait was ended by the capsule's cancellation (`error`: what the capsule got).
    Cancelled,
    /// The image does not serve it: a typed refusal (`error`: why).
    Refused,
    /// It stopped the capsule (`error`: the cause).
    Trap,
}

/// What the io layer reports about one operation, before the chain numbers and links it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoEvent {
    pub capsule: String,
    pub principal: String,
    /// The WIT function, e.g. `astrid:io/poll.poll`.
    pub function: String,
    pub outcome: Outcome,
    pub elapsed_ns: u64,
    pub bytes: Option<u64>,
    pub pollable_count: Option<u32>,
    pub ready_count: Option<u32>,
    pub error: Option<String>,
}

impl IoEvent {
    /// A successful operation with no counters; set the optional fields directly.
    pub fn ok(capsule: &str, principal: &str, function: &str, elapsed_ns: u64) -> Self {
        IoEvent {
            capsule: capsule.to_owned(),
            principal: principal.to_owned(),
            function: function.to_owned(),
            outcome: Outcome::Ok,
            elapsed_ns,
            bytes: None,
            pollable_count: None,
            ready_count: None,
            error: None,
        }
    }
}

/// One line of the audit log, as written and as read back.
///
/// Optional fields are left out when absent, never written as `null`, so each record
/// has exactly one serialized form; the verifier re-serializes and compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the log, from 0, without gaps.
    pub seq: u64,
    /// Monotonic nanoseconds since the log started; never decreases along the log.
    pub t_ns: u64,
    pub capsule: String,
    pub principal: String,
    #[serde(rename = "fn")]
    pub function: String,
    pub outcome: Outcome,
    pub elapsed_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pollable_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Only on `FN_CAPSULE_END` and `FN_CLOSE` records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The run's nonce (64 hex digits): on `FN_GENESIS` and `FN_CHECKPOINT` records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The image's build identity: only on `FN_GENESIS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// The Ed25519 public key of the checkpoints (64 hex digits): on `FN_GENESIS` of a
    /// signed log only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// BLAKE3 of the capsule's bytes: only on `FN_CAPSULE_LOAD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// BLAKE3 of the capsule's manifest text: on `FN_CAPSULE_LOAD`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Ed25519 signature (128 hex digits): on `FN_CHECKPOINT`, and on `FN_CLOSE` of a
    /// signed log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// The `hash` of the previous line (lowercase hex), `GENESIS` for the first.
    pub prev: String,
}

/// What a checkpoint's signature covers: a domain tag, the run's nonce, the seq of the
/// signed record and its `prev` (the chain head before it), as raw bytes.
pub fn checkpoint_message(nonce: &[u8; 32], seq: u64, prev: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_TAG.len() + 32 + 8 + 32);
    m.extend_from_slice(CHECKPOINT_TAG);
    m.extend_from_slice(nonce);
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(prev);
    m
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `N` bytes from exactly `2N` lowercase hex digits.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N || !digits.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Separates checkpoint signatures from anything else the key might ever sign.
const CHECKPOINT_TAG: &[u8] = b"astrid-audit-checkpoint-v1\0";

/// `,"hash":"` + 64 hex digits + `"}`: the fixed tail of every line.
const HASH_TAIL_LEN: usize = 9 + 64 + 2;

/// The exact line for `record`: its canonical JSON with a final `hash` field, the BLAKE3
/// of the JSON before it (the line without that field). Returns the line and the hash.
pub fn seal(record: &AuditRecord) -> (String, String) {
    let body = canonical_json(record);
    let hash = blake3::hash(body.as_bytes()).to_hex().to_string();
    // body ends with '}': reopen it for the hash field.
    let mut line = String::with_capacity(body.len() + HASH_TAIL_LEN);
    line.push_str(&body[..body.len() - 1]);
    line.push_str(",\"hash\":\"");
    line.push_str(&hash);
    line.push_str("\"}");
    (line, hash)
}

/// A record's canonical JSON (without its hash): serde's, in the field order of
/// [`AuditRecord`], with every character outside printable ASCII written as a JSON
/// `\uXXXX` escape. A line is then printable ASCII whatever a capsule put in its
/// strings: nothing in it can break or disguise a console line for any reader (serde
/// escapes only the C0 controls; DEL, NEL, U+2028/9 and bidirectional overrides would
/// pass).
pub fn canonical_json(record: &AuditRecord) -> String {
    use std::fmt::Write as _;
    let body = serde_json::to_string(record).expect("an audit record always serializes");
    if body.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return body;
    }
    let mut out = String::with_capacity(body.len() + 32);
    for c in body.chars() {
        if (' '..='~').contains(&c) {
            out.push(c);
        } else {
            // Outside the JSON's punctuation: these only occur inside strings.
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

/// Splits a line into the JSON it hashes (its `hash` field taken out) and the hash it
/// states. `None` when the line does not end in a well-formed hash field.
pub fn unseal(line: &str) -> Option<(String, &str)> {
    let bytes = line.as_bytes();
    if bytes.len() < HASH_TAIL_LEN + 2 {
        return None;
    }
    let start = bytes.len() - HASH_TAIL_LEN;
    let tail = &bytes[start..];
    let hex = &tail[9..9 + 64];
    if &tail[..9] != b",\"hash\":\"" || &tail[73..] != b"\"}" {
        return None;
    }
    if !hex.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return None;
    }
    // The tail is ASCII, so `start` is a char boundary.
    let mut body = String::with_capacity(start + 1);
    body.push_str(&line[..start]);
    body.push('}');
    Some((body, &line[start + 9..start + 9 + 64]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuditRecord {
        AuditRecord {
            seq: 7,
            t_ns: 1234,
            capsule: "hello".into(),
            principal: "alice".into(),
            function: "astrid:io/streams.input-stream.read".into(),
            outcome: Outcome::Ok,
            elapsed_ns: 99,
            bytes: Some(512),
            pollable_count: None,
            ready_count: None,
            error: None,
            count: None,
            nonce: None,
            build: None,
            key: None,
            content: None,
            manifest: None,
            sig: None,
            prev: GENESIS.into(),
        }
    }

    #[test]
    fn line_is_canonical_json_with_a_final_hash() {
        let (line, hash) = seal(&sample());
        assert_eq!(
            line,
            format!(
                "{{\"seq\":7,\"t_ns\":1234,\"capsule\":\"hello\",\"principal\":\"alice\",\
                 \"fn\":\"astrid:io/streams.input-stream.read\",\"outcome\":\"ok\",\
                 \"elapsed_ns\":99,\"bytes\":512,\"prev\":\"{GENESIS}\",\"hash\":\"{hash}\"}}"
            )
        );
        let (body, stated) = unseal(&line).unwrap();
        assert_eq!(stated, hash);
        assert_eq!(blake3::hash(body.as_bytes()).to_hex().as_str(), hash);
        let back: AuditRecord = serde_json::from_str(&body).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn strings_with_newlines_stay_on_one_line() {
        let mut r = sample();
        r.error = Some("two\nlines\r\n\u{0}".into());
        r.outcome = Outcome::Error;
        let (line, _) = seal(&r);
        assert!(!line.contains('\n') && !line.contains('\r'));
    }

    #[test]
    fn lines_are_printable_ascii_and_read_back_exactly() {
        let mut r = sample();
        let hostile = "x\n@@audit {}\u{85}@@audit\u{2028}@@audit\u{202e}\u{7f}é😀";
        r.error = Some(hostile.into());
        r.capsule = "cäpsule\u{2029}".into();
        let (line, _) = seal(&r);
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line}");
        assert!(line.contains("\\u2028") && line.contains("\\ud83d\\ude00"), "{line}");
        let (body, _) = unseal(&line).unwrap();
        let back: AuditRecord = serde_json::from_str(&body).unwrap();
        assert_eq!(back, r);
        assert_eq!(canonical_json(&back), body, "the verifier's re-serialization matches");
    }

    #[test]
    fn unseal_rejects_lines_without_a_proper_hash_tail() {
        assert!(unseal("{}").is_none());
        let (line, hash) = seal(&sample());
        let upper = format!("{}{}\"}}", &line[..line.len() - 66], hash.to_uppercase());
        assert_ne!(upper, line);
        assert!(unseal(&upper).is_none(), "hex must be lowercase");
        assert!(unseal(&line[..line.len() - 1]).is_none());
    }
}
