//! One audit record and its line: the JSON field order of `AuditRecord` is the canonical
//! form, and every line ends in its hash, BLAKE3 over the record's fields in a fixed
//! binary form (`record_hash`, format v2).

use std::borrow::Cow;
use std::sync::Arc;

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

/// What one operation did: the part of its record that does not name who did it. The
/// same value travels from the envelope (`Call`) or another writer (`IoEvent`) through
/// the queue (`chain::Compact`) to the sealer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The WIT function, e.g. `astrid:io/poll.poll`.
    pub function: Cow<'static, str>,
    pub outcome: Outcome,
    pub elapsed_ns: u64,
    pub bytes: Option<u64>,
    pub pollable_count: Option<u32>,
    pub ready_count: Option<u32>,
    pub error: Option<String>,
}

impl Op {
    /// A successful operation with no counters; set the optional fields directly.
    pub fn ok(function: impl Into<Cow<'static, str>>, elapsed_ns: u64) -> Self {
        Op { function: function.into(), outcome: Outcome::Ok, elapsed_ns, bytes: None, pollable_count: None, ready_count: None, error: None }
    }
}

/// What the io layer reports about one operation, before the chain numbers and links it.
/// Compact on purpose: the capsule's thread only builds this and hands it over (its
/// names are shared, not copied); encoding and hashing happen on the log's own thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoEvent {
    pub capsule: Arc<str>,
    pub principal: Arc<str>,
    pub op: Op,
}

impl IoEvent {
    /// A successful operation with no counters; set the optional fields of `op` directly.
    pub fn ok(capsule: impl Into<Arc<str>>, principal: impl Into<Arc<str>>, function: impl Into<Cow<'static, str>>, elapsed_ns: u64) -> Self {
        IoEvent { capsule: capsule.into(), principal: principal.into(), op: Op::ok(function, elapsed_ns) }
    }
}

/// A host call's record as the envelope hands it over: its names borrowed from the
/// capsule's identity (the queue keeps them by their entry in its table of names, so
/// nothing is cloned per call) and the moment the call ended (the record's time, so
/// the clock is read once per call, not twice).
#[derive(Debug)]
pub struct Call<'a> {
    pub capsule: &'a Arc<str>,
    pub principal: &'a Arc<str>,
    pub op: Op,
    /// When the call ended; `None`: when the record is stamped.
    pub ended: Option<std::time::Instant>,
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

/// A record's fields, borrowed: what the encoder writes, from an `AuditRecord` or
/// straight from the event and its stamp.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fields<'a> {
    pub seq: u64,
    pub t_ns: u64,
    pub capsule: &'a str,
    pub principal: &'a str,
    pub function: &'a str,
    pub outcome: Outcome,
    pub elapsed_ns: u64,
    pub bytes: Option<u64>,
    pub pollable_count: Option<u32>,
    pub ready_count: Option<u32>,
    pub error: Option<&'a str>,
    pub count: Option<u64>,
    pub nonce: Option<&'a str>,
    pub build: Option<&'a str>,
    pub key: Option<&'a str>,
    pub content: Option<&'a str>,
    pub manifest: Option<&'a str>,
    pub sig: Option<&'a str>,
    pub prev: &'a str,
    /// `prev` is known to be 64 hex digits (the sealer's own head): written without the
    /// escaping scan, the same bytes.
    pub prev_is_hex: bool,
}

impl<'a> Fields<'a> {
    /// A record of `function` with nothing else set.
    pub fn blank(function: &'a str) -> Self {
        Fields {
            seq: 0,
            t_ns: 0,
            capsule: "",
            principal: "",
            function,
            outcome: Outcome::Ok,
            elapsed_ns: 0,
            bytes: None,
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
            prev: "",
            prev_is_hex: false,
        }
    }
}

impl AuditRecord {
    pub(super) fn fields(&self) -> Fields<'_> {
        Fields {
            seq: self.seq,
            t_ns: self.t_ns,
            capsule: &self.capsule,
            principal: &self.principal,
            function: &self.function,
            outcome: self.outcome,
            elapsed_ns: self.elapsed_ns,
            bytes: self.bytes,
            pollable_count: self.pollable_count,
            ready_count: self.ready_count,
            error: self.error.as_deref(),
            count: self.count,
            nonce: self.nonce.as_deref(),
            build: self.build.as_deref(),
            key: self.key.as_deref(),
            content: self.content.as_deref(),
            manifest: self.manifest.as_deref(),
            sig: self.sig.as_deref(),
            prev: &self.prev,
            prev_is_hex: false,
        }
    }
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

