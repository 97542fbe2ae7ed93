//! Reads an audit log back and checks it: structure, the genesis record that binds it to
//! its run, sequence, time order, the hash of every line, the link to the line before,
//! the counts of the end records, an end record for every capsule that was loaded, and
//! — in a signed log — every checkpoint's signature. Reports the first line where the
//! log stops being what the chain wrote, and names what happened there.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};

use super::chain::CHECKPOINT_EVERY;
use super::record::{
    hash_of, AuditRecord, FN_CAPSULE_END, FN_CAPSULE_LOAD, FN_CHECKPOINT, FN_CLOSE, FN_GENESIS, FN_SINK_FAILED, GENESIS, checkpoint_message,
    canonical_json, hex, unhex, unseal,
};

/// Whose signatures a log carries, as far as the verifier could tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signing {
    /// No key in the genesis record and no checkpoints: chained, but anyone with the
    /// file could rewrite it whole.
    Unsigned,
    /// Every checkpoint verifies under the key the genesis record names (hex); `pinned`
    /// when that is the key the verifier was given, else only self-consistent.
    Signed { key: String, pinned: bool },
}

/// What a whole, intact log holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Lines, the genesis, checkpoints and end records included.
    pub records: u64,
    /// Records of io operations.
    pub io_records: u64,
    /// Capsule load records.
    pub capsules_loaded: u64,
    /// Capsule end records.
    pub capsules_ended: u64,
    /// Whether the log ends in its close record (always true from `verify`).
    pub closed: bool,
    /// `hash` of the last line: what a host can keep to detect a later rewrite.
    pub head: String,
    /// The run's nonce (hex) and the image's build identity, from the genesis record.
    pub nonce: String,
    pub build: String,
    pub signing: Signing,
    /// Seq of the last signed checkpoint (or signed close record).
    pub last_checkpoint: Option<u64>,
}

/// The first place the log is not what the chain wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// 1-based line number; for a truncated log, one past the last whole line.
    pub line_no: usize,
    pub kind: BreakKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakKind {
    /// Not JSON at all.
    NotJson(String),
    /// JSON, but not a record: no hash tail, a missing, unknown or mistyped field, or
    /// a field where none belongs.
    Structure(String),
    /// A record, but not in the one form the chain writes (spacing, order, `null`s).
    NotCanonical,
    /// The line's own hash does not match its content.
    Hash,
    /// The line's hash is over its JSON text: a log of the first format, which builds
    /// before format v2 wrote (see the README's audit section); verify it with one.
    FormatV1,
    /// The first line is not a genesis record.
    MissingGenesis,
    /// `seq` is ahead of the next number: records are missing here.
    Sequence { expected: u64, found: u64 },
    /// This line repeats the line before (or an earlier one).
    Duplicate { seq: u64 },
    /// `seq` is out of order: records were moved (the missing one appears elsewhere).
    Reordered { expected: u64, found: u64 },
    /// `prev` is not the previous line's hash.
    Link,
    /// `t_ns` is earlier than the line before.
    TimeWentBack { previous: u64, found: u64 },
    /// An end record's count disagrees with the records before it.
    Count { expected: u64, found: u64 },
    /// A line after the close record (or after a sink's failure record).
    AfterClose,
    /// The log ends with the record of a failed sink: the image stopped its capsules
    /// there (fail-closed). The log up to it is intact; what failed is named.
    EndedBySinkFailure(String),
    /// The log ends without its close record (cut short, or the image died): `after`
    /// is the seq of the last whole record, `last_checkpoint` that of the last signed
    /// checkpoint, up to which the log is proven.
    Truncated { after: Option<u64>, last_checkpoint: Option<u64> },
    /// The log closes, but a capsule that was loaded has no end record.
    MissingCapsuleEnd { capsule: String },
    /// Records of another run: a second genesis, or a checkpoint with another nonce.
    Splice,
    /// The log is signed by another key than the one given.
    WrongKey { found: String, expected: String },
    /// A key was given but the log is unsigned.
    Unsigned,
    /// A signature that does not verify: the checkpoint, or a record before it, was
    /// rewritten (and the hashes recomputed).
    BadSignature,
    /// A signed log lacks a checkpoint where the chain writes one (after a capsule's
    /// end record, every `CHECKPOINT_EVERY` records, in the close record).
    MissingCheckpoint,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let BreakKind::Truncated { after, last_checkpoint } = &self.kind {
            match after {
                Some(n) => write!(f, "truncated after record {n}")?,
                None => write!(f, "truncated: no records")?,
            }
            return match last_checkpoint {
                Some(c) => write!(f, " (signed up to the checkpoint at record {c})"),
                None => write!(f, " (no signed checkpoint)"),
            };
        }
        write!(f, "line {}: ", self.line_no)?;
        match &self.kind {
            BreakKind::NotJson(e) => write!(f, "not JSON ({e})"),
            BreakKind::Structure(e) => write!(f, "not an audit record ({e})"),
            BreakKind::NotCanonical => write!(f, "not in canonical form (edited?)"),
            BreakKind::Hash => write!(f, "hash does not match the line (edited)"),
            BreakKind::FormatV1 => write!(f, "a log of the first record format (each hash over its JSON line): verify it with the build that wrote it"),
            BreakKind::MissingGenesis => write!(f, "the log does not start with its genesis record"),
            BreakKind::Sequence { expected, found } => {
                write!(f, "seq {found}, expected {expected} (records missing)")
            }
            BreakKind::Duplicate { seq } => write!(f, "record {seq} duplicated"),
            BreakKind::Reordered { expected, found } => {
                write!(f, "seq {found}, expected {expected} (records reordered)")
            }
            BreakKind::Link => write!(f, "prev does not match the previous line's hash"),
            BreakKind::TimeWentBack { previous, found } => {
                write!(f, "t_ns {found} is before the previous line's {previous}")
            }
            BreakKind::Count { expected, found } => {
                write!(f, "count {found}, but {expected} records precede it")
            }
            BreakKind::AfterClose => write!(f, "a record after the close record (or after a sink's failure)"),
            BreakKind::EndedBySinkFailure(why) => {
                write!(f, "the log ends where an audit sink failed ({why}): intact up to there, the image stopped its capsules")
            }
            BreakKind::Truncated { .. } => unreachable!("handled above"),
            BreakKind::MissingCapsuleEnd { capsule } => {
                write!(f, "capsule {capsule:?} was loaded but has no end record")
            }
            BreakKind::Splice => write!(f, "a record of another run (spliced logs)"),
            BreakKind::WrongKey { found, expected } => {
                write!(f, "signed by key {found}, not the expected {expected}")
            }
            BreakKind::Unsigned => write!(f, "the log is unsigned, but a key was given"),
            BreakKind::BadSignature => {
                write!(f, "checkpoint signature does not verify (the checkpoint or a record before it was rewritten)")
            }
            BreakKind::MissingCheckpoint => write!(f, "a signed checkpoint is missing here"),
        }
    }
}

