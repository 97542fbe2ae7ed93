//! Numbers, timestamps and links records into one tamper-evident sequence of lines.
//! Pure bookkeeping, in two halves so that the capsule's thread does only the cheap one:
//!
//! - `Ledger` numbers and timestamps (and decides where the genesis and checkpoints go).
//!   The queue calls it under its own lock, so the order of sequence numbers is the
//!   order of lines in the sink. It turns each record into a `Stamped` entry.
//! - `Sealer` encodes a stamped entry into its line, hashes it and links it to the line
//!   before (and signs checkpoints). The queue's drainer thread calls it.
//!
//! `Chain` is both halves in one, for code that wants lines at once (tests, tools).
//!
//! The first line is a genesis record binding the log to its run (`RunBinding`); with a
//! signing key the chain also writes signed checkpoints: every [`CHECKPOINT_EVERY`]
//! records, after each capsule's end record, and in the close record itself.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey};

use super::record::{
    AuditRecord, Call, FN_CAPSULE_END, FN_CAPSULE_LOAD, FN_CHECKPOINT, FN_CLOSE, FN_GENESIS, Fields, IoEvent, Op, Outcome, checkpoint_message, hex, seal_into,
    names_digest, record_hash, seal_with_middle, unseal, write_middle,
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

/// An io record as the queue holds it: the event with its capsule and principal
/// replaced by their place in the ledger's table of names, its function by its place in
/// the table of function names, and its optional counters packed into one word. The
/// capsule's thread hands this over; the drainer reads the names from its own copy of
/// the tables, so no reference count of a capsule's shared names moves between the two
/// threads (each such atomic bounced a cache line between cores: most of what recording
/// cost the capsule's thread, measured hosted).
///
/// Small on purpose: with its time it is half a cache line (`Stamped`). Every line the
/// capsule writes for the drainer to read costs the capsule a transfer between cores
/// when it writes there again; hosted, per record, that was ~170 ns for the 128-byte
/// entry this replaced, ~70 ns at 64 bytes and ~45 ns at 32 (measured with a drainer
/// reading on the other CPU). A record this cannot hold (an error's text, all three
/// counters, a table past 65,536 entries) goes out of line (`Body::IoFull`).
#[derive(Clone, Debug)]
pub(super) struct Compact {
    pub elapsed_ns: u64,
    /// The bytes (`HAS_BYTES`), or the pollable count in the low half and the ready
    /// count in the high half (`HAS_POLLABLES`, `HAS_READY`): never both.
    counts: u64,
    /// The (capsule, principal) pair: an index into the table of names.
    pub who: u16,
    /// The WIT function: an index into the ledger's table of function names.
    pub function: u16,
    pub outcome: Outcome,
    /// Which counters `counts` holds (`HAS_*`).
    present: u8,
}

const HAS_BYTES: u8 = 1;
const HAS_POLLABLES: u8 = 2;
const HAS_READY: u8 = 4;

/// An io record that `Compact` cannot hold, out of line: the operation as the envelope
/// handed it over (its function read from the table, by `function`).
#[derive(Clone, Debug)]
pub(super) struct Full {
    pub who: u32,
    pub function: u32,
    pub op: Op,
}

/// An io record, from either form: its entries in the tables of names and functions,
/// and its operation's own fields (outcome, duration, counters, error; the rest blank).
#[derive(Clone, Copy)]
pub(super) struct IoView<'a> {
    pub who: u32,
    pub function: u32,
    pub fields: Fields<'a>,
}

/// The body of io record `op`, named by entries `who` and `function`: compact when it
/// fits, out of line when not.
pub(super) fn io_body(who: u32, function: u32, op: Op) -> Body {
    let counts = match (op.bytes, op.pollable_count, op.ready_count) {
        (Some(b), None, None) => Some((HAS_BYTES, b)),
        (None, p, r) => Some((
            if p.is_some() { HAS_POLLABLES } else { 0 } | if r.is_some() { HAS_READY } else { 0 },
            u64::from(p.unwrap_or(0)) | (u64::from(r.unwrap_or(0)) << 32),
        )),
        _ => None,
    };
    match (u16::try_from(who), u16::try_from(function), counts, &op.error) {
        (Ok(who), Ok(function), Some((present, counts)), None) => {
            Body::Io(Compact { elapsed_ns: op.elapsed_ns, counts, who, function, outcome: op.outcome, present })
        }
        _ => Body::IoFull(Box::new(Full { who, function, op })),
    }
}

impl Compact {
    fn view(&self) -> IoView<'static> {
        let has = |bit: u8| self.present & bit != 0;
        IoView {
            who: u32::from(self.who),
            function: u32::from(self.function),
            fields: Fields {
                outcome: self.outcome,
                elapsed_ns: self.elapsed_ns,
                bytes: has(HAS_BYTES).then_some(self.counts),
                pollable_count: has(HAS_POLLABLES).then_some(self.counts as u32),
                ready_count: has(HAS_READY).then_some((self.counts >> 32) as u32),
                ..Fields::blank("")
            },
        }
    }
}