/// The exact line for `record`: its canonical JSON with a final `hash` field, its
/// `record_hash`. Returns the line and the hash.
///
/// The canonical JSON is `canonical_json`'s (serde_json's, printable ASCII; the verifier
/// parses and re-serializes with it); this writes the same bytes by hand, without the
/// serializer's machinery, because every operation of every capsule passes through here.
/// `canonical_json_matches_serde_json` holds it to `canonical_json`.
///
/// Panics if `record.prev` is not 64 lowercase hex digits (no sealer writes one).
pub fn seal(record: &AuditRecord) -> (String, String) {
    let prev = unhex::<32>(&record.prev).expect("prev is 64 lowercase hex digits");
    let mut line = String::with_capacity(256);
    let hash = seal_into(&record.fields(), &prev, &mut line);
    (line, hash.to_hex().to_string())
}

/// As `seal`, appending the line to `line`, for a record whose `prev` is `prev`'s hex;
/// returns the hash.
pub(super) fn seal_into(record: &Fields<'_>, prev: &[u8; 32], line: &mut String) -> blake3::Hash {
    write_canonical(record, line);
    let names = names_digest(record.capsule, record.principal, record.function, record.outcome);
    finish_line(line, record_hash(record, &names, prev))
}

/// As `seal_into`, for a record whose middle (`write_middle` of its capsule, principal,
/// function and outcome) is already written in `middle`: the drainer keeps it per
/// capsule and function instead of encoding the same names for every record. The same
/// bytes as `seal_into` by construction: both write through `write_middle` and
/// `write_rest`.
/// `names` is the record's `names_digest`, kept with the middle.
pub(super) fn seal_with_middle(record: &Fields<'_>, middle: &str, names: &[u8; 32], prev: &[u8; 32], line: &mut String) -> blake3::Hash {
    write_head(record, line);
    line.push_str(middle);
    push_u64(line, record.elapsed_ns);
    write_rest(record, line);
    finish_line(line, record_hash(record, names, prev))
}

/// The first byte of what a record's hash covers, and of what its names' digest covers:
/// the format's version and which of the two it is.
const RECORD_HASH_V2: u8 = 0x02;
const NAMES_DIGEST_V2: u8 = 0x82;

/// The BLAKE3 digest of a record's capsule, principal, function and outcome, which its
/// hash covers in their place (`record_hash`): a log names the same few of them over
/// and over, and the sealer keeps each one's digest, so hashing a record takes two
/// BLAKE3 blocks, not the five or six of its JSON line.
pub(super) fn names_digest(capsule: &str, principal: &str, function: &str, outcome: Outcome) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[NAMES_DIGEST_V2]);
    for text in [capsule, principal, function] {
        h.update(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.update(&[outcome_code(outcome)]);
    *h.finalize().as_bytes()
}

fn outcome_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Ok => 0,
        Outcome::Error => 1,
        Outcome::Cancelled => 2,
        Outcome::Refused => 3,
        Outcome::Trap => 4,
    }
}

