//! Numbers, timestamps and links records into one tamper-evident sequence of lines.
//! Pure bookkeeping: it does no I/O, and the queue calls it under its own lock so the
//! order of sequence numbers is the order of lines in the sink.
//!
//! The first line is a genesis record binding the log to its run (`RunBinding`); with a
//! signing key the chain also writes signed checkpoints: every [`CHECKPOINT_EVERY`]
//! records, after each capsule's end record, and in the close record itself.

use std::collections::BTreeMap;
use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey};

use super::record::{
    AuditRecord, FN_CAPSULE_END, FN_CAPSULE_LOAD, FN_CHECKPOINT, FN_CLOSE, FN_GENESIS, GENESIS, IoEvent, Outcome,
    checkpoint_message, hex, seal,
};

/// Records (of any kind but checkpoints) after which a signed chain writes a checkpoint.
pub const CHECKPOINT_EVERY: u64 = 256;

/// The chain has written its close record; nothing may follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainClosed;

/// What the genesis record commits to: the run and the image that wrote the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunBinding {
    /// 32 bytes the host made for this run (`ASTRID_RUN_NONCE`).
    pub nonce: [u8; 32],
    /// The image's build identity.
    pub build: String,
}

impl RunBinding {
    /// A binding for a log whose host gave no nonce (tests, benchmarks): a nonce unique
    /// to this process and moment, not secret.
    pub fn local(build: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut h = blake3::Hasher::new();
        h.update(b"astrid-audit-local-nonce");
        // No process id: Hermit has none (`std::process::id` panics there).
        let place = Box::new(0u8);
        h.update(&std::ptr::from_ref::<u8>(&place).addr().to_le_bytes());
        h.update(&COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_le_bytes());
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.update(&d.as_nanos().to_le_bytes());
        }
        RunBinding { nonce: *h.finalize().as_bytes(), build: build.to_owned() }
    }
}