impl Full {
    fn view(&self) -> IoView<'_> {
        let op = &self.op;
        IoView {
            who: self.who,
            function: self.function,
            fields: Fields {
                outcome: op.outcome,
                elapsed_ns: op.elapsed_ns,
                bytes: op.bytes,
                pollable_count: op.pollable_count,
                ready_count: op.ready_count,
                error: op.error.as_deref(),
                ..Fields::blank("")
            },
        }
    }
}

impl Body {
    /// The fields of an io record; `None` for any other kind.
    pub fn io(&self) -> Option<IoView<'_>> {
        match self {
            Body::Io(c) => Some(c.view()),
            Body::IoFull(f) => Some(f.view()),
            _ => None,
        }
    }
}

/// A capsule's load record, kept out of line (rare, and larger than an io record).
#[derive(Clone, Debug)]
pub(super) struct Loaded {
    pub capsule: Arc<str>,
    pub principal: Arc<str>,
    pub content: [u8; 32],
    pub manifest: Option<[u8; 32]>,
}

/// A capsule's end record, kept out of line.
#[derive(Clone, Debug)]
pub(super) struct Ended {
    pub capsule: Arc<str>,
    pub count: u64,
}

/// The (capsule, principal) pairs records have named, in the order first named, each
/// with the index of its capsule's first entry. Only ever appended to (a boot has few
/// capsules), so an index stays valid and the drainer's copy only ever grows.
pub(super) type Names = Vec<(Arc<str>, Arc<str>, u32)>;

/// What a stamped entry is, before it is encoded.
#[derive(Clone, Debug)]
pub(super) enum Body {
    Genesis,
    Io(Compact),
    IoFull(Box<Full>),
    Load(Box<Loaded>),
    End(Box<Ended>),
    Checkpoint,
    Close { count: u64 },
}

/// Where the ledger puts the entries it stamps: the queue's ring, or a plain list. One
/// `push` per entry (a generic `Extend` of a one-element array cost the capsule's
/// hand-over a tenth of its time hosted, measured).
pub(super) trait Stamps {
    fn put(&mut self, entry: Stamped);
}

impl Stamps for std::collections::VecDeque<Stamped> {
    #[inline]
    fn put(&mut self, entry: Stamped) {
        self.push_back(entry);
    }
}

impl Stamps for Vec<Stamped> {
    #[inline]
    fn put(&mut self, entry: Stamped) {
        self.push(entry);
    }
}

/// A record timed, waiting to be sealed: half a cache line. Its sequence number is its
/// place: the ledger numbers entries in the order it hands them over, and the sealer
/// seals them in that order (`Sealer::next_seq`).
#[derive(Clone, Debug)]
#[repr(align(32))]
pub(super) struct Stamped {
    pub t_ns: u64,
    pub body: Body,
}

const _: () = assert!(std::mem::size_of::<Stamped>() == 32, "two stamped entries fill one cache line");

/// The numbering half: sequence, time, per-capsule counts, the close, and where the
/// genesis and the checkpoints go.
pub(super) struct Ledger {
    next_seq: u64,
    last_t_ns: u64,
    clock: Box<dyn FnMut() -> u64 + Send>,
    /// The instant `clock` counts from, when it is the real monotonic clock: a call's
    /// record then takes its time from when the call ended, read once by the envelope.
    origin: Option<Instant>,
    /// Every (capsule, principal) pair named so far (`Compact::who` indexes it).
    names: Names,
    /// The entry the last record named: a capsule's records come in runs.
    last_who: usize,
    /// Every function name records have named, in the order first named
    /// (`Compact::function` indexes it). Only ever appended to; a boot's functions are
    /// the WIT's few hundred at most.
    functions: Vec<Cow<'static, str>>,
    /// Io records per capsule since that capsule's last end record, at its first entry's
    /// index in `names`.
    per_capsule: Vec<u64>,
    closed: bool,
    signed: bool,
    /// Records since the last checkpoint (genesis included).
    since_checkpoint: u64,
    /// Seq of the last record an `append`/`capsule_end`/`capsule_load` asked for.
    last_seq: u64,
}

impl Ledger {
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn open(&self) -> Result<(), ChainClosed> {
        if self.closed { Err(ChainClosed) } else { Ok(()) }
    }