/// A record's hash (format v2): BLAKE3 over its fields in a fixed binary form, which
/// determines the record and so its one canonical line (the verifier also checks the
/// line is that form). In order: the byte 0x02; `prev` (32 bytes); `seq`, `t_ns` and
/// `elapsed_ns` (u64, little-endian); `names` (`names_digest`); a u16 (little-endian)
/// whose bits 0–10 say which of `bytes`, `pollable_count`, `ready_count`, `error`,
/// `count`, `nonce`, `build`, `key`, `content`, `manifest` and `sig` are present; then
/// each present one in that order, numbers as u64 little-endian, texts as their length
/// (u32, little-endian) and their UTF-8 bytes.
pub(super) fn record_hash(r: &Fields<'_>, names: &[u8; 32], prev: &[u8; 32]) -> blake3::Hash {
    let numbers = [r.bytes, r.pollable_count.map(u64::from), r.ready_count.map(u64::from)];
    let texts = [r.nonce, r.build, r.key, r.content, r.manifest, r.sig];
    let flags = numbers.iter().map(Option::is_some).chain([r.error.is_some(), r.count.is_some()]).chain(texts.iter().map(Option::is_some));
    let present = flags.enumerate().fold(0u16, |bits, (i, set)| bits | u16::from(set) << i);
    // The fixed part in one buffer (one update), the optional fields after it.
    let mut head = [0u8; 1 + 32 + 24 + 32 + 2];
    head[0] = RECORD_HASH_V2;
    head[1..33].copy_from_slice(prev);
    head[33..41].copy_from_slice(&r.seq.to_le_bytes());
    head[41..49].copy_from_slice(&r.t_ns.to_le_bytes());
    head[49..57].copy_from_slice(&r.elapsed_ns.to_le_bytes());
    head[57..89].copy_from_slice(names);
    head[89..91].copy_from_slice(&present.to_le_bytes());
    let mut h = blake3::Hasher::new();
    h.update(&head);
    for n in numbers.into_iter().flatten() {
        h.update(&n.to_le_bytes());
    }
    let text = |h: &mut blake3::Hasher, t: &str| {
        h.update(&u32::try_from(t.len()).unwrap_or(u32::MAX).to_le_bytes());
        h.update(t.as_bytes());
    };
    if let Some(e) = r.error {
        text(&mut h, e);
    }
    if let Some(c) = r.count {
        h.update(&c.to_le_bytes());
    }
    for t in texts.into_iter().flatten() {
        text(&mut h, t);
    }
    h.finalize()
}

/// The hash `record` states if it is intact (`record_hash` of its fields); `None` when
/// its `prev` is not 64 lowercase hex digits, which no sealer writes.
pub fn hash_of(record: &AuditRecord) -> Option<blake3::Hash> {
    let prev = unhex::<32>(&record.prev)?;
    let names = names_digest(&record.capsule, &record.principal, &record.function, record.outcome);
    Some(record_hash(&record.fields(), &names, &prev))
}

/// Appends the hash field (`hash`) to the body just written, which ends with '}'.
fn finish_line(line: &mut String, hash: blake3::Hash) -> blake3::Hash {
    // The body ends with '}': reopen it for the hash field.
    line.pop();
    line.push_str(",\"hash\":\"");
    line.push_str(hash.to_hex().as_str());
    line.push_str("\"}");
    hash
}

/// `AuditRecord`'s canonical JSON (field order as declared, absent options left out).
fn write_canonical(r: &Fields<'_>, out: &mut String) {
    write_head(r, out);
    write_middle(r.capsule, r.principal, r.function, r.outcome, out);
    push_u64(out, r.elapsed_ns);
    write_rest(r, out);
}

/// `{"seq":N,"t_ns":N`
fn write_head(r: &Fields<'_>, out: &mut String) {
    out.push_str("{\"seq\":");
    push_u64(out, r.seq);
    out.push_str(",\"t_ns\":");
    push_u64(out, r.t_ns);
}

/// `,"capsule":…,"principal":…,"fn":…,"outcome":"…","elapsed_ns":` (the value follows).
pub(super) fn write_middle(capsule: &str, principal: &str, function: &str, outcome: Outcome, out: &mut String) {
    out.push_str(",\"capsule\":");
    push_str(out, capsule);
    out.push_str(",\"principal\":");
    push_str(out, principal);
    out.push_str(",\"fn\":");
    push_str(out, function);
    out.push_str(",\"outcome\":\"");
    out.push_str(match outcome {
        Outcome::Ok => "ok",
        Outcome::Error => "error",
        Outcome::Cancelled => "cancelled",
        Outcome::Refused => "refused",
        Outcome::Trap => "trap",
    });
    out.push_str("\",\"elapsed_ns\":");
}

/// Everything after `elapsed_ns`'s value, the closing brace included.
fn write_rest(r: &Fields<'_>, out: &mut String) {
    let numbers = [("bytes", r.bytes), ("pollable_count", r.pollable_count.map(u64::from)), ("ready_count", r.ready_count.map(u64::from))];
    for (name, value) in numbers {
        if let Some(v) = value {
            push_key(out, name);
            push_u64(out, v);
        }
    }
    if let Some(e) = r.error {
        push_key(out, "error");
        push_str(out, e);
    }
    if let Some(c) = r.count {
        push_key(out, "count");
        push_u64(out, c);
    }
    let texts = [
        ("nonce", r.nonce),
        ("build", r.build),
        ("key", r.key),
        ("content", r.content),
        ("manifest", r.manifest),
        ("sig", r.sig),
    ];
    for (name, value) in texts {
        if let Some(v) = value {
            push_key(out, name);
            push_str(out, v);
        }
    }
    out.push_str(",\"prev\":");
    if r.prev_is_hex {
        debug_assert!(r.prev.len() == 64 && r.prev.bytes().all(|b| b.is_ascii_hexdigit()));
        out.push('"');
        out.push_str(r.prev);
        out.push('"');
    } else {
        push_str(out, r.prev);
    }
    out.push('}');
}

