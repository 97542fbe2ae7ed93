//! Reads an audit log back and checks it: structure, sequence, time order, the hash of
//! every line, the link to the line before, and the counts of the end records. Reports
//! the first line where the log stops being what the chain wrote.

use std::collections::BTreeMap;
use std::fmt;

use super::record::{AuditRecord, FN_CAPSULE_END, FN_CLOSE, FN_SINK_FAILED, GENESIS, unseal};

/// What a whole, intact log holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Lines, the end records included.
    pub records: u64,
    /// Records of io operations.
    pub io_records: u64,
    /// Capsule end records.
    pub capsules_ended: u64,
    /// Whether the log ends in its close record (always true from `verify`).
    pub closed: bool,
    /// `hash` of the last line: what a host can keep to detect a later rewrite.
    pub head: String,
}

/// The first place the log is not what the chain wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// 1-based line number; for a missing close record, one past the last line.
    pub line_no: usize,
    pub kind: BreakKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakKind {
    /// Not JSON at all.
    NotJson(String),
    /// JSON, but not a record: no hash tail, a missing, unknown or mistyped field, or
    /// a count where none belongs.
    Structure(String),
    /// A record, but not in the one form the chain writes (spacing, order, `null`s).
    NotCanonical,
    /// The line's own hash does not match its content.
    Hash,
    /// `seq` is not the next number: a line was dropped, duplicated or moved.
    Sequence { expected: u64, found: u64 },
    /// `prev` is not the previous line's hash.
    Link,
    /// `t_ns` is earlier than the line before.
    TimeWentBack { previous: u64, found: u64 },
    /// An end record's count disagrees with the records before it.
    Count { expected: u64, found: u64 },
    /// A line after the close record.
    AfterClose,
    /// The log ends without its close record (truncated, or the image died).
    MissingClose,
    /// The log ends with the record of a failed sink: the image stopped its capsules
    /// there (fail-closed). The log up to it is intact; what failed is named.
    EndedBySinkFailure(String),
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line_no)?;
        match &self.kind {
            BreakKind::NotJson(e) => write!(f, "not JSON ({e})"),
            BreakKind::Structure(e) => write!(f, "not an audit record ({e})"),
            BreakKind::NotCanonical => write!(f, "not in canonical form (edited?)"),
            BreakKind::Hash => write!(f, "hash does not match the line (edited)"),
            BreakKind::Sequence { expected, found } => {
                write!(f, "seq {found}, expected {expected} (line dropped, duplicated or moved)")
            }
            BreakKind::Link => write!(f, "prev does not match the previous line's hash"),
            BreakKind::TimeWentBack { previous, found } => {
                write!(f, "t_ns {found} is before the previous line's {previous}")
            }
            BreakKind::Count { expected, found } => {
                write!(f, "count {found}, but {expected} records precede it")
            }
            BreakKind::AfterClose => write!(f, "a record after the close record (or after a sink's failure)"),
            BreakKind::MissingClose => write!(f, "the log ends without its close record"),
            BreakKind::EndedBySinkFailure(why) => {
                write!(f, "the log ends where an audit sink failed ({why}): intact up to there, the image stopped its capsules")
            }
        }
    }
}

/// Checks a complete log: it must end in its close record.
pub fn verify<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Summary, Break> {
    let mut walk = Walk::default();
    for line in lines {
        walk.step(line)?;
    }
    if let Some(why) = &walk.sink_failed {
        return Err(Break { line_no: walk.line_no, kind: BreakKind::EndedBySinkFailure(why.clone()) });
    }
    if !walk.closed {
        return Err(Break { line_no: walk.line_no + 1, kind: BreakKind::MissingClose });
    }
    Ok(walk.summary())
}

/// Checks a log that may still be growing: everything else as `verify`, but a missing
/// close record is no break.
pub fn verify_open<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Summary, Break> {
    let mut walk = Walk::default();
    for line in lines {
        walk.step(line)?;
    }
    Ok(walk.summary())
}

#[derive(Default)]
struct Walk {
    line_no: usize,
    next_seq: u64,
    prev: Option<String>,
    last_t_ns: u64,
    io_records: u64,
    capsules_ended: u64,
    per_capsule: BTreeMap<String, u64>,
    closed: bool,
    /// The failure a `FN_SINK_FAILED` record named: nothing may follow it.
    sink_failed: Option<String>,
}