    #[cfg(test)]
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The place of `name` in the table of function names (added when new), by its text.
    /// Only calls through the queue's lock come here; a capsule's lane keeps the places
    /// of the names it uses by their address (`queue::Lane`).
    #[allow(clippy::ptr_arg, reason = "a name borrowed for 'static is kept as it is, not copied")]
    pub fn function(&mut self, name: &Cow<'static, str>) -> u32 {
        if let Some(i) = self.functions.iter().position(|f| **f == **name) {
            return i as u32;
        }
        self.functions.push(name.clone());
        (self.functions.len() - 1) as u32
    }

    /// The time of the latest record stamped (the log's clock never goes back).
    pub fn last_t_ns(&self) -> u64 {
        self.last_t_ns
    }

    /// The log's clock now (not before the latest record's time).
    pub fn now_ns(&mut self) -> u64 {
        (self.clock)().max(self.last_t_ns)
    }

    /// The entry of `capsule` and `principal` in the table of names (added when new),
    /// and its capsule's first entry. A pointer comparison in the usual case: the
    /// capsule's thread hands over the same shared names with every record.
    pub fn who(&mut self, capsule: &Arc<str>, principal: &Arc<str>) -> (u32, u32) {
        let same = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b) || **a == **b;
        let is = |e: &(Arc<str>, Arc<str>, u32)| same(&e.0, capsule) && same(&e.1, principal);
        let i = if self.names.get(self.last_who).is_some_and(is) {
            self.last_who
        } else if let Some(i) = self.names.iter().position(is) {
            i
        } else {
            let first = self.names.iter().find(|e| *e.0 == **capsule).map_or(self.names.len() as u32, |e| e.2);
            self.names.push((capsule.clone(), principal.clone(), first));
            self.per_capsule.push(0);
            self.names.len() - 1
        };
        self.last_who = i;
        (i as u32, self.names[i].2)
    }

    /// Stamps one io operation's record (after the genesis when it is the first).
    pub fn append(&mut self, event: IoEvent, out: &mut impl Stamps) -> Result<(), ChainClosed> {
        let IoEvent { capsule, principal, op } = event;
        self.append_call(Call { capsule: &capsule, principal: &principal, op, ended: None }, out)
    }

    /// As `append`, for a call handed over with borrowed names.
    pub fn append_call(&mut self, call: Call<'_>, out: &mut impl Stamps) -> Result<(), ChainClosed> {
        self.open()?;
        let (who, capsule) = self.who(call.capsule, call.principal);
        self.per_capsule[capsule as usize] += 1;
        let Call { op, ended, .. } = call;
        let function = self.function(&op.function);
        let at = ended.zip(self.origin).map(|(ended, origin)| u64::try_from(ended.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX));
        self.genesis_into(out);
        self.emit_at(io_body(who, function, op), at, false, out);
        Ok(())
    }

    /// Numbers an io entry a capsule's thread made without the queue's lock (a lane's:
    /// body from `io_body`, time when its call ended), counting it to `capsule` (its
    /// first entry in the table of names); after the genesis when it is the first.
    pub fn admit(&mut self, entry: Stamped, capsule: u32, out: &mut impl Stamps) -> Result<(), ChainClosed> {
        self.open()?;
        if let Some(count) = self.per_capsule.get_mut(capsule as usize) {
            *count += 1;
        }
        self.genesis_into(out);
        self.emit_at(entry.body, Some(entry.t_ns), false, out);
        Ok(())
    }

    /// The instant the log's time counts from, when it is the real monotonic clock.
    pub fn origin(&self) -> Option<Instant> {
        self.origin
    }

    /// Stamps the record of `capsule` loaded, with `content`, the BLAKE3 of its bytes
    /// (the loader hashed them while checking them), and the BLAKE3 of its manifest text.
    pub fn capsule_load(&mut self, capsule: &str, principal: &str, content: &[u8; 32], manifest: Option<&str>, out: &mut impl Stamps) -> Result<(), ChainClosed> {
        self.open()?;
        let body = Body::Load(Box::new(Loaded {
            capsule: capsule.into(),
            principal: principal.into(),
            content: *content,
            manifest: manifest.map(|m| *blake3::hash(m.as_bytes()).as_bytes()),
        }));
        self.emit(body, false, out);
        Ok(())
    }

    /// Stamps the end record of `capsule` (and a checkpoint after it in a signed log);
    /// returns how many io records it counts.
    pub fn capsule_end(&mut self, capsule: &str, out: &mut impl Stamps) -> Result<u64, ChainClosed> {
        self.open()?;
        let first = self.names.iter().find(|e| &*e.0 == capsule).map(|e| e.2 as usize);
        let count = first.map_or(0, |i| std::mem::take(&mut self.per_capsule[i]));
        self.emit(Body::End(Box::new(Ended { capsule: capsule.into(), count })), true, out);
        Ok(count)
    }

    /// Stamps the final record, counting every record before it, and closes.
    pub fn close(&mut self, out: &mut impl Stamps) -> Result<(), ChainClosed> {
        self.open()?;
        self.genesis_into(out);
        let count = self.next_seq;
        let stamped = self.stamp(Body::Close { count });
        out.put(stamped);
        self.closed = true;
        Ok(())
    }

    fn emit(&mut self, body: Body, checkpoint_after: bool, out: &mut impl Stamps) {
        self.genesis_into(out);
        self.emit_at(body, None, checkpoint_after, out);
    }

    /// As `emit` after the genesis, stamped with time `at` (`None`: now).
    fn emit_at(&mut self, body: Body, at: Option<u64>, checkpoint_after: bool, out: &mut impl Stamps) {
        self.last_seq = self.next_seq;
        let stamped = self.stamp_at(body, at);
        out.put(stamped);
        self.since_checkpoint += 1;
        if self.signed && (checkpoint_after || self.since_checkpoint >= CHECKPOINT_EVERY) {
            let stamped = self.stamp(Body::Checkpoint);
            out.put(stamped);
            self.since_checkpoint = 0;
        }
    }

    fn genesis_into(&mut self, out: &mut impl Stamps) {
        if self.next_seq == 0 {
            let stamped = self.stamp(Body::Genesis);
            out.put(stamped);
            self.since_checkpoint = 1;
        }
    }

    fn stamp(&mut self, body: Body) -> Stamped {
        self.stamp_at(body, None)
    }

    fn stamp_at(&mut self, body: Body, at: Option<u64>) -> Stamped {
        // Clamp so the log never shows time going backwards, whatever the clock does (or
        // when a call that ended earlier is stamped after one that ended later).
        let t = match at {
            Some(t) => t,
            None => (self.clock)(),
        };
        self.last_t_ns = t.max(self.last_t_ns);
        self.next_seq += 1;
        Stamped { t_ns: self.last_t_ns, body }
    }
}