fn push_key(out: &mut String, name: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
}

fn push_u64(out: &mut String, n: u64) {
    // Two digits at a time, as serde_json writes integers (the same crate).
    out.push_str(itoa::Buffer::new().format(n));
}

/// A JSON string in the canonical form (`canonical_json`): `"` and backslash escaped,
/// the C0 controls as serde_json writes them (`\n`, `\t`, … or `\u00XX`), and every
/// other character outside printable ASCII as `\uXXXX` (UTF-16 units, lowercase hex).
fn push_str(out: &mut String, s: &str) {
    // Names and functions are printable ASCII without quotes or backslashes nearly
    // always: one pass over the bytes, one copy.
    if s.bytes().all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    fn unit(out: &mut String, u: u16) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push_str("\\u");
        for shift in [12, 8, 4, 0] {
            out.push(HEX[usize::from((u >> shift) & 0xf)] as char);
        }
    }
    out.push('"');
    let mut clean = 0;
    for (i, c) in s.char_indices() {
        let escape: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            ' '..='~' => continue,
            _ => None,
        };
        out.push_str(&s[clean..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    unit(out, *u);
                }
            }
        }
        clean = i + c.len_utf8();
    }
    out.push_str(&s[clean..]);
    out.push('"');
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
        let back: AuditRecord = serde_json::from_str(&body).unwrap();
        assert_eq!(back, sample());
        assert_eq!(hash_of(&back).unwrap().to_hex().as_str(), hash);
    }

    /// The hand-written encoder writes exactly the verifier's canonical form (serde_json's
    /// bytes, printable ASCII): every field set and unset, every ASCII byte, multi-byte
    /// characters, extremes of every number.
    #[test]
    fn canonical_json_matches_serde_json() {
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        let texts = ["", "plain", "quote\" back\\ slash", "\u{7f}\u{80}é漢\u{1F980}\u{2028}", &every_ascii, "\0\x01\x1f"];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..2000 {
            let mut pick = |n: usize| (next() as usize) % n;
            let text = |pick: &mut dyn FnMut(usize) -> usize| texts[pick(texts.len())].to_string();
            let opt = |pick: &mut dyn FnMut(usize) -> usize| if pick(2) == 0 { None } else { Some(texts[pick(texts.len())].to_string()) };
            let number = |pick: &mut dyn FnMut(usize) -> usize| [0, 1, 9, 10, 99, 1234567, u64::MAX][pick(7)];
            let r = AuditRecord {
                seq: number(&mut pick),
                t_ns: number(&mut pick),
                capsule: text(&mut pick),
                principal: text(&mut pick),
                function: text(&mut pick),
                outcome: [Outcome::Ok, Outcome::Error, Outcome::Cancelled, Outcome::Refused, Outcome::Trap][pick(5)],
                elapsed_ns: number(&mut pick),
                bytes: (pick(2) == 0).then(|| number(&mut pick)),
                pollable_count: (pick(2) == 0).then(|| [0, 7, u32::MAX][pick(3)]),
                ready_count: (pick(2) == 0).then(|| [0, 7, u32::MAX][pick(3)]),
                error: opt(&mut pick),
                count: (pick(2) == 0).then(|| number(&mut pick)),
                nonce: opt(&mut pick),
                build: opt(&mut pick),
                key: opt(&mut pick),
                content: opt(&mut pick),
                manifest: opt(&mut pick),
                sig: opt(&mut pick),
                prev: hex(&std::array::from_fn::<u8, 32, _>(|_| pick(256) as u8)),
            };
            let (line, hash) = seal(&r);
            let body = canonical_json(&r);
            let (unsealed, stated) = unseal(&line).unwrap_or_else(|| panic!("round {round}: {line}"));
            assert_eq!(unsealed, body, "round {round}");
            assert_eq!(stated, hash);
            assert_eq!(hash_of(&r).unwrap().to_hex().as_str(), hash, "round {round}");
        }
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