/// How to check a log.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The deployment's public key. Without it, checkpoints are checked against the
    /// key the genesis record names (self-consistency: a rewrite of the whole log with
    /// another key goes unnoticed; `Summary::signing` says `pinned: false`).
    pub key: Option<VerifyingKey>,
    /// A log still being written: a missing close record is no break.
    pub open: bool,
}

/// Checks a complete log, without a pinned key: it must end in its close record.
pub fn verify<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Summary, Break> {
    verify_with(lines, &Options::default())
}

/// Checks a log that may still be growing: everything else as `verify`, but a missing
/// close record is no break.
pub fn verify_open<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Summary, Break> {
    verify_with(lines, &Options { key: None, open: true })
}

/// Checks a log as `options` say.
pub fn verify_with<'a>(lines: impl IntoIterator<Item = &'a str>, options: &Options) -> Result<Summary, Break> {
    let lines: Vec<&str> = lines.into_iter().collect();
    let mut walk = Walk { key: options.key, ..Walk::default() };
    for (i, line) in lines.iter().enumerate() {
        if let Err(mut b) = walk.step(line) {
            classify(&mut b, &lines, i, &walk);
            return Err(b);
        }
    }
    if let Some(why) = walk.sink_failed.clone().filter(|_| !options.open) {
        return Err(Break { line_no: walk.line_no, kind: BreakKind::EndedBySinkFailure(why) });
    }
    if !walk.closed && !options.open && walk.sink_failed.is_none() {
        return Err(walk.truncated());
    }
    Ok(walk.summary())
}

/// Names a break better with the whole log in view: a sequence break is a duplicate
/// when the line appeared before, a reordering when the missing seq comes later; a
/// last line that is not JSON was cut off mid-write.
fn classify(b: &mut Break, lines: &[&str], i: usize, walk: &Walk) {
    match b.kind {
        BreakKind::Sequence { expected, found } => {
            if lines[..i].contains(&lines[i]) {
                b.kind = BreakKind::Duplicate { seq: found };
            } else if found < expected || lines[i + 1..].iter().any(|l| seq_of(l) == Some(expected)) {
                b.kind = BreakKind::Reordered { expected, found };
            }
        }
        BreakKind::NotJson(_) if i + 1 == lines.len() => b.kind = walk.truncated().kind,
        _ => {}
    }
}