/// The encoding half: the link to the line before, the run binding and the key.
#[derive(Clone)]
pub(super) struct Sealer {
    /// The sequence number of the next entry sealed: entries come in the ledger's order.
    next_seq: u64,
    prev: blake3::Hash,
    /// `prev` in hex, as the next line carries it (the tail of the last line).
    prev_hex: String,
    binding: RunBinding,
    nonce_hex: String,
    key: Option<SigningKey>,
    key_hex: Option<String>,
    /// The ledger's table of names, as far as the records sealed so far need it
    /// (`learn` brings it up to date).
    names: Names,
    /// The ledger's table of function names, likewise.
    functions: Vec<Cow<'static, str>>,
    /// The encoded middles of recent io records (`write_middle`), by capsule, principal,
    /// function and outcome: a capsule's records repeat them, and encoding them again for
    /// every record is most of the encoder's work (under QEMU TCG above all).
    middles: Vec<Middle>,
    /// The slot the next new middle replaces once `middles` is full.
    next_slot: usize,
}

/// How many encoded middles the sealer keeps.
const MIDDLES: usize = 32;

/// One encoded middle and what it encodes: the names and the function by their entries
/// in the ledger's tables.
#[derive(Clone)]
struct Middle {
    who: u32,
    function: u32,
    outcome: Outcome,
    text: String,
    /// `names_digest` of the same four: what the record's hash covers in their place.
    names: [u8; 32],
}

impl Middle {
    fn encodes(&self, e: &IoView<'_>) -> bool {
        self.who == e.who && self.function == e.function && self.outcome == e.fields.outcome
    }
}

impl Sealer {
    fn new(binding: RunBinding, key: Option<SigningKey>) -> Self {
        Sealer {
            next_seq: 0,
            prev: blake3::Hash::from_bytes([0; 32]),
            prev_hex: super::record::GENESIS.to_owned(),
            nonce_hex: hex(&binding.nonce),
            key_hex: key.as_ref().map(|k| hex(k.verifying_key().as_bytes())),
            binding,
            key,
            names: Vec::new(),
            functions: Vec::new(),
            middles: Vec::with_capacity(MIDDLES),
            next_slot: 0,
        }
    }

    /// Brings the sealer's copies of the tables of names and functions up to the
    /// ledger's (under the queue's lock, before sealing what was stamped with them):
    /// clones only the entries it has not seen.
    pub fn learn(&mut self, ledger: &Ledger) {
        self.names.extend(ledger.names.iter().skip(self.names.len()).cloned());
        self.functions.extend(ledger.functions.iter().skip(self.functions.len()).cloned());
    }

    /// The name of function entry `i`.
    fn function(&self, i: u32) -> &str {
        &self.functions[i as usize]
    }

    /// The capsule and principal of entry `who`.
    fn name(&self, who: u32) -> (&str, &str) {
        let (capsule, principal, _) = &self.names[who as usize];
        (capsule, principal)
    }