pub struct Chain {
    next_seq: u64,
    prev: String,
    last_t_ns: u64,
    clock: Box<dyn FnMut() -> u64 + Send>,
    /// Io records per capsule since that capsule's last end record.
    per_capsule: BTreeMap<String, u64>,
    closed: bool,
    binding: RunBinding,
    key: Option<SigningKey>,
    /// Records since the last checkpoint (genesis included).
    since_checkpoint: u64,
    /// Seq of the last record an `append`/`capsule_end`/`capsule_load` asked for.
    last_seq: u64,
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
        Self::with_clock(Box::new(move || u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)))
    }

    /// A chain reading time from `clock` (tests use a fixed one for stable bytes), bound
    /// to a local nonce and unsigned until `bind` and `sign_with` say otherwise.
    pub fn with_clock(clock: Box<dyn FnMut() -> u64 + Send>) -> Self {
        Chain {
            next_seq: 0,
            prev: GENESIS.to_owned(),
            last_t_ns: 0,
            clock,
            per_capsule: BTreeMap::new(),
            closed: false,
            binding: RunBinding::local(&super::build_identity()),
            key: None,
            since_checkpoint: 0,
            last_seq: 0,
        }
    }

    /// Binds the log to `binding` (before its first record).
    #[must_use]
    pub fn bind(mut self, binding: RunBinding) -> Self {
        debug_assert_eq!(self.next_seq, 0, "bind before the first record");
        self.binding = binding;
        self
    }

    /// Signs checkpoints with `key` (before the first record).
    #[must_use]
    pub fn sign_with(mut self, key: SigningKey) -> Self {
        debug_assert_eq!(self.next_seq, 0, "sign before the first record");
        self.key = Some(key);
        self
    }

    /// The sequence number the next record gets (= records so far).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The seq of the last record a caller appended (not the genesis or a checkpoint).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Appends the record of one io operation and returns its lines: the genesis record
    /// first when it is the log's first, then the record, then a checkpoint when one is
    /// due.
    pub fn append(&mut self, event: IoEvent) -> Result<Vec<String>, ChainClosed> {
        self.open()?;
        *self.per_capsule.entry(event.capsule.clone()).or_default() += 1;
        let record = AuditRecord {
            capsule: event.capsule,
            principal: event.principal,
            function: event.function,
            outcome: event.outcome,
            elapsed_ns: event.elapsed_ns,
            bytes: event.bytes,
            pollable_count: event.pollable_count,
            ready_count: event.ready_count,
            error: event.error,
            ..blank("", "")
        };
        Ok(self.emit(record, false))
    }

    /// Appends the record of `capsule` loaded: the BLAKE3 of its bytes and of its
    /// manifest text.
    pub fn capsule_load(
        &mut self,
        capsule: &str,
        principal: &str,
        content: &[u8],
        manifest: Option<&str>,
    ) -> Result<Vec<String>, ChainClosed> {
        self.open()?;
        let record = AuditRecord {
            principal: principal.to_owned(),
            content: Some(blake3::hash(content).to_hex().to_string()),
            manifest: manifest.map(|m| blake3::hash(m.as_bytes()).to_hex().to_string()),
            ..blank(capsule, FN_CAPSULE_LOAD)
        };
        Ok(self.emit(record, false))
    }

    /// Appends the record that ends `capsule`, counting its io records since its last
    /// end record (and a checkpoint after it in a signed log). Returns the lines and
    /// that count.
    pub fn capsule_end(&mut self, capsule: &str) -> Result<(Vec<String>, u64), ChainClosed> {
        self.open()?;
        let count = self.per_capsule.remove(capsule).unwrap_or(0);
        Ok((self.emit(marker(capsule, FN_CAPSULE_END, count), true), count))
    }

    /// Appends the final record, counting every record before it, and closes the chain.
    /// In a signed log the close record carries the signature of its own position.
    pub fn close(&mut self) -> Result<Vec<String>, ChainClosed> {
        self.open()?;
        let mut lines = Vec::with_capacity(2);
        self.genesis_into(&mut lines);
        let mut record = marker("", FN_CLOSE, self.next_seq);
        record.sig = self.sign_here();
        lines.push(self.link(record));
        self.closed = true;
        Ok(lines)
    }

    fn open(&self) -> Result<(), ChainClosed> {
        if self.closed { Err(ChainClosed) } else { Ok(()) }
    }

    /// Links `record` (after the genesis, if still due), then a checkpoint when the
    /// interval is reached or `checkpoint_after` asks for one.
    fn emit(&mut self, record: AuditRecord, checkpoint_after: bool) -> Vec<String> {
        let mut lines = Vec::with_capacity(2);
        self.genesis_into(&mut lines);
        self.last_seq = self.next_seq;
        lines.push(self.link(record));
        self.since_checkpoint += 1;
        if self.key.is_some() && (checkpoint_after || self.since_checkpoint >= CHECKPOINT_EVERY) {
            let record = AuditRecord {
                nonce: Some(hex(&self.binding.nonce)),
                sig: self.sign_here(),
                ..blank("", FN_CHECKPOINT)
            };
            lines.push(self.link(record));
            self.since_checkpoint = 0;
        }
        lines
    }

    fn genesis_into(&mut self, lines: &mut Vec<String>) {
        if self.next_seq != 0 {
            return;
        }
        let record = AuditRecord {
            nonce: Some(hex(&self.binding.nonce)),
            build: Some(self.binding.build.clone()),
            key: self.key.as_ref().map(|k| hex(k.verifying_key().as_bytes())),
            ..blank("", FN_GENESIS)
        };
        lines.push(self.link(record));
        self.since_checkpoint = 1;
    }

    /// The signature of a checkpoint at the next seq, after the current head.
    fn sign_here(&self) -> Option<String> {
        let key = self.key.as_ref()?;
        let prev = blake3::Hash::from_hex(&self.prev).expect("the chain's own head is hex");
        let message = checkpoint_message(&self.binding.nonce, self.next_seq, prev.as_bytes());
        Some(hex(&key.sign(&message).to_bytes()))
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

/// A record of `function` with nothing but its capsule set.
pub(super) fn blank(capsule: &str, function: &str) -> AuditRecord {
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
        count: None,
        nonce: None,
        build: None,
        key: None,
        content: None,
        manifest: None,
        sig: None,
        prev: String::new(),
    }
}

pub(super) fn marker(capsule: &str, function: &str, count: u64) -> AuditRecord {
    AuditRecord { count: Some(count), ..blank(capsule, function) }
}