fn seq_of(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line).ok()?.get("seq")?.as_u64()
}

#[derive(Default)]
struct Walk {
    key: Option<VerifyingKey>,
    line_no: usize,
    next_seq: u64,
    prev: Option<String>,
    last_t_ns: u64,
    io_records: u64,
    capsules_loaded: u64,
    capsules_ended: u64,
    per_capsule: BTreeMap<String, u64>,
    /// Loaded capsules without an end record yet.
    running: BTreeSet<String>,
    closed: bool,
    /// The failure a `FN_SINK_FAILED` record named: only a checkpoint may follow it.
    sink_failed: Option<String>,
    nonce: Option<[u8; 32]>,
    build: String,
    /// The key the genesis record names.
    log_key: Option<VerifyingKey>,
    since_checkpoint: u64,
    checkpoint_due: bool,
    last_checkpoint: Option<u64>,
}

/// A field present on a record that must not carry it.
fn stray(record: &AuditRecord, allowed: &[&str]) -> Option<&'static str> {
    let present = [
        ("count", record.count.is_some()),
        ("nonce", record.nonce.is_some()),
        ("build", record.build.is_some()),
        ("key", record.key.is_some()),
        ("content", record.content.is_some()),
        ("manifest", record.manifest.is_some()),
        ("sig", record.sig.is_some()),
    ];
    present.into_iter().find(|(name, is)| *is && !allowed.contains(name)).map(|(name, _)| name)
}