    /// The capsule of entry `who` (its first entry in the table of names), once learnt.
    pub fn capsule_of(&self, who: u32) -> Option<u32> {
        self.names.get(who as usize).map(|e| e.2)
    }

    /// The encoded middle of `e`, made and kept when it is new.
    fn middle(&mut self, e: &IoView<'_>) -> usize {
        if let Some(i) = self.middles.iter().position(|m| m.encodes(e)) {
            return i;
        }
        let (capsule, principal) = self.name(e.who);
        let function = self.function(e.function);
        let mut text = String::with_capacity(128);
        let outcome = e.fields.outcome;
        write_middle(capsule, principal, function, outcome, &mut text);
        let names = names_digest(capsule, principal, function, outcome);
        let m = Middle { who: e.who, function: e.function, outcome, text, names };
        if self.middles.len() < MIDDLES {
            self.middles.push(m);
            self.middles.len() - 1
        } else {
            let i = self.next_slot;
            self.middles[i] = m;
            self.next_slot = (i + 1) % MIDDLES;
            i
        }
    }

    /// Appends the line of `entry` (the next in the ledger's order) to `line` and makes
    /// it the chain's head.
    pub fn seal(&mut self, entry: &Stamped, line: &mut String) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(e) = entry.body.io() {
            // The usual record: its names and outcome from the kept middle.
            let i = self.middle(&e);
            let f = Fields { seq, t_ns: entry.t_ns, prev: self.prev_hex.as_str(), prev_is_hex: true, ..e.fields };
            let m = &self.middles[i];
            let hash = seal_with_middle(&f, &m.text, &m.names, self.prev.as_bytes(), line);
            self.set_head(hash, line);
            return;
        }
        let mut f = Fields { seq, t_ns: entry.t_ns, prev: self.prev_hex.as_str(), prev_is_hex: true, ..Fields::blank("") };
        let (content, manifest, sig);
        match &entry.body {
            Body::Io(_) | Body::IoFull(_) => unreachable!("io records are sealed above"),
            Body::Genesis => {
                f.function = FN_GENESIS;
                f.nonce = Some(&self.nonce_hex);
                f.build = Some(&self.binding.build);
                f.key = self.key_hex.as_deref();
            }
            Body::Load(loaded) => {
                content = hex(&loaded.content);
                manifest = loaded.manifest.map(|m| hex(&m));
                f.function = FN_CAPSULE_LOAD;
                f.capsule = &loaded.capsule;
                f.principal = &loaded.principal;
                f.content = Some(&content);
                f.manifest = manifest.as_deref();
            }
            Body::End(ended) => {
                f.function = FN_CAPSULE_END;
                f.capsule = &ended.capsule;
                f.count = Some(ended.count);
            }
            Body::Checkpoint => {
                sig = self.sign(seq);
                f.function = FN_CHECKPOINT;
                f.nonce = Some(&self.nonce_hex);
                f.sig = sig.as_deref();
            }
            Body::Close { count } => {
                sig = self.sign(seq);
                f.function = FN_CLOSE;
                f.count = Some(*count);
                f.sig = sig.as_deref();
            }
        }
        let hash = seal_into(&f, self.prev.as_bytes(), line);
        self.set_head(hash, line);
    }

    /// Makes the line just sealed (hash `hash`) the chain's head.
    fn set_head(&mut self, hash: blake3::Hash, line: &str) {
        self.prev = hash;
        // The line ends in `"hash":"<64 hex digits>"}`: the next line's `prev`.
        let tail = &line[line.len() - 66..line.len() - 2];
        debug_assert_eq!(tail, hash.to_hex().as_str());
        self.prev_hex.clear();
        self.prev_hex.push_str(tail);
    }

    /// The signature of a checkpoint at `seq`, after the current head.
    fn sign(&self, seq: u64) -> Option<String> {
        let key = self.key.as_ref()?;
        let message = checkpoint_message(&self.binding.nonce, seq, self.prev.as_bytes());
        Some(hex(&key.sign(&message).to_bytes()))
    }
}

