//! Numbers, timestamps and links records into one tamper-evident sequence of lines.
//! Pure bookkeeping: it does no I/O, and the queue calls it under its own lock so the
//! order of sequence numbers is the order of lines in the sink.

use std::collections::BTreeMap;
use std::time::Instant;

use super::record::{AuditRecord, FN_CAPSULE_END, FN_CLOSE, GENESIS, IoEvent, Outcome, seal};

/// The chain has written its close record; nothing may follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainClosed;

pub struct Chain {
    next_seq: u64,
    prev: String,
    last_t_ns: u64,
    clock: Box<dyn FnMut() -> u64 + Send>,
    /// Io records per capsule since that capsule's last end record.
    per_capsule: BTreeMap<String, u64>,
    closed: bool,
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// A chain whose timestamps are monotonic nanoseconds since this call.
    pub fn new() -> Self {
        let origin = Instant::now();
        Self::with_clock(Box::new(move || {
            u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
        }))
    }

    /// A chain reading time from `clock` (tests use a fixed one for stable bytes).
    pub fn with_clock(clock: Box<dyn FnMut() -> u64 + Send>) -> Self {
        Chain {
            next_seq: 0,
            prev: GENESIS.to_owned(),
            last_t_ns: 0,
            clock,
            per_capsule: BTreeMap::new(),
            closed: false,
        }
    }

    /// The sequence number the next record gets (= records so far).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Appends the record of one io operation and returns its line.
    pub fn append(&mut self, event: IoEvent) -> Result<String, ChainClosed> {
        if self.closed {
            return Err(ChainClosed);
        }
        *self.per_capsule.entry(event.capsule.clone()).or_default() += 1;
        Ok(self.link(AuditRecord {
            seq: 0,
            t_ns: 0,
            capsule: event.capsule,
            principal: event.principal,
            function: event.function,
            outcome: event.outcome,
            elapsed_ns: event.elapsed_ns,
            bytes: event.bytes,
            pollable_count: event.pollable_count,
            ready_count: event.ready_count,
            error: event.error,
            count: None,
            prev: String::new(),
        }))
    }

    /// Appends the record that ends `capsule`, counting its io records since its last
    /// end record. Returns the line and that count.
    pub fn capsule_end(&mut self, capsule: &str) -> Result<(String, u64), ChainClosed> {
        if self.closed {
            return Err(ChainClosed);
        }
        let count = self.per_capsule.remove(capsule).unwrap_or(0);
        Ok((self.link(marker(capsule, FN_CAPSULE_END, count)), count))
    }

    /// Appends the final record, counting every record before it, and closes the chain.
    pub fn close(&mut self) -> Result<String, ChainClosed> {
        if self.closed {
            return Err(ChainClosed);
        }
        let line = self.link(marker("", FN_CLOSE, self.next_seq));
        self.closed = true;
        Ok(line)
    }

    fn link(&mut self, mut record: AuditRecord) -> String {
        // Clamp so the log never shows time going backwards, whatever the clock does.
        self.last_t_ns = (self.clock)().max(self.last_t_ns);
        record.seq = self.next_seq;
        record.t_ns = self.last_t_ns;
        record.prev = std::mem::take(&mut self.prev);
        let (line, hash) = seal(&record);
        self.prev = hash;
        self.next_seq += 1;
        line
    }
}

pub(super) fn marker(capsule: &str, function: &str, count: u64) -> AuditRecord {
    AuditRecord {
        seq: 0,
        t_ns: 0,
        capsule: capsule.to_owned(),
        principal: String::new(),
        function: function.to_owned(),
        outcome: Outcome::Ok,
        elapsed_ns: 0,
        bytes: None,
        pollable_count: None,
        ready_count: None,
        error: None,
        count: Some(count),
        prev: String::new(),
    }
}