impl Walk {
    fn step(&mut self, line: &str) -> Result<(), Break> {
        self.line_no += 1;
        let line_no = self.line_no;
        let at = |kind| Break { line_no, kind };
        if self.closed || self.sink_failed.is_some() {
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
        if serde_json::to_string(&record).ok().as_deref() != Some(body.as_str()) {
            return Err(at(BreakKind::NotCanonical));
        }
        if blake3::hash(body.as_bytes()).to_hex().as_str() != stated {
            return Err(at(BreakKind::Hash));
        }
        if record.seq != self.next_seq {
            return Err(at(BreakKind::Sequence { expected: self.next_seq, found: record.seq }));
        }
        if record.prev != self.prev.as_deref().unwrap_or(GENESIS) {
            return Err(at(BreakKind::Link));
        }
        if record.t_ns < self.last_t_ns {
            return Err(at(BreakKind::TimeWentBack {
                previous: self.last_t_ns,
                found: record.t_ns,
            }));
        }
        self.check_kind(&record).map_err(at)?;
        self.next_seq += 1;
        self.last_t_ns = record.t_ns;
        self.prev = Some(stated.to_owned());
        Ok(())
    }

    fn check_kind(&mut self, record: &AuditRecord) -> Result<(), BreakKind> {
        let count_check = |expected: u64| match record.count {
            Some(found) if found == expected => Ok(()),
            Some(found) => Err(BreakKind::Count { expected, found }),
            None => Err(BreakKind::Structure(format!("`{}` without a count", record.function))),
        };
        match record.function.as_str() {
            FN_CAPSULE_END => {
                let expected = self.per_capsule.get(&record.capsule).copied().unwrap_or(0);
                count_check(expected)?;
                self.per_capsule.remove(&record.capsule);
                self.capsules_ended += 1;
            }
            FN_CLOSE => {
                count_check(record.seq)?;
                self.closed = true;
            }
            FN_SINK_FAILED => {
                self.sink_failed = Some(record.error.clone().unwrap_or_default());
            }
            f if f.starts_with("astrid:audit/") => {
                return Err(BreakKind::Structure(format!("unknown audit record `{f}`")));
            }
            _ => {
                if record.count.is_some() {
                    return Err(BreakKind::Structure("count on an io record".into()));
                }
                *self.per_capsule.entry(record.capsule.clone()).or_default() += 1;
                self.io_records += 1;
            }
        }
        Ok(())
    }

    fn summary(&self) -> Summary {
        Summary {
            records: self.next_seq,
            io_records: self.io_records,
            capsules_ended: self.capsules_ended,
            closed: self.closed,
            head: self.prev.clone().unwrap_or_else(|| GENESIS.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::chain::Chain;
    use super::super::record::{IoEvent, Outcome, seal};
    use super::*;

    /// A small closed log: two capsules, every optional field used somewhere, a fixed
    /// clock so the bytes are the same in every run.
    fn sample_log() -> Vec<String> {
        let mut t = 1_000;
        let mut chain = Chain::with_clock(Box::new(move || {
            t += 250;
            t
        }));
        let mut lines = Vec::new();
        for i in 0..4u64 {
            let mut e =
                IoEvent::ok("alpha", "alice", "astrid:io/streams.input-stream.read", 10 + i);
            e.bytes = Some(100 * i);
            lines.push(chain.append(e).unwrap());
            let mut p = IoEvent::ok("béta", "bob", "astrid:io/poll.poll", 7);
            p.pollable_count = Some(3);
            p.ready_count = Some(1);
            lines.push(chain.append(p).unwrap());
        }
        let mut failed = IoEvent::ok("alpha", "alice", "astrid:io/poll.pollable.block", 5);
        failed.outcome = Outcome::Error;
        failed.error = Some("cancelled".into());
        lines.push(chain.append(failed).unwrap());
        lines.push(chain.capsule_end("alpha").unwrap().0);
        lines.push(chain.capsule_end("béta").unwrap().0);
        lines.push(chain.close().unwrap());
        lines
    }

    fn check(lines: &[String]) -> Result<Summary, Break> {
        verify(lines.iter().map(String::as_str))
    }

    #[test]
    fn chain_verifies() {
        let lines = sample_log();
        let summary = check(&lines).unwrap();
        assert_eq!(
            summary,
            Summary {
                records: 12,
                io_records: 9,
                capsules_ended: 2,
                closed: true,
                head: unseal(lines.last().unwrap()).unwrap().1.to_owned(),
            }
        );
        // The first line links to genesis; the end records carry their counts.
        assert!(lines[0].contains(&format!("\"prev\":\"{GENESIS}\"")));
        assert!(
            lines[9].contains("\"fn\":\"astrid:audit/capsule-end\"")
                && lines[9].contains("\"count\":5")
        );
        assert!(lines[10].contains("\"count\":4"));
        assert!(
            lines[11].contains("\"fn\":\"astrid:audit/close\"")
                && lines[11].contains("\"count\":11")
        );
    }

    /// Every single-byte change anywhere in the log is caught on that line or the next.
    #[test]
    fn any_changed_byte_is_caught_at_its_line() {
        let lines = sample_log();
        for (i, line) in lines.iter().enumerate() {
            for pos in 0..line.len() {
                if !line.is_char_boundary(pos) {
                    continue;
                }
                let ch = line[pos..].chars().next().unwrap();
                // Two replacements per position: one that keeps JSON plausible (a digit,
                // a hex letter) and one that usually does not.
                for replacement in
                    [if ch == '1' { '2' } else { '1' }, if ch == 'z' { 'y' } else { 'z' }]
                {
                    let mut changed = lines.clone();
                    let mut s = line.clone();
                    s.replace_range(pos..pos + ch.len_utf8(), replacement.encode_utf8(&mut [0; 4]));
                    changed[i] = s;
                    let err = check(&changed).expect_err(&format!(
                        "line {i} byte {pos} → {replacement:?} went unnoticed"
                    ));
                    assert!(
                        err.line_no == i + 1 || err.line_no == i + 2,
                        "line {i} byte {pos}: reported {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn dropped_line_is_caught() {
        for i in 0..11 {
            let mut lines = sample_log();
            lines.remove(i);
            let err = check(&lines).unwrap_err();
            assert_eq!(err.line_no, i + 1, "dropped line {i}: {err}");
            assert!(matches!(err.kind, BreakKind::Sequence { .. }), "{err}");
        }
        // Dropping the close record is a truncation.
        let mut lines = sample_log();
        lines.pop();
        assert_eq!(
            check(&lines).unwrap_err(),
            Break { line_no: 12, kind: BreakKind::MissingClose }
        );
        assert!(verify_open(lines.iter().map(String::as_str)).is_ok());
    }

    #[test]
    fn duplicated_line_is_caught() {
        for i in 0..12 {
            let mut lines = sample_log();
            let dup = lines[i].clone();
            lines.insert(i + 1, dup);
            let err = check(&lines).unwrap_err();
            assert_eq!(err.line_no, i + 2, "duplicated line {i}: {err}");
        }
    }

    #[test]
    fn reordered_lines_are_caught() {
        for i in 0..11 {
            let mut lines = sample_log();
            lines.swap(i, i + 1);
            let err = check(&lines).unwrap_err();
            assert_eq!(err.line_no, i + 1, "swapped lines {i},{}: {err}", i + 1);
            assert!(matches!(err.kind, BreakKind::Sequence { .. }), "{err}");
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
        let body = unseal(&lines[2]).unwrap().0.replace("\"outcome\":\"ok\",", "");
        let resealed = format!(
            "{},\"hash\":\"{}\"}}",
            &body[..body.len() - 1],
            blake3::hash(body.as_bytes()).to_hex()
        );
        match with(2, &resealed).kind {
            BreakKind::Structure(msg) => assert!(msg.contains("outcome"), "{msg}"),
            other => panic!("{other:?}"),
        }
        // Spacing changes the bytes but not the record.
        let spaced = lines[2].replacen(",", ", ", 1);
        assert_eq!(with(2, &spaced).kind, BreakKind::NotCanonical);
        // Anything after the close record.
        let mut extra = lines.clone();
        extra.push(lines[0].clone());
        assert_eq!(check(&extra).unwrap_err(), Break { line_no: 13, kind: BreakKind::AfterClose });
        // An empty log has no close record.
        assert_eq!(verify([]).unwrap_err(), Break { line_no: 1, kind: BreakKind::MissingClose });
    }

    /// End records whose count disagrees with what precedes them, properly sealed so
    /// only the count check can catch them.
    #[test]
    fn end_record_counts_are_checked() {
        let forged = |function: &str, count: u64| {
            let record = AuditRecord { t_ns: 5, capsule: "c".into(), prev: GENESIS.into(), ..super::super::chain::marker("c", function, count) };
            seal(&record).0
        };
        let line = forged(FN_CAPSULE_END, 1);
        assert_eq!(
            verify_open([line.as_str()]).unwrap_err(),
            Break { line_no: 1, kind: BreakKind::Count { expected: 0, found: 1 } }
        );
        let line = forged(FN_CLOSE, 3);
        assert_eq!(
            verify([line.as_str()]).unwrap_err(),
            Break { line_no: 1, kind: BreakKind::Count { expected: 0, found: 3 } }
        );
        let line = forged("astrid:io/poll.poll", 3);
        assert!(matches!(verify_open([line.as_str()]).unwrap_err().kind, BreakKind::Structure(_)));
    }
}