/// Both halves in one: records in, lines out.
pub struct Chain {
    ledger: Ledger,
    binding: RunBinding,
    key: Option<SigningKey>,
    sealer: Option<Sealer>,
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
        let mut chain = Self::with_clock(Box::new(move || u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)));
        chain.ledger.origin = Some(origin);
        chain
    }

    /// A chain reading time from `clock` (tests use a fixed one for stable bytes), bound
    /// to a local nonce and unsigned until `bind` and `sign_with` say otherwise.
    pub fn with_clock(clock: Box<dyn FnMut() -> u64 + Send>) -> Self {
        Chain {
            ledger: Ledger {
                next_seq: 0,
                last_t_ns: 0,
                clock,
                origin: None,
                names: Vec::new(),
                last_who: 0,
                functions: Vec::new(),
                per_capsule: Vec::new(),
                closed: false,
                signed: false,
                since_checkpoint: 0,
                last_seq: 0,
            },
            binding: RunBinding::local(&super::build_identity()),
            key: None,
            sealer: None,
        }
    }

    /// Binds the log to `binding` (before its first record).
    #[must_use]
    pub fn bind(mut self, binding: RunBinding) -> Self {
        debug_assert_eq!(self.ledger.next_seq, 0, "bind before the first record");
        self.binding = binding;
        self
    }

    /// Signs checkpoints with `key` (before the first record).
    #[must_use]
    pub fn sign_with(mut self, key: SigningKey) -> Self {
        debug_assert_eq!(self.ledger.next_seq, 0, "sign before the first record");
        self.key = Some(key);
        self.ledger.signed = true;
        self
    }

    /// The two halves, for the queue: the ledger under its lock, the sealer on its
    /// drainer.
    pub(super) fn split(self) -> (Ledger, Sealer) {
        debug_assert_eq!(self.ledger.next_seq, 0, "split before the first record");
        (self.ledger, Sealer::new(self.binding, self.key))
    }

    /// The sequence number the next record gets (= records so far).
    pub fn next_seq(&self) -> u64 {
        self.ledger.next_seq
    }

    /// The seq of the last record a caller appended (not the genesis or a checkpoint).
    pub fn last_seq(&self) -> u64 {
        self.ledger.last_seq
    }

    pub fn is_closed(&self) -> bool {
        self.ledger.closed
    }

    fn lines(&mut self, stamped: Vec<Stamped>) -> Vec<String> {
        let sealer = self.sealer.get_or_insert_with(|| Sealer::new(self.binding.clone(), self.key.clone()));
        sealer.learn(&self.ledger);
        stamped
            .iter()
            .map(|s| {
                let mut line = String::new();
                sealer.seal(s, &mut line);
                line
            })
            .collect()
    }

    /// Appends the record of one io operation and returns its lines: the genesis record
    /// first when it is the log's first, then the record, then a checkpoint when one is
    /// due.
    pub fn append(&mut self, event: IoEvent) -> Result<Vec<String>, ChainClosed> {
        let mut out = Vec::new();
        self.ledger.append(event, &mut out)?;
        Ok(self.lines(out))
    }

    /// Appends the record of `capsule` loaded: `content`, the BLAKE3 of its bytes, and
    /// the BLAKE3 of its manifest text.
    pub fn capsule_load(&mut self, capsule: &str, principal: &str, content: &[u8; 32], manifest: Option<&str>) -> Result<Vec<String>, ChainClosed> {
        let mut out = Vec::new();
        self.ledger.capsule_load(capsule, principal, content, manifest, &mut out)?;
        Ok(self.lines(out))
    }

    /// Appends the record that ends `capsule`, counting its io records since its last
    /// end record (and a checkpoint after it in a signed log). Returns the lines and
    /// that count.
    pub fn capsule_end(&mut self, capsule: &str) -> Result<(Vec<String>, u64), ChainClosed> {
        let mut out = Vec::new();
        let count = self.ledger.capsule_end(capsule, &mut out)?;
        Ok((self.lines(out), count))
    }

    /// Appends the final record, counting every record before it, and closes the chain.
    /// In a signed log the close record carries the signature of its own position.
    pub fn close(&mut self) -> Result<Vec<String>, ChainClosed> {
        let mut out = Vec::new();
        self.ledger.close(&mut out)?;
        Ok(self.lines(out))
    }
}