impl Walk {
    fn step(&mut self, line: &str) -> Result<(), Break> {
        self.line_no += 1;
        let line_no = self.line_no;
        let at = |kind| Break { line_no, kind };
        if self.closed || (self.sink_failed.is_some() && !line.contains(FN_CHECKPOINT)) {
            return Err(at(BreakKind::AfterClose));
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(line) {
            return Err(at(BreakKind::NotJson(e.to_string())));
        }
        let Some((body, stated)) = unseal(line) else {
            return Err(at(BreakKind::Structure("no `hash` field at the end".into())));
        };
        let record: AuditRecord = match serde_json::from_str(&body) {
            Ok(r) => r,
            Err(e) => return Err(at(BreakKind::Structure(e.to_string()))),
        };
        if canonical_json(&record) != body {
            return Err(at(BreakKind::NotCanonical));
        }
        if hash_of(&record).is_none_or(|h| h.to_hex().as_str() != stated) {
            // The first format hashed the line's JSON: name it rather than call it edited.
            let kind = if blake3::hash(body.as_bytes()).to_hex().as_str() == stated { BreakKind::FormatV1 } else { BreakKind::Hash };
            return Err(at(kind));
        }
        // Another run's records: a second genesis, or a nonce that is not this run's.
        if line_no > 1 && record.function == FN_GENESIS {
            return Err(at(BreakKind::Splice));
        }
        if let (Some(ours), Some(theirs)) = (&self.nonce, &record.nonce)
            && hex(ours) != *theirs
        {
            return Err(at(BreakKind::Splice));
        }
        if record.seq != self.next_seq {
            return Err(at(BreakKind::Sequence { expected: self.next_seq, found: record.seq }));
        }
        if record.prev != self.prev.as_deref().unwrap_or(GENESIS) {
            return Err(at(BreakKind::Link));
        }
        if record.t_ns < self.last_t_ns {
            return Err(at(BreakKind::TimeWentBack { previous: self.last_t_ns, found: record.t_ns }));
        }
        self.check_kind(&record).map_err(at)?;
        self.next_seq += 1;
        self.last_t_ns = record.t_ns;
        self.prev = Some(stated.to_owned());
        Ok(())
    }

    fn check_kind(&mut self, record: &AuditRecord) -> Result<(), BreakKind> {
        let structure = |what: String| Err(BreakKind::Structure(what));
        let function = record.function.as_str();
        if record.seq == 0 {
            return if function == FN_GENESIS { self.genesis(record) } else { Err(BreakKind::MissingGenesis) };
        }
        let signed = self.log_key.is_some();
        if signed && function != FN_CHECKPOINT && (self.checkpoint_due || self.since_checkpoint >= CHECKPOINT_EVERY) {
            return Err(BreakKind::MissingCheckpoint);
        }
        let allowed: &[&str] = match function {
            FN_CAPSULE_END => &["count"],
            FN_CLOSE => &["count", "sig"],
            FN_CHECKPOINT => &["nonce", "sig"],
            FN_CAPSULE_LOAD => &["content", "manifest"],
            _ => &[],
        };
        if let Some(field) = stray(record, allowed) {
            return structure(format!("`{field}` on a `{function}` record"));
        }
        let count_check = |expected: u64| match record.count {
            Some(found) if found == expected => Ok(()),
            Some(found) => Err(BreakKind::Count { expected, found }),
            None => Err(BreakKind::Structure(format!("`{function}` without a count"))),
        };
        match function {
            FN_CHECKPOINT => {
                if !signed {
                    return structure("a checkpoint in an unsigned log".into());
                }
                if record.nonce.is_none() {
                    return structure("a checkpoint without its nonce".into());
                }
                self.check_signature(record)?;
                self.since_checkpoint = 0;
                self.checkpoint_due = false;
                return Ok(());
            }
            FN_CAPSULE_LOAD => {
                if record.content.as_deref().and_then(unhex::<32>).is_none()
                    || record.manifest.as_deref().is_some_and(|m| unhex::<32>(m).is_none())
                {
                    return structure("a capsule load without a 64-digit content hash".into());
                }
                self.running.insert(record.capsule.clone());
                self.capsules_loaded += 1;
            }
            FN_CAPSULE_END => {
                let expected = self.per_capsule.get(&record.capsule).copied().unwrap_or(0);
                count_check(expected)?;
                self.per_capsule.remove(&record.capsule);
                self.running.remove(&record.capsule);
                self.capsules_ended += 1;
                self.checkpoint_due = signed;
            }
            FN_CLOSE => {
                count_check(record.seq)?;
                if let Some(capsule) = self.running.iter().next() {
                    return Err(BreakKind::MissingCapsuleEnd { capsule: capsule.clone() });
                }
                if signed {
                    if record.sig.is_none() {
                        return Err(BreakKind::MissingCheckpoint);
                    }
                    self.check_signature(record)?;
                } else if record.sig.is_some() {
                    return structure("a signature in an unsigned log".into());
                }
                self.closed = true;
            }
            FN_SINK_FAILED => {
                self.sink_failed = Some(record.error.clone().unwrap_or_default());
            }
            f if f.starts_with("astrid:audit/") => {
                return structure(format!("unknown audit record `{f}`"));
            }
            _ => {
                *self.per_capsule.entry(record.capsule.clone()).or_default() += 1;
                self.io_records += 1;
            }
        }
        self.since_checkpoint += 1;
        Ok(())
    }

    fn genesis(&mut self, record: &AuditRecord) -> Result<(), BreakKind> {
        let bad = |what: &str| Err(BreakKind::Structure(format!("genesis record: {what}")));
        if let Some(field) = stray(record, &["nonce", "build", "key"]) {
            return bad(&format!("`{field}` does not belong"));
        }
        let Some(nonce) = record.nonce.as_deref().and_then(unhex::<32>) else { return bad("no 64-digit nonce") };
        let Some(build) = &record.build else { return bad("no build identity") };
        let log_key = match record.key.as_deref() {
            None => None,
            Some(k) => match unhex::<32>(k).and_then(|b| VerifyingKey::from_bytes(&b).ok()) {
                Some(k) => Some(k),
                None => return bad("`key` is not an Ed25519 public key"),
            },
        };
        match (self.key, log_key) {
            (Some(_), None) => return Err(BreakKind::Unsigned),
            (Some(expected), Some(found)) if expected != found => {
                return Err(BreakKind::WrongKey { found: hex(found.as_bytes()), expected: hex(expected.as_bytes()) });
            }
            _ => {}
        }
        self.nonce = Some(nonce);
        self.build = build.clone();
        self.log_key = log_key;
        self.since_checkpoint = 1;
        Ok(())
    }

    /// `sig` of a checkpoint or close record at its own position, under the log's key.
    fn check_signature(&mut self, record: &AuditRecord) -> Result<(), BreakKind> {
        let (Some(key), Some(nonce)) = (&self.log_key, &self.nonce) else { return Err(BreakKind::BadSignature) };
        let sig = record.sig.as_deref().and_then(unhex::<64>).map(|b| Signature::from_bytes(&b));
        let prev = unhex::<32>(&record.prev);
        let (Some(sig), Some(prev)) = (sig, prev) else {
            return Err(BreakKind::Structure("a signature that is not 128 hex digits".into()));
        };
        key.verify_strict(&checkpoint_message(nonce, record.seq, &prev), &sig).map_err(|_| BreakKind::BadSignature)?;
        self.last_checkpoint = Some(record.seq);
        Ok(())
    }

    fn truncated(&self) -> Break {
        Break {
            line_no: self.line_no + 1,
            kind: BreakKind::Truncated { after: self.next_seq.checked_sub(1), last_checkpoint: self.last_checkpoint },
        }
    }

    fn summary(&self) -> Summary {
        Summary {
            records: self.next_seq,
            io_records: self.io_records,
            capsules_loaded: self.capsules_loaded,
            capsules_ended: self.capsules_ended,
            closed: self.closed,
            head: self.prev.clone().unwrap_or_else(|| GENESIS.to_owned()),
            nonce: self.nonce.as_ref().map(|n| hex(n)).unwrap_or_default(),
            build: self.build.clone(),
            signing: match &self.log_key {
                None => Signing::Unsigned,
                Some(k) => Signing::Signed { key: hex(k.as_bytes()), pinned: self.key.is_some() },
            },
            last_checkpoint: self.last_checkpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::super::chain::{Chain, RunBinding};
    use super::super::record::{IoEvent, Outcome, seal};
    use super::*;

    const BUILD: &str = "astrid-kernel test";

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn clock() -> Box<dyn FnMut() -> u64 + Send> {
        let mut t = 1_000;
        Box::new(move || {
            t += 250;
            t
        })
    }

    /// A chain with a fixed clock and nonce, so the bytes are the same in every run.
    fn chain(nonce: u8, signer: Option<SigningKey>) -> Chain {
        let c = Chain::with_clock(clock()).bind(RunBinding { nonce: [nonce; 32], build: BUILD.into() });
        match signer {
            Some(k) => c.sign_with(k),
            None => c,
        }
    }

    /// A small closed log: two capsules loaded, every optional field used somewhere.
    fn log_of(mut chain: Chain, extra_io: u64) -> Vec<String> {
        let mut lines = Vec::new();
        lines.extend(chain.capsule_load("alpha", "alice", blake3::hash(b"alpha wasm").as_bytes(), Some("name = \"alpha\"")).unwrap());
        lines.extend(chain.capsule_load("béta", "bob", blake3::hash(b"beta wasm").as_bytes(), None).unwrap());
        for i in 0..4 + extra_io {
            let mut e = IoEvent::ok("alpha", "alice", "astrid:io/streams.input-stream.read", 10 + i);
            e.op.bytes = Some(100 * i);
            lines.extend(chain.append(e).unwrap());
            let mut p = IoEvent::ok("béta", "bob", "astrid:io/poll.poll", 7);
            p.op.pollable_count = Some(3);
            p.op.ready_count = Some(1);
            lines.extend(chain.append(p).unwrap());
        }
        let mut failed = IoEvent::ok("alpha", "alice", "astrid:io/poll.pollable.block", 5);
        failed.op.outcome = Outcome::Error;
        failed.op.error = Some("cancelled".into());
        lines.extend(chain.append(failed).unwrap());
        lines.extend(chain.capsule_end("alpha").unwrap().0);
        lines.extend(chain.capsule_end("béta").unwrap().0);
        lines.extend(chain.close().unwrap());
        lines
    }

    /// Unsigned: genesis, 2 loads, 9 io, 2 ends, close.
    fn sample_log() -> Vec<String> {
        log_of(chain(7, None), 0)
    }

    /// Signed: genesis, 2 loads, 9 io, end, checkpoint, end, checkpoint, close.
    fn signed_log() -> Vec<String> {
        log_of(chain(7, Some(key(1))), 0)
    }

    fn check(lines: &[String]) -> Result<Summary, Break> {
        verify(lines.iter().map(String::as_str))
    }

    fn check_key(lines: &[String], k: &SigningKey) -> Result<Summary, Break> {
        verify_with(lines.iter().map(String::as_str), &Options { key: Some(k.verifying_key()), open: false })
    }

    /// A record re-sealed after `edit`, and every later line re-chained: what someone
    /// with the file but not the key can do.
    fn rechain(lines: &[String], from: usize, edit: impl Fn(&mut AuditRecord)) -> Vec<String> {
        let mut out: Vec<String> = lines[..from].to_vec();
        let mut prev = if from == 0 { GENESIS.to_owned() } else { unseal(&lines[from - 1]).unwrap().1.to_owned() };
        for (i, line) in lines[from..].iter().enumerate() {
            let mut r: AuditRecord = serde_json::from_str(&unseal(line).unwrap().0).unwrap();
            if i == 0 {
                edit(&mut r);
            }
            r.seq = (from + i) as u64;
            r.prev = prev;
            if r.function == FN_CLOSE {
                r.count = Some(r.seq);
            }
            let (l, h) = seal(&r);
            out.push(l);
            prev = h;
        }
        out
    }

    #[test]
    fn chain_verifies() {
        let lines = sample_log();
        let summary = check(&lines).unwrap();
        assert_eq!(
            summary,
            Summary {
                records: 15,
                io_records: 9,
                capsules_loaded: 2,
                capsules_ended: 2,
                closed: true,
                head: unseal(lines.last().unwrap()).unwrap().1.to_owned(),
                nonce: "07".repeat(32),
                build: BUILD.into(),
                signing: Signing::Unsigned,
                last_checkpoint: None,
            }
        );
        // The genesis links to zeros and names the run; end records carry their counts.
        assert!(lines[0].contains(&format!("\"prev\":\"{GENESIS}\"")));
        assert!(lines[0].contains("\"fn\":\"astrid:audit/genesis\"") && lines[0].contains(&"07".repeat(32)));
        assert!(!lines[0].contains("\"key\""), "unsigned: no key");
        assert!(lines[1].contains("\"fn\":\"astrid:audit/capsule-load\"") && lines[1].contains("\"manifest\""));
        assert!(!lines[2].contains("\"manifest\""));
        assert!(lines[12].contains("\"fn\":\"astrid:audit/capsule-end\"") && lines[12].contains("\"count\":5"));
        assert!(lines[13].contains("\"count\":4"));
        assert!(lines[14].contains("\"fn\":\"astrid:audit/close\"") && lines[14].contains("\"count\":14"));
        assert!(lines.iter().all(|l| !l.contains("\"sig\"")));
        // A key given for an unsigned log: said, not passed.
        assert_eq!(check_key(&lines, &key(1)).unwrap_err(), Break { line_no: 1, kind: BreakKind::Unsigned });
    }

    #[test]
    fn signed_chain_verifies_with_its_key() {
        let lines = signed_log();
        assert_eq!(lines.len(), 17);
        assert!(lines[0].contains(&format!("\"key\":\"{}\"", hex(key(1).verifying_key().as_bytes()))));
        for i in [13, 15] {
            assert!(lines[i].contains("\"fn\":\"astrid:audit/checkpoint\"") && lines[i].contains("\"sig\""), "{}", lines[i]);
        }
        assert!(lines[16].contains("\"fn\":\"astrid:audit/close\"") && lines[16].contains("\"sig\""));
        let summary = check_key(&lines, &key(1)).unwrap();
        assert_eq!(summary.signing, Signing::Signed { key: hex(key(1).verifying_key().as_bytes()), pinned: true });
        assert_eq!(summary.last_checkpoint, Some(16));
        // Without a key: self-consistent, not pinned.
        assert_eq!(check(&lines).unwrap().signing, Signing::Signed { key: hex(key(1).verifying_key().as_bytes()), pinned: false });
    }

    #[test]
    fn long_signed_chains_checkpoint_every_n_records() {
        let lines = log_of(chain(7, Some(key(1))), 300);
        let checkpoints: Vec<usize> =
            lines.iter().enumerate().filter(|(_, l)| l.contains(FN_CHECKPOINT)).map(|(i, _)| i).collect();
        assert_eq!(&checkpoints[..2], &[CHECKPOINT_EVERY as usize, 2 * CHECKPOINT_EVERY as usize + 1]);
        check_key(&lines, &key(1)).unwrap();
        // Removing one (and re-chaining) is caught where it was due.
        let at = checkpoints[0];
        let mut cut = lines.clone();
        cut.remove(at);
        let cut = rechain(&cut, at, |_| {});
        assert_eq!(check_key(&cut, &key(1)).unwrap_err(), Break { line_no: at + 1, kind: BreakKind::MissingCheckpoint });
    }

    /// Each way a log can be attacked or damaged, and the name the verifier gives it.
    #[test]
    fn every_break_is_named() {
        let signed = signed_log();
        let other_run = log_of(chain(9, Some(key(1))), 0);
        let k = key(1);
        type Case = (&'static str, Vec<String>, Option<SigningKey>, Break);
        let line = |line_no, kind| Break { line_no, kind };
        let cases: Vec<Case> = vec![
            ("truncated", signed[..14].to_vec(), Some(k.clone()),
                line(15, BreakKind::Truncated { after: Some(13), last_checkpoint: Some(13) })),
            ("truncated mid-line", { let mut l = signed[..12].to_vec(); l.push(signed[12][..40].into()); l }, Some(k.clone()),
                line(13, BreakKind::Truncated { after: Some(11), last_checkpoint: None })),
            ("empty", vec![], None, line(1, BreakKind::Truncated { after: None, last_checkpoint: None })),
            ("reordered", { let mut l = signed.clone(); l.swap(4, 5); l }, Some(k.clone()),
                line(5, BreakKind::Reordered { expected: 4, found: 5 })),
            ("moved later", { let mut l = signed.clone(); let r = l.remove(3); l.insert(8, r); l }, Some(k.clone()),
                line(4, BreakKind::Reordered { expected: 3, found: 4 })),
            ("duplicated", { let mut l = signed.clone(); l.insert(6, l[5].clone()); l }, Some(k.clone()),
                line(7, BreakKind::Duplicate { seq: 5 })),
            ("dropped", { let mut l = signed.clone(); l.remove(6); l }, Some(k.clone()),
                line(7, BreakKind::Sequence { expected: 6, found: 7 })),
            ("missing capsule end", {
                // béta's end cut out of an unsigned log, the rest re-chained.
                let mut l = sample_log();
                l.remove(13);
                rechain(&l, 13, |_| {})
            }, None, line(14, BreakKind::MissingCapsuleEnd { capsule: "béta".into() })),
            ("wrong key", signed.clone(), Some(key(2)), line(1, BreakKind::WrongKey {
                found: hex(k.verifying_key().as_bytes()), expected: hex(key(2).verifying_key().as_bytes()) })),
            ("re-signed by another key", log_of(chain(7, Some(key(2))), 0), Some(k.clone()), line(1, BreakKind::WrongKey {
                found: hex(key(2).verifying_key().as_bytes()), expected: hex(k.verifying_key().as_bytes()) })),
            ("splice of two runs", { let mut l = signed[..8].to_vec(); l.extend_from_slice(&other_run[8..]); rechain(&l, 8, |_| {}) },
                Some(k.clone()), line(14, BreakKind::Splice)),
            ("second genesis", { let mut l = signed[..16].to_vec(); l.extend(other_run.iter().cloned()); l }, Some(k.clone()),
                line(17, BreakKind::Splice)),
            ("tampered checkpoint", rechain(&signed, 13, |r| r.sig = Some(hex(&[0x11; 64]))), Some(k.clone()),
                line(14, BreakKind::BadSignature)),
            ("record rewritten before a checkpoint", rechain(&signed, 5, |r| r.bytes = Some(999)), Some(k.clone()),
                line(14, BreakKind::BadSignature)),
            ("truncated and closed again", {
                let mut l = signed[..12].to_vec();
                l.push(signed[16].clone());
                rechain(&l, 12, |r| r.sig = None)
            }, None, line(13, BreakKind::MissingCapsuleEnd { capsule: "alpha".into() })),
            ("unsigned close in a signed log", rechain(&signed, 16, |r| r.sig = None), None,
                line(17, BreakKind::MissingCheckpoint)),
            ("checkpoint dropped after an end", { let mut l = signed.clone(); l.remove(13); rechain(&l, 13, |_| {}) }, None,
                line(14, BreakKind::MissingCheckpoint)),
            ("no genesis", rechain(&sample_log()[1..], 0, |_| {}), None, line(1, BreakKind::MissingGenesis)),
        ];
        for (name, lines, k, expected) in cases {
            let options = Options { key: k.map(|k| k.verifying_key()), open: false };
            let got = verify_with(lines.iter().map(String::as_str), &options);
            assert_eq!(got.as_ref().err(), Some(&expected), "{name}: {got:?}");
        }
    }

    #[test]
    fn truncation_is_reported_with_the_last_checkpoint() {
        let lines = signed_log();
        let b = check_key(&lines[..15], &key(1)).unwrap_err();
        assert_eq!(b.to_string(), "truncated after record 14 (signed up to the checkpoint at record 13)");
        let b = check(&sample_log()[..3]).unwrap_err();
        assert_eq!(b.to_string(), "truncated after record 2 (no signed checkpoint)");
        assert!(verify_open(lines[..15].iter().map(String::as_str)).is_ok());
    }

    /// Every single-byte change anywhere in the log is caught on that line or the next.
    #[test]
    fn any_changed_byte_is_caught_at_its_line() {
        for lines in [sample_log(), signed_log()] {
            for (i, line) in lines.iter().enumerate() {
                for pos in 0..line.len() {
                    if !line.is_char_boundary(pos) {
                        continue;
                    }
                    let ch = line[pos..].chars().next().unwrap();
                    for replacement in [if ch == '1' { '2' } else { '1' }, if ch == 'z' { 'y' } else { 'z' }] {
                        let mut changed = lines.clone();
                        let mut s = line.clone();
                        s.replace_range(pos..pos + ch.len_utf8(), replacement.encode_utf8(&mut [0; 4]));
                        changed[i] = s;
                        let err = check(&changed)
                            .expect_err(&format!("line {i} byte {pos} → {replacement:?} went unnoticed"));
                        assert!(
                            err.line_no == i + 1 || err.line_no == i + 2,
                            "line {i} byte {pos}: reported {err}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dropped_line_is_caught() {
        let n = sample_log().len();
        for i in 0..n - 1 {
            let mut lines = sample_log();
            lines.remove(i);
            let err = check(&lines).unwrap_err();
            assert_eq!(err.line_no, i + 1, "dropped line {i}: {err}");
            let expected = if i == 0 { BreakKind::Reordered { expected: 0, found: 1 } } else { BreakKind::Sequence { expected: i as u64, found: i as u64 + 1 } };
            assert!(err.kind == expected || i == 0, "{err}");
        }
    }

    #[test]
    fn duplicated_line_is_caught() {
        for lines in [sample_log(), signed_log()] {
            for i in 0..lines.len() {
                let mut l = lines.clone();
                l.insert(i + 1, lines[i].clone());
                let err = check(&l).unwrap_err();
                assert_eq!(err.line_no, i + 2, "duplicated line {i}: {err}");
                let last = i + 1 == lines.len();
                assert!(
                    matches!(err.kind, BreakKind::Duplicate { .. } | BreakKind::Splice) || (last && err.kind == BreakKind::AfterClose),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn reordered_lines_are_caught() {
        let n = sample_log().len();
        for i in 1..n - 1 {
            let mut lines = sample_log();
            lines.swap(i, i + 1);
            let err = check(&lines).unwrap_err();
            assert_eq!(err.line_no, i + 1, "swapped lines {i},{}: {err}", i + 1);
            assert!(matches!(err.kind, BreakKind::Reordered { .. }), "{err}");
        }
    }

    #[test]
    fn structural_breaks_are_named() {
        let lines = sample_log();
        let with = |i: usize, s: &str| {
            let mut l = lines.clone();
            l[i] = s.to_owned();
            check(&l).unwrap_err()
        };
        assert!(matches!(with(2, "not json").kind, BreakKind::NotJson(_)));
        assert!(matches!(with(2, "").kind, BreakKind::NotJson(_)));
        assert!(matches!(with(2, "{\"seq\":2}").kind, BreakKind::Structure(_)));
        // A record whose hash was recomputed after a field was removed: the missing
        // field is named, not reported as a hash mismatch.
        let body = unseal(&lines[4]).unwrap().0.replace("\"outcome\":\"ok\",", "");
        let resealed = format!("{},\"hash\":\"{}\"}}", &body[..body.len() - 1], blake3::hash(body.as_bytes()).to_hex());
        match with(4, &resealed).kind {
            BreakKind::Structure(msg) => assert!(msg.contains("outcome"), "{msg}"),
            other => panic!("{other:?}"),
        }
        // A line hashed as the first format hashed it (BLAKE3 of its JSON text) is named
        // as that format, not as an edit; any other stated hash is an edit.
        let body = unseal(&lines[0]).unwrap().0;
        let v1 = format!("{},\"hash\":\"{}\"}}", &body[..body.len() - 1], blake3::hash(body.as_bytes()).to_hex());
        assert_eq!(with(0, &v1).kind, BreakKind::FormatV1);
        assert!(with(0, &v1).to_string().contains("first record format"), "{}", with(0, &v1));
        let other = format!("{},\"hash\":\"{}\"}}", &body[..body.len() - 1], "ab".repeat(32));
        assert_eq!(with(0, &other).kind, BreakKind::Hash);
        // Spacing changes the bytes but not the record.
        let spaced = lines[4].replacen(",", ", ", 1);
        assert_eq!(with(4, &spaced).kind, BreakKind::NotCanonical);
        // Anything after the close record.
        let mut extra = lines.clone();
        extra.push(lines[3].clone());
        assert_eq!(check(&extra).unwrap_err(), Break { line_no: 16, kind: BreakKind::AfterClose });
        // A field that does not belong on an io record, re-chained.
        let stray = rechain(&lines, 4, |r| r.content = Some(GENESIS.into()));
        assert!(matches!(check(&stray).unwrap_err().kind, BreakKind::Structure(m) if m.contains("content")));
    }

    /// End records whose count disagrees with what precedes them, properly sealed so
    /// only the count check can catch them.
    #[test]
    fn end_record_counts_are_checked() {
        let lines = sample_log();
        let bad_end = rechain(&lines, 12, |r| r.count = Some(6));
        assert_eq!(check(&bad_end).unwrap_err(), Break { line_no: 13, kind: BreakKind::Count { expected: 5, found: 6 } });
        let bad_close = {
            let mut r: AuditRecord = serde_json::from_str(&unseal(&lines[14]).unwrap().0).unwrap();
            r.count = Some(3);
            let mut l = lines.clone();
            l[14] = seal(&r).0;
            l
        };
        assert_eq!(check(&bad_close).unwrap_err(), Break { line_no: 15, kind: BreakKind::Count { expected: 14, found: 3 } });
    }
}