/// For the benchmarks: the sealer alone (encoding, hashing, linking) over `n` io records
/// shaped like `event`, into one reused line, with no queue and no sink; then BLAKE3
/// alone over the last line `n` times. Returns (sealing, hashing) time.
pub fn seal_and_hash_only(event: &IoEvent, n: u64) -> (std::time::Duration, std::time::Duration) {
    let (mut ledger, mut sealer) = Chain::with_clock(Box::new(|| 0)).bind(RunBinding::local("bench")).split();
    let mut stamped = Vec::new();
    ledger.append(event.clone(), &mut stamped).expect("a fresh chain is open");
    sealer.learn(&ledger);
    let body = stamped.pop().expect("the genesis and the record").body;
    let mut line = String::with_capacity(320);
    let started = Instant::now();
    for seq in 0..n {
        line.clear();
        sealer.seal(&Stamped { t_ns: seq * 1000, body: body.clone() }, &mut line);
        std::hint::black_box(&line);
    }
    let sealing = started.elapsed();
    // Hashing alone: what the sealer hashes per record (its names' digest is kept).
    let record: AuditRecord = serde_json::from_str(&unseal(&line).expect("a sealed line").0).expect("the line parses");
    let names = names_digest(&record.capsule, &record.principal, &record.function, record.outcome);
    let prev = [7u8; 32];
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(record_hash(&std::hint::black_box(&record).fields(), &names, &prev));
    }
    (sealing, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::super::record::seal;
    use super::*;

    /// A call handed over by the envelope is stamped with the moment it ended (the clock
    /// read once per call), and the log's time still never goes backwards: a call that
    /// ended before the record ahead of it takes that record's time.
    #[test]
    fn a_call_is_stamped_when_it_ended_and_time_never_goes_back() {
        let mut chain = Chain::new();
        let (c, p): (Arc<str>, Arc<str>) = ("c".into(), "p".into());
        let call = |ended| Call {
            capsule: &c,
            principal: &p,
            op: Op::ok("f", 1),
            ended: Some(ended),
        };
        let mut out = Vec::new();
        chain.ledger.append_call(call(Instant::now() + std::time::Duration::from_secs(5)), &mut out).unwrap();
        chain.ledger.append_call(call(Instant::now()), &mut out).unwrap();
        let t: Vec<u64> = out.iter().map(|s| s.t_ns).collect();
        assert_eq!(t.len(), 3, "the genesis and two records");
        assert!(t[0] < 1_000_000_000 && t[1] >= 5_000_000_000, "the first call's time is when it ended: {t:?}");
        assert_eq!(t[2], t[1], "the second ended earlier and is clamped: {t:?}");
    }

    /// Which io records travel in half a cache line and which out of line, and that
    /// either form gives back exactly the fields it was given.
    #[test]
    fn io_records_are_compact_when_they_fit_and_whole_either_way() {
        let op = |bytes: Option<u64>, pollables: Option<u32>, ready: Option<u32>, error: Option<&str>| Op {
            function: Cow::Borrowed("f"),
            outcome: Outcome::Ok,
            elapsed_ns: u64::MAX,
            bytes,
            pollable_count: pollables,
            ready_count: ready,
            error: error.map(str::to_owned),
        };
        let big = u32::from(u16::MAX) + 1;
        let cases: [(&str, u32, u32, Op, bool); 10] = [
            ("no counters", 3, 4, op(None, None, None, None), true),
            ("bytes", 3, 4, op(Some(u64::MAX), None, None, None), true),
            ("pollables and ready", 3, 4, op(None, Some(u32::MAX), Some(7), None), true),
            ("pollables alone", 3, 4, op(None, Some(0), None, None), true),
            ("ready alone", 3, 4, op(None, None, Some(u32::MAX), None), true),
            ("bytes and a count", 3, 4, op(Some(1), Some(2), None, None), false),
            ("all three counters", 3, 4, op(Some(1), Some(2), Some(3), None), false),
            ("an error's text", 3, 4, op(None, None, None, Some("closed")), false),
            ("a name past 65,535", big, 4, op(Some(1), None, None, None), false),
            ("a function past 65,535", 3, big, op(Some(1), None, None, None), false),
        ];
        for (what, who, function, op, compact) in cases {
            let body = io_body(who, function, op.clone());
            assert_eq!(matches!(body, Body::Io(_)), compact, "{what}: compact?");
            let e = body.io().expect("an io record");
            let f = e.fields;
            let got = (e.who, e.function, f.outcome, f.elapsed_ns, f.bytes, f.pollable_count, f.ready_count, f.error);
            let want = (who, function, op.outcome, op.elapsed_ns, op.bytes, op.pollable_count, op.ready_count, op.error.as_deref());
            assert_eq!(got, want, "{what}: the fields came back changed");
        }
        assert_eq!(std::mem::size_of::<Stamped>(), 32, "two entries to a cache line");
    }

    /// The table of function names: one entry per name, whether it comes as a constant
    /// or as text made at run time, and many of them.
    #[test]
    fn function_names_are_kept_once() {
        let mut chain = Chain::with_clock(Box::new(|| 0));
        let ledger = &mut chain.ledger;
        let poll = ledger.function(&Cow::Borrowed("astrid:io/poll.poll"));
        assert_eq!(ledger.function(&Cow::Owned("astrid:io/poll.poll".to_owned())), poll, "the same text, made at run time");
        // Many names, each found again after the others.
        let names: Vec<&'static str> = (0..256).map(|i| &*Box::leak(format!("f{i}").into_boxed_str())).collect();
        let first: Vec<u32> = names.iter().map(|n| ledger.function(&Cow::Borrowed(*n))).collect();
        let again: Vec<u32> = names.iter().rev().map(|n| ledger.function(&Cow::Borrowed(*n))).collect();
        assert_eq!(first, again.into_iter().rev().collect::<Vec<_>>(), "each name keeps its entry");
        assert_eq!(ledger.functions.len(), 1 + 256, "one entry per name");
    }

    /// The table of names: a capsule's records under two principals count toward its
    /// one end record, another capsule's do not, copies of a name's text are the same
    /// entry, and a capsule ended and seen again counts afresh.
    #[test]
    fn names_are_kept_once_and_counted_per_capsule() {
        let mut chain = Chain::with_clock(Box::new(|| 0));
        let (a, p, q): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "p".into(), "q".into());
        let mut lines = Vec::new();
        for (capsule, principal) in [(&a, &p), (&a, &q), (&"b".into(), &p), (&"a".into(), &"p".into())] {
            lines.extend(chain.append(IoEvent::ok(capsule.clone(), principal.clone(), "f", 1)).unwrap());
        }
        assert_eq!(chain.ledger.names().len(), 3, "(a, p), (a, q) and (b, p): {:?}", chain.ledger.names());
        let (end, count) = chain.capsule_end("a").unwrap();
        assert_eq!(count, 3, "both of a's principals count toward a");
        lines.extend(end);
        lines.extend(chain.append(IoEvent::ok(a.clone(), q.clone(), "f", 1)).unwrap());
        let (end, count) = chain.capsule_end("a").unwrap();
        assert_eq!(count, 1, "counted afresh after its end record");
        lines.extend(end);
        let (end, count) = chain.capsule_end("b").unwrap();
        assert_eq!(count, 1);
        lines.extend(end);
        lines.extend(chain.close().unwrap());
        let records: Vec<AuditRecord> = lines.iter().map(|l| serde_json::from_str(&unseal(l).unwrap().0).unwrap()).collect();
        let named: Vec<(&str, &str)> = records.iter().filter(|r| r.function == "f").map(|r| (r.capsule.as_str(), r.principal.as_str())).collect();
        assert_eq!(named, [("a", "p"), ("a", "q"), ("b", "p"), ("a", "p"), ("a", "q")], "each record names its own pair");
        super::super::verify::verify(lines.iter().map(String::as_str)).expect("the log verifies");
    }

    /// The drainer's kept middles write exactly what the plain encoder writes: io records
    /// of many capsules, principals and functions (more than it keeps, so middles are
    /// replaced), with odd characters, shared and fresh names, every outcome and optional
    /// field, each line equal to `seal` of the record it parses to. The records go through
    /// the ledger's table of names as the queue's do.
    #[test]
    fn kept_middles_write_the_canonical_line() {
        let mut clock = 0;
        let (mut ledger, mut sealer) = Chain::with_clock(Box::new(move || {
            clock += 7;
            clock
        }))
        .split();
        let names = ["a.wasm", "b", "quote\"d", "back\\slash", "é漢\u{2028}", "tab\there", ""];
        let shared: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut pick = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state as usize) % n
        };
        let mut prev = super::super::record::GENESIS.to_string();
        for seq in 0..3000u64 {
            // Shared names (pointer hits), fresh copies of the same text, and many
            // distinct functions (more than MIDDLES) so that kept middles are replaced.
            let capsule = if pick(2) == 0 { shared[pick(names.len())].clone() } else { Arc::from(names[pick(names.len())]) };
            let principal = shared[pick(names.len())].clone();
            let function: std::borrow::Cow<'static, str> =
                if pick(3) == 0 { format!("astrid:io/f{}", pick(2 * MIDDLES)).into() } else { ["astrid:io/poll.poll", "weird\"fn\u{7f}"][pick(2)].into() };
            let mut e = IoEvent::ok(capsule, principal, function, pick(1 << 20) as u64);
            e.op.outcome = [Outcome::Ok, Outcome::Error, Outcome::Cancelled, Outcome::Refused, Outcome::Trap][pick(5)];
            e.op.bytes = (pick(2) == 0).then(|| pick(1 << 16) as u64);
            e.op.pollable_count = (pick(2) == 0).then(|| pick(9) as u32);
            e.op.ready_count = (pick(2) == 0).then(|| pick(9) as u32);
            e.op.error = (pick(3) == 0).then(|| names[pick(names.len())].to_string());
            let mut stamped = Vec::new();
            ledger.append(e, &mut stamped).expect("open");
            sealer.learn(&ledger);
            for entry in &stamped {
                let mut line = String::new();
                sealer.seal(entry, &mut line);
                let (body, _) = unseal(&line).expect("a sealed line");
                let record: AuditRecord = serde_json::from_str(&body).expect("JSON");
                assert_eq!(record.prev, prev, "linked to the line before");
                assert_eq!(seal(&record).0, line, "seq {seq}: the kept middle wrote another line than the encoder");
                prev = seal(&record).1;
            }
        }
        assert!(ledger.names().len() > names.len(), "pairs of names were told apart");
        assert_eq!(sealer.middles.len(), MIDDLES, "the kept middles filled and were replaced");
    }
}
