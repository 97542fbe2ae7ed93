//! The bounded, lossless queue between the io path and a sink. Records are numbered and
//! timed as they enter (the chain's `Ledger`, under the queue's lock, so queue order is
//! log order) and nothing more: one drainer thread seals them into lines (the chain's
//! `Sealer`: encoding, hashing, signing) and hands them to the sink in batches, off the
//! capsule's thread. A full queue blocks the recording thread: backpressure, never a
//! dropped record (a capsule's wait for room ends with its cancellation).
//!
//! Fail-closed: when the sink fails, no further record is accepted (so nothing goes on
//! unrecorded), the log's failure signal fires (launch cancels every capsule on it),
//! what was already sealed still goes to the sinks that survive (a `TeeSink` keeps the
//! serial console when the file breaks), followed by one record naming the failure.

use std::borrow::Cow;
use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::chain::{Chain, Ledger, Sealer, Stamped};
use super::record::{Call, FN_SINK_FAILED, IoEvent, Outcome};
use super::sink::Sink;
use crate::wait::CancelToken;

/// How often a writer waiting for room looks at its cancellation.
const ROOM_CHECK: Duration = Duration::from_millis(5);

/// What one capsule's unwritten io records may take of the queue: half, so that a
/// capsule flooding host calls waits behind its own records while the others' still
/// find room.
fn capsule_share(capacity: usize) -> usize {
    (capacity / 2).max(1)
}

/// The longest a record may wait in the queue while its capsule keeps running: a writer
/// that finds the oldest record older than this waits until the drainer has caught up,
/// as it does for room (the drainer runs below the capsules' priority in the image, so
/// on a CPU they keep busy it writes only when one of them waits; this is the wait).
/// A capsule in pure compute checks it on every epoch tick (`AuditHandle::keep_up`).
pub const MAX_LAG: Duration = Duration::from_millis(250);

/// Entries a capsule's lane holds before its thread takes the queue's lock (`Lane`).
pub const LANE_SLOTS: usize = 64;

/// How often an idle drainer looks at the lanes: a lane's first entry after the drainer
/// went idle normally wakes it, but without the lock the two can cross (the entry then
/// waits at most this long, or for the capsule's next call).
const IDLE_POLL: Duration = Duration::from_millis(50);

/// How long `unwritten` waits for the drainer to finish writing its batch.
const UNWRITTEN_PATIENCE: Duration = Duration::from_millis(500);

/// Most lines handed to the sink in one call; bounds the drainer's own copy.
const MAX_BATCH: usize = 256;

/// Records in the queue at which a writer wakes a lingering drainer (at most half a
/// capsule's share, so that a capsule does not fill its share first): below it the
/// drainer wakes itself every linger (`platform::audit_linger`) while records keep
/// coming, and takes what came. A capsule's thread thus signals the drainer only for the
/// first record after a pause, when the drainer falls far behind, and when someone waits
/// for the records to be written: each signal is a futex call, and hosted one that wakes
/// a thread asleep on the other CPU costs the caller 20–60 µs.
fn wake_at(capacity: usize) -> usize {
    (capsule_share(capacity) / 2).clamp(1, 2 * MAX_BATCH)
}

/// The drainer's stack: it seals (BLAKE3, Ed25519 at checkpoints) and writes batches,
/// nothing deep; under TCG a thread's start costs in proportion to its stack (std's
/// default is 1 MiB).
const DRAINER_STACK: usize = 256 << 10;

/// What the drainer is doing, so that a writer signals it only when it must.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drainer {
    /// Taking, sealing or writing a batch: it looks at the queue again when done.
    Busy,
    /// Waiting at most a linger for more records: signalled only for a full batch.
    Lingering,
    /// Asleep until the next record (nothing came for a whole linger).
    Idle,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditError {
    /// The log was closed; nothing more can be recorded.
    Closed,
    /// The sink failed. The log fails closed: no later record is accepted, because
    /// operations that cannot be audited must not go ahead.
    SinkFailed(String),
    /// The writer was cancelled while its record waited for room in a full queue.
    Cancelled,
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditError::Closed => write!(f, "the audit log is closed"),
            AuditError::SinkFailed(e) => write!(f, "the audit sink failed: {e}"),
            AuditError::Cancelled => write!(f, "cancelled while waiting for room in the audit queue"),
        }
    }
}

impl std::error::Error for AuditError {}

/// Counters for tests and diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// Records sealed into the chain (= the next sequence number).
    pub sealed: u64,
    /// Records the sink accepted and flushed.
    pub written: u64,
    /// Most records ever waiting in the queue at once (never above `capacity`).
    pub high_water: usize,
    pub capacity: usize,
    /// Attempts to record that were refused (log closed or sink failed).
    pub refused: u64,
}

struct Shared {
    state: Mutex<State>,
    /// The drainer's half. Lock order: `seal`, then `state`.
    seal: Mutex<Sealing>,
    /// Set by `unwritten`: the drainer stops after the batch it is writing, so that a
    /// panic hook can put the rest on the console.
    stop_for_dump: std::sync::atomic::AtomicBool,
    not_full: Condvar,
    /// The drainer's doorbell: it sleeps on this word (a futex) without holding the
    /// state's lock; a writer that must wake it bumps the word and wakes it. (A drainer
    /// waking on a condition variable sleeps again on the lock when a writer holds it,
    /// and the writer letting go then pays a futex wake: hosted, 20–60 µs when the
    /// drainer's CPU is the other one, measured as ~30 µs stalls of the capsule.)
    bell: std::sync::atomic::AtomicU32,
    /// Signalled when `written` moves or the sink fails.
    progress: Condvar,
    /// Fired once when the sink fails.
    failure: CancelToken,
    /// Set once the log takes no more records (failed or closed): a lane's writer then
    /// takes the lock, and is refused there.
    refusing: AtomicBool,
    /// The drainer sleeps until rung (`Drainer::Idle`): a lane's writer rings it.
    drainer_idle: AtomicBool,
}

struct Sealing {
    sealer: Sealer,
    /// Records the drainer has taken from the queue and not yet written, oldest first:
    /// it takes the whole queue at once by swapping the two rings (its lock is held for
    /// that swap only), then seals and writes them `MAX_BATCH` at a time.
    taken: VecDeque<Stamped>,
    /// The lines of the batch the drainer is writing.
    lines: Vec<String>,
}

struct State {
    ledger: Ledger,
    queue: VecDeque<Stamped>,
    capacity: usize,
    /// Records the drainer has taken and not yet written (`Sealing::taken` and its batch
    /// in hand): they count against `capacity` as if still queued.
    in_flight: usize,
    /// The time of the oldest of those.
    in_flight_oldest: Option<u64>,
    /// Io records each capsule has unwritten, queued or in flight (at its first entry in
    /// the ledger's table of names): none may hold more than its share.
    queued_by: Vec<usize>,
    written: u64,
    high_water: usize,
    refused: u64,
    failed: Option<String>,
    /// Whether, and how, the drainer waits at its doorbell.
    drainer: Drainer,
    /// Threads waiting in `wait_written`: the drainer does not linger for them.
    flushers: usize,
    /// The capsules' lanes: whoever holds this state numbers what they hold first.
    lanes: Vec<Arc<LaneRing>>,
}

impl State {
    /// Whether the oldest record waiting was stamped more than `MAX_LAG` before `now_ns`.
    fn lagging(&self, now_ns: u64) -> bool {
        let oldest = self.in_flight_oldest.or_else(|| self.queue.front().map(|e| e.t_ns));
        oldest.is_some_and(|t| now_ns.saturating_sub(t) > MAX_LAG.as_nanos() as u64)
    }

    /// Records not yet written: queued, or taken by the drainer.
    fn held(&self) -> usize {
        self.queue.len() + self.in_flight
    }

    /// Numbers everything the lanes hold into the queue, lane by lane (each in its
    /// writer's order), and lets go of the lanes whose writers are gone. Never waits and
    /// never refuses for room: a lane's writer checked its share before writing (so a
    /// capsule holds at most its share and one lane more); after the close the entries
    /// are dropped and counted as refused.
    fn admit_lanes(&mut self) {
        if self.lanes.is_empty() {
            return;
        }
        let State { lanes, ledger, queue, queued_by, refused, .. } = self;
        for lane in lanes.iter() {
            // Only the lock's holder moves `head`; the writer publishes `tail` after it
            // has written the entries before it.
            let head = lane.head.load(Ordering::Relaxed);
            let tail = lane.tail.load(Ordering::Acquire);
            if head == tail {
                continue;
            }
            let capsule = lane.capsule as usize;
            if queued_by.len() <= capsule {
                queued_by.resize(capsule + 1, 0);
            }
            for at in head..tail {
                // SAFETY: entries in head..tail were written by the lane's only writer
                // before it published `tail` (Release; read above with Acquire), and the
                // writer does not touch them again until `head` has passed them; only
                // the holder of the state's lock (this thread) reads and advances `head`,
                // so each entry is read out exactly once.
                let entry = unsafe { (*lane.slots[at % LANE_SLOTS].get()).assume_init_read() };
                if ledger.admit(entry, lane.capsule, queue).is_ok() {
                    queued_by[capsule] += 1;
                } else {
                    *refused += 1;
                }
            }
            lane.head.store(tail, Ordering::Release);
        }
        self.high_water = self.high_water.max(self.queue.len() + self.in_flight);
        let State { lanes, .. } = self;
        lanes.retain(|lane| !lane.closed.load(Ordering::Acquire) || lane.head.load(Ordering::Relaxed) != lane.tail.load(Ordering::Acquire));
        self.mirror_shares();
    }

    /// Tells each lane how many more records its capsule may have unwritten (after
    /// admitting, appending or giving back): what is left of its share and of the
    /// queue, for its writer's check without the lock.
    fn mirror_shares(&self) {
        let (share, free) = (capsule_share(self.capacity), self.capacity.saturating_sub(self.held()));
        for lane in &self.lanes {
            let own = self.queued_by.get(lane.capsule as usize).copied().unwrap_or(0);
            lane.room.store(share.saturating_sub(own).min(free), Ordering::Relaxed);
        }
    }
}

impl Shared {
    /// Signals a waiting drainer (once: it is busy from then on).
    fn wake_drainer(&self, st: &mut State) {
        if st.drainer != Drainer::Busy {
            st.drainer = Drainer::Busy;
            self.ring();
        }
    }

    /// Rings the drainer's doorbell: a drainer about to sleep at it does not.
    fn ring(&self) {
        self.bell.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        crate::platform::futex_wake(&self.bell, 1);
    }

    /// The drainer's way to the lock: writers hold it for well under a microsecond, so
    /// where another CPU may be running one it tries for a while before it sleeps on
    /// the lock (and makes the writer pay for waking it).
    fn lock_eagerly(&self) -> MutexGuard<'_, State> {
        let patience = crate::platform::spin_before_sleep();
        if !patience.is_zero() {
            let started = std::time::Instant::now();
            loop {
                for _ in 0..64 {
                    match self.state.try_lock() {
                        Ok(st) => return st,
                        Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                        Err(TryLockError::WouldBlock) => std::hint::spin_loop(),
                    }
                }
                if started.elapsed() >= patience {
                    break;
                }
            }
        }
        self.lock()
    }

    /// The drainer's wait at its doorbell, from `st` (which it lets go of) until rung or
    /// `timeout`; returns the lock again, and the drainer busy.
    fn wait_at_bell<'a>(&'a self, mut st: MutexGuard<'a, State>, how: Drainer, timeout: Option<Duration>) -> MutexGuard<'a, State> {
        let seen = self.bell.load(std::sync::atomic::Ordering::SeqCst);
        st.drainer = how;
        self.drainer_idle.store(how == Drainer::Idle, Ordering::SeqCst);
        drop(st);
        // A ring after `seen` was read makes this return at once (the word differs).
        let _ = crate::platform::futex_wait(&self.bell, seen, timeout);
        let mut st = self.lock_eagerly();
        st.drainer = Drainer::Busy;
        self.drainer_idle.store(false, Ordering::Relaxed);
        st.admit_lanes();
        st
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for room, then appends the entries `make` stamps (a record, with the genesis
    /// before the first and a checkpoint after it when one is due: the queue may hold
    /// up to two entries over `capacity`). Fails without stamping when the log is closed
    /// or broken, so refused records never take a sequence number.
    fn push<T>(
        &self,
        cancel: Option<&CancelToken>,
        who: Option<(&Arc<str>, &Arc<str>)>,
        make: impl FnOnce(&mut Ledger, &mut VecDeque<Stamped>) -> T,
    ) -> Result<(MutexGuard<'_, State>, T), AuditError> {
        let mut st = self.lock();
        // What the lanes hold goes first: each writer's own order is kept.
        st.admit_lanes();
        // A capsule's io record: whose share it takes.
        let capsule = who.map(|(c, p)| st.ledger.who(c, p).1 as usize);
        loop {
            if let Some(e) = &st.failed {
                let e = AuditError::SinkFailed(e.clone());
                st.refused += 1;
                return Err(e);
            }
            if st.ledger.is_closed() {
                st.refused += 1;
                return Err(AuditError::Closed);
            }
            let share = capsule_share(st.capacity);
            let own = capsule.and_then(|c| st.queued_by.get(c)).copied().unwrap_or(0);
            if st.held() < st.capacity && own < share {
                break;
            }
            // Full: only the drainer makes room.
            self.wake_drainer(&mut st);
            st = match cancel {
                None => self.not_full.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(c) if c.is_cancelled() => {
                    st.refused += 1;
                    return Err(AuditError::Cancelled);
                }
                Some(_) => self.not_full.wait_timeout(st, ROOM_CHECK).unwrap_or_else(|p| p.into_inner()).0,
            };
            st.admit_lanes();
        }
        let State { ledger, queue, .. } = &mut *st;
        let out = make(ledger, queue);
        if let Some(c) = capsule {
            if st.queued_by.len() <= c {
                st.queued_by.resize(c + 1, 0);
            }
            st.queued_by[c] += 1;
        }
        st.high_water = st.high_water.max(st.held());
        st.mirror_shares();
        // Wake an idle drainer for the first record after a pause, a lingering one only
        // when it has fallen far behind; otherwise it comes back on its own.
        let due = match st.drainer {
            Drainer::Idle => true,
            Drainer::Lingering => st.queue.len() >= wake_at(st.capacity),
            Drainer::Busy => false,
        };
        if due {
            self.wake_drainer(&mut st);
        }
        // Records left unwritten too long: this writer waits for the drainer to catch up
        // (its own record is in; a cancellation ends only the wait).
        let now = st.ledger.last_t_ns();
        if st.lagging(now) {
            st = self.catch_up(st, now, cancel);
        }
        Ok((st, out))
    }

    /// Waits, from `st`, until no record stamped `MAX_LAG` before `now_ns` is left in the
    /// queue, the log has failed or stopped for a panic hook, or `cancel` fires.
    fn catch_up<'a>(&'a self, mut st: MutexGuard<'a, State>, now_ns: u64, cancel: Option<&CancelToken>) -> MutexGuard<'a, State> {
        let stopped = || self.stop_for_dump.load(std::sync::atomic::Ordering::SeqCst);
        while st.lagging(now_ns) && st.failed.is_none() && !stopped() && !cancel.is_some_and(CancelToken::is_cancelled) {
            self.wake_drainer(&mut st);
            st = self.not_full.wait_timeout(st, ROOM_CHECK).unwrap_or_else(|p| p.into_inner()).0;
        }
        st
    }

    /// Waits until the sink has written and flushed the first `target` records.
    fn wait_written<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        target: u64,
    ) -> Result<(), AuditError> {
        // Someone waits for these records: the drainer must not linger over them.
        st.flushers += 1;
        self.wake_drainer(&mut st);
        let result = loop {
            if st.written >= target {
                break Ok(());
            }
            if let Some(e) = &st.failed {
                break Err(AuditError::SinkFailed(e.clone()));
            }
            if self.stop_for_dump.load(std::sync::atomic::Ordering::SeqCst) {
                break Err(AuditError::SinkFailed("the log was stopped to put its records on the console".into()));
            }
            st = self.progress.wait_timeout(st, ROOM_CHECK).unwrap_or_else(|p| p.into_inner()).0;
        };
        st.flushers -= 1;
        result
    }
}

/// The image's audit log: owns the drainer thread. Closing it (or dropping it) appends
/// the close record and waits until the sink has everything.
pub struct AuditLog {
    shared: Arc<Shared>,
    drainer: Option<JoinHandle<()>>,
}

/// What recording threads hold; cheap to clone.
#[derive(Clone)]
pub struct AuditHandle {
    shared: Arc<Shared>,
}

impl AuditLog {
    /// Starts a log writing to `sink`, holding at most `capacity` records in flight.
    ///
    /// # Panics
    /// If `capacity` is zero, or the drainer thread cannot be started.
    pub fn start(sink: impl Sink + 'static, capacity: usize) -> AuditLog {
        Self::start_with(Chain::new(), sink, capacity)
    }

    /// As `start`, with a given (fresh) chain, e.g. one with a test clock.
    pub fn start_with(chain: Chain, mut sink: impl Sink + 'static, capacity: usize) -> AuditLog {
        assert!(capacity > 0, "an audit queue needs room for one record");
        let (ledger, sealer) = chain.split();
        // Two rings, swapped whole between the writers and the drainer; room for the
        // genesis and a checkpoint over `capacity`.
        let ring = || {
            let mut ring = VecDeque::with_capacity(capacity + 2);
            if crate::platform::LAZY_PAGES {
                // Touch every slot once now: hosted, its pages are mapped on first touch,
                // and the first lap of a fresh ring took a page fault every ~32 records on
                // the capsule's thread (1–2 µs each, measured).
                ring.extend((0..capacity + 2).map(|_| Stamped { t_ns: 0, body: super::chain::Body::Checkpoint }));
                ring.clear();
            }
            ring
        };
        let (queue, taken) = (ring(), ring());
        let shared = Arc::new(Shared {
            seal: Mutex::new(Sealing { sealer, taken, lines: Vec::with_capacity(MAX_BATCH) }),
            stop_for_dump: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(State {
                ledger,
                queue,
                capacity,
                in_flight: 0,
                in_flight_oldest: None,
                queued_by: Vec::new(),
                written: 0,
                high_water: 0,
                refused: 0,
                failed: None,
                drainer: Drainer::Busy,
                flushers: 0,
                lanes: Vec::new(),
            }),
            not_full: Condvar::new(),
            bell: std::sync::atomic::AtomicU32::new(0),
            progress: Condvar::new(),
            failure: CancelToken::new(),
            refusing: AtomicBool::new(false),
            drainer_idle: AtomicBool::new(false),
        });
        let drainer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("astrid-audit".into())
                .stack_size(DRAINER_STACK)
                .spawn(move || drain_loop(&shared, &mut sink))
                .expect("cannot start the audit drainer thread")
        };
        AuditLog { shared, drainer: Some(drainer) }
    }

    pub fn handle(&self) -> AuditHandle {
        AuditHandle { shared: Arc::clone(&self.shared) }
    }

    /// Appends the close record (its count: every record before it), waits until the
    /// sink has written and flushed everything, and stops the drainer. Returns how many
    /// records the log holds, the close record included.
    pub fn close(mut self) -> Result<u64, AuditError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<u64, AuditError> {
        let pushed = self.shared.push(None, None, |ledger, queue| {
            ledger.close(queue).expect("only the owner closes, once");
            ledger.next_seq()
        });
        // Lanes' writers now take the lock, and are refused there.
        self.shared.refusing.store(true, Ordering::SeqCst);
        let result =
            pushed.and_then(|(st, total)| self.shared.wait_written(st, total).map(|()| total));
        if result.is_err() {
            // Let the drainer see there is nothing more to come.
            self.shared.ring();
        }
        if let Some(drainer) = self.drainer.take() {
            let _ = drainer.join();
        }
        result
    }
}

impl Drop for AuditLog {
    /// Image shutdown without an explicit close still drains and seals the log.
    fn drop(&mut self) {
        if self.drainer.is_some() {
            let _ = self.close_inner();
        }
    }
}

impl AuditHandle {
    /// Seals one io record into the log, waiting while the queue is full. Returns its
    /// sequence number.
    pub fn record(&self, event: IoEvent) -> Result<u64, AuditError> {
        self.record_unless(event, None)
    }

    /// As `record`, for a capsule's call: a wait for room in a full queue ends with the
    /// capsule's cancellation (`AuditError::Cancelled`).
    pub fn record_unless(&self, event: IoEvent, cancel: Option<&CancelToken>) -> Result<u64, AuditError> {
        let IoEvent { capsule, principal, op } = event;
        self.record_call(Call { capsule: &capsule, principal: &principal, op, ended: None }, cancel)
    }

    /// As `record_unless`, for a host call handed over by the envelope: its names
    /// borrowed, its time the moment it ended.
    pub fn record_call(&self, call: Call<'_>, cancel: Option<&CancelToken>) -> Result<u64, AuditError> {
        let (_st, seq) = self.shared.push(cancel, Some((call.capsule, call.principal)), |ledger, queue| {
            ledger.append_call(call, queue).expect("checked open under the same lock");
            ledger.last_seq()
        })?;
        Ok(seq)
    }

    /// Appends the record of a capsule the engine loaded: `content`, the BLAKE3 of its
    /// bytes, and the BLAKE3 of its manifest text. Returns its sequence number.
    pub fn capsule_load(
        &self,
        capsule: &str,
        principal: &str,
        content: &[u8; 32],
        manifest: Option<&str>,
    ) -> Result<u64, AuditError> {
        let (_st, seq) = self.shared.push(None, None, |ledger, queue| {
            ledger.capsule_load(capsule, principal, content, manifest, queue).expect("checked open under the same lock");
            ledger.last_seq()
        })?;
        Ok(seq)
    }

    /// Appends the end record of `capsule` and waits until the sink has everything up
    /// to it. Returns the number of io records the capsule produced.
    pub fn capsule_end(&self, capsule: &str) -> Result<u64, AuditError> {
        let (st, count) = self
            .shared
            .push(None, None, |ledger, queue| ledger.capsule_end(capsule, queue).expect("checked open under the same lock"))?;
        let target = st.ledger.next_seq();
        self.shared.wait_written(st, target)?;
        Ok(count)
    }

    /// For a capsule's thread that has not called the host for a while (the engine's
    /// epoch tick): when a record has waited longer than `MAX_LAG`, waits until the
    /// drainer has caught up, or `cancel` fires. A capsule computing on the CPU the
    /// drainer shares thus gives it the CPU at least that often.
    pub fn keep_up(&self, cancel: &CancelToken) {
        let mut st = self.shared.lock();
        st.admit_lanes();
        let now = st.ledger.now_ns();
        if st.lagging(now) {
            drop(self.shared.catch_up(st, now, Some(cancel)));
        }
    }

    /// Waits until every record sealed so far is written and flushed.
    pub fn drain(&self) -> Result<(), AuditError> {
        let mut st = self.shared.lock();
        st.admit_lanes();
        let target = st.ledger.next_seq();
        self.shared.wait_written(st, target)
    }

    /// Fires when the sink fails: what launch cancels every capsule on.
    pub fn failure(&self) -> CancelToken {
        self.shared.failure.clone()
    }

    /// For a panic hook: stops the drainer after the batch it is writing and returns the
    /// lines of every record it has not written (taken or still queued), sealed here as the drainer would have, so
    /// the console can carry them on from the last line written. Waits at most
    /// `UNWRITTEN_PATIENCE` for that batch; `None` when it does not end by then (or the
    /// state stays locked, by the panicking thread perhaps). The log takes nothing more
    /// to its sinks afterwards.
    pub fn unwritten(&self) -> Option<Vec<String>> {
        self.shared.stop_for_dump.store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.ring();
        let started = std::time::Instant::now();
        let sealing = loop {
            match self.shared.seal.try_lock() {
                Ok(s) => break s,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if started.elapsed() < UNWRITTEN_PATIENCE => std::thread::sleep(ROOM_CHECK),
                Err(TryLockError::WouldBlock) => return None,
            }
        };
        let mut sealer = sealing.sealer.clone();
        let mut st = match self.shared.state.try_lock() {
            Ok(st) => st,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        st.admit_lanes();
        sealer.learn(&st.ledger);
        let pending: Vec<Stamped> = sealing.taken.iter().chain(&st.queue).cloned().collect();
        drop(st);
        Some(
            pending
                .iter()
                .map(|entry| {
                    let mut line = String::new();
                    sealer.seal(entry, &mut line);
                    line
                })
                .collect(),
        )
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.shared.lock();
        QueueStats {
            sealed: st.ledger.next_seq(),
            written: st.written,
            high_water: st.high_water,
            capacity: st.capacity,
            refused: st.refused,
        }
    }
}

/// The shared half of a capsule's lane: a ring of io entries its thread made without the
/// queue's lock, waiting to be numbered. One writer (the `Lane`, owned by the capsule's
/// store); one reader at a time (whoever holds the queue's state lock).
struct LaneRing {
    slots: Box<[UnsafeCell<MaybeUninit<Stamped>>]>,
    /// Entries read out (moved only by the holder of the state lock).
    head: AtomicUsize,
    /// Entries published (moved only by the writer).
    tail: AtomicUsize,
    /// The writer is gone: the lane is let go of once read out.
    closed: AtomicBool,
    /// The capsule's first entry in the table of names (its counts and share).
    capsule: u32,
    /// How many more records the capsule may have unwritten, as of the last change under
    /// the lock (`State::mirror_shares`): the lane's writer writes only below it.
    room: AtomicUsize,
}

// SAFETY: the slots are shared under a single-writer, single-reader protocol: the writer
// (`Lane`, which is not `Clone` and records through `&mut self`) writes only slots the
// reader has released (`tail - head < LANE_SLOTS`, `head` read with Acquire) and then
// publishes them with a Release store of `tail`; the reader reads only slots below the
// `tail` it loaded with Acquire, and only while holding the state lock, then releases them
// with a Release store of `head`. The entries are `Send` (names by index, boxes).
unsafe impl Sync for LaneRing {}
// SAFETY: as above; the ring owns its entries, which are `Send`.
unsafe impl Send for LaneRing {}

impl Drop for LaneRing {
    fn drop(&mut self) {
        let (head, tail) = (*self.head.get_mut(), *self.tail.get_mut());
        for at in head..tail {
            // SAFETY: `&mut self`: no writer or reader is left; head..tail are the entries
            // published and not read out, each initialized once.
            unsafe { self.slots[at % LANE_SLOTS].get_mut().assume_init_drop() };
        }
    }
}

/// A capsule's way into the log for its host calls: the call's record goes into the
/// capsule's own lane with a plain store and no lock, when it can (`record_call`), and
/// whoever next holds the queue's lock numbers it (the drainer, each linger). The queue's
/// lock, two atomic operations a call that waited on the lines the drainer had read, was
/// most of what recording cost the capsule's thread hosted (measured: README, "Half a
/// cache line per record").
///
/// Records go into the lane in the capsule's order and are numbered before any record
/// anyone takes the lock to append, so each thread's order is the log's. Between
/// capsules, the log's order is the order their lanes are read in (a record's time is
/// clamped never to go backwards along the log, as before).
pub struct Lane {
    handle: AuditHandle,
    ring: Arc<LaneRing>,
    /// The (capsule, principal) entry in the table of names.
    who: u32,
    /// The log's clock's zero, when it is the real monotonic clock (else every record
    /// takes the lock, to be stamped by the log's own clock).
    origin: Option<std::time::Instant>,
    /// Function names this capsule's calls have named, by address: (address, length,
    /// entry in the table of function names).
    functions: Vec<(usize, usize, u32)>,
    /// `tail` as this writer published it, and `head` as it last read it.
    tail: usize,
    head: usize,
}

impl AuditHandle {
    /// The lane of a capsule's host calls, under `capsule` and `principal`.
    pub fn lane(&self, capsule: &Arc<str>, principal: &Arc<str>) -> Lane {
        let mut st = self.shared.lock();
        let (who, first) = st.ledger.who(capsule, principal);
        let ring = Arc::new(LaneRing {
            slots: (0..LANE_SLOTS).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect(),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            capsule: first,
            room: AtomicUsize::new(0),
        });
        st.lanes.push(Arc::clone(&ring));
        st.mirror_shares();
        Lane { handle: self.clone(), ring, who, origin: st.ledger.origin(), functions: Vec::new(), tail: 0, head: 0 }
    }
}

impl Lane {
    /// Records a host call of this lane's capsule, as `AuditHandle::record_call` does
    /// (the same waits, refusals and errors), through the lane when it can: the log
    /// still takes records, the lane has a free slot, the capsule's unwritten records
    /// with the lane's stay within its share, and the function's name is known here.
    pub fn record_call(&mut self, call: Call<'_>, cancel: Option<&CancelToken>) -> Result<(), AuditError> {
        if self.tail - self.head >= LANE_SLOTS {
            // Full by this writer's last look: look again.
            self.head = self.ring.head.load(Ordering::Acquire);
        }
        let queued = self.tail - self.head;
        let fast = !self.handle.shared.refusing.load(Ordering::Relaxed) && queued < LANE_SLOTS.min(self.ring.room.load(Ordering::Relaxed));
        let (Some(origin), Some(ended), Cow::Borrowed(name), true) = (self.origin, call.ended, &call.op.function, fast) else {
            return self.slow(call, cancel);
        };
        let function = self.function(name);
        let t_ns = u64::try_from(ended.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX);
        let entry = Stamped { t_ns, body: super::chain::io_body(self.who, function, call.op) };
        // SAFETY: the slot at `tail` is free: `tail - head < LANE_SLOTS` with `head` as the
        // reader released it (Acquire), and only this writer writes slots (see `LaneRing`).
        unsafe { (*self.ring.slots[self.tail % LANE_SLOTS].get()).write(entry) };
        self.tail += 1;
        self.ring.tail.store(self.tail, Ordering::Release);
        let shared = &self.handle.shared;
        if shared.refusing.load(Ordering::Relaxed) {
            // The log failed or closed while this record went in: the lock's path says
            // which, as it would have (and the record goes where the queue's went). A
            // failure that lands between this writer's two looks can still leave this one
            // record unwritten with its call answered; the capsule's next call is refused.
            return self.slow_refusal();
        }
        if shared.drainer_idle.load(Ordering::Relaxed) {
            // The drainer sleeps until rung: the first record after a pause rings it.
            let mut st = shared.lock();
            shared.wake_drainer(&mut st);
        }
        Ok(())
    }

    /// The place of `name` in the log's table of functions: from this lane's own list,
    /// or, the first time, from the table under the lock.
    fn function(&mut self, name: &'static str) -> u32 {
        let key = (name.as_ptr().addr(), name.len());
        if let Some(&(_, _, i)) = self.functions.iter().find(|(a, l, _)| (*a, *l) == key) {
            return i;
        }
        let i = self.handle.shared.lock().ledger.function(&Cow::Borrowed(name));
        self.functions.push((key.0, key.1, i));
        i
    }

    /// Why the log refuses records now (numbering what the lane holds first).
    fn slow_refusal(&mut self) -> Result<(), AuditError> {
        let mut st = self.handle.shared.lock();
        st.admit_lanes();
        self.head = self.ring.head.load(Ordering::Acquire);
        match &st.failed {
            Some(e) => Err(AuditError::SinkFailed(e.clone())),
            None if st.ledger.is_closed() => Err(AuditError::Closed),
            None => Ok(()),
        }
    }

    /// The call through the queue's lock (which first numbers what the lane holds).
    fn slow(&mut self, call: Call<'_>, cancel: Option<&CancelToken>) -> Result<(), AuditError> {
        let done = self.handle.record_call(call, cancel).map(drop);
        self.head = self.ring.head.load(Ordering::Acquire);
        done
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.ring.closed.store(true, Ordering::Release);
    }
}

fn drain_loop(shared: &Shared, sink: &mut dyn Sink) {
    // Behind the capsules: in the image it seals and writes while they wait, not in the
    // middle of their calls (`MAX_LAG` and each capsule's share bound how far behind).
    crate::platform::run_in_background();
    let mut batch: Vec<Stamped> = Vec::with_capacity(MAX_BATCH);
    // Io records written per capsule, in runs: what the batch gives back of each share.
    let mut returns: Vec<(u32, usize)> = Vec::with_capacity(MAX_BATCH);
    let linger = crate::platform::audit_linger();
    // When the current linger ends; `None` between lingers.
    let mut linger_until: Option<std::time::Instant> = None;
    let dumping = || shared.stop_for_dump.load(std::sync::atomic::Ordering::SeqCst);
    loop {
        // The sealer is held from taking a batch to writing it, so that `unwritten`
        // always finds the chain's head just after what was written.
        let mut sealing = shared.seal.lock().unwrap_or_else(|p| p.into_inner());
        if sealing.taken.is_empty() {
            let mut st = shared.lock_eagerly();
            loop {
                st.admit_lanes();
                // Stopped for a panic hook, or closed (the close record is always last)
                // or given up on, and emptied.
                let pending = st.queue.len();
                if dumping() || (pending == 0 && (st.ledger.is_closed() || st.failed.is_some())) {
                    return;
                }
                // Records are due: enough of them, some somebody waits for (a capsule's
                // end, `drain`, the close), or what came during a linger.
                let now = std::time::Instant::now();
                let lingered = linger_until.is_some_and(|until| now >= until);
                if pending > 0 && (lingered || pending >= wake_at(st.capacity) || st.flushers > 0 || st.ledger.is_closed()) {
                    break;
                }
                if pending > 0 || !lingered {
                    // Linger for more, holding the sealer (bounded; `unwritten` waits it
                    // out): writers do not signal, the timer brings the drainer back.
                    let until = *linger_until.get_or_insert(now + linger);
                    st = shared.wait_at_bell(st, Drainer::Lingering, Some(until.saturating_duration_since(now)));
                    continue;
                }
                // Nothing came for a whole linger: sleep until the next record, letting
                // go of the sealer.
                drop(st);
                drop(sealing);
                st = shared.lock_eagerly();
                st.admit_lanes();
                while st.queue.is_empty() && !st.ledger.is_closed() && st.failed.is_none() && !dumping() {
                    // With lanes, a writer's ring can cross the drainer's going to sleep.
                    let poll = (!st.lanes.is_empty()).then_some(IDLE_POLL);
                    st = shared.wait_at_bell(st, Drainer::Idle, poll);
                }
                drop(st);
                // The first record after a pause: linger once for a batch.
                linger_until = None;
                sealing = shared.seal.lock().unwrap_or_else(|p| p.into_inner());
                st = shared.lock_eagerly();
            }
            // Everything queued, taken at once: the rings change places, so a writer
            // never waits behind a copy (the next records start a new linger).
            std::mem::swap(&mut st.queue, &mut sealing.taken);
            st.in_flight = sealing.taken.len();
            st.in_flight_oldest = sealing.taken.front().map(|e| e.t_ns);
            linger_until = None;
            sealing.sealer.learn(&st.ledger);
        }
        if dumping() {
            return;
        }
        let n = sealing.taken.len().min(MAX_BATCH);
        batch.extend(sealing.taken.drain(..n));
        let Sealing { sealer, lines, taken } = &mut *sealing;
        // The line buffers are kept from batch to batch: no allocation per record.
        if lines.len() < batch.len() {
            lines.resize_with(batch.len(), || String::with_capacity(320));
        }
        for (entry, line) in batch.iter().zip(lines.iter_mut()) {
            line.clear();
            sealer.seal(entry, line);
        }
        let lines = &lines[..batch.len()];
        let result = sink.write_batch(lines).and_then(|()| sink.flush());
        let written = lines.len() as u64;
        // Each capsule's share is given back once its records are written, counted here
        // before taking the queue's lock, so that the lock is held for a few additions: a
        // capsule's thread that found it held for the walk over a batch slept on it, and
        // hosted each such sleep and wake-up cost it tens of µs (measured).
        returns.clear();
        if result.is_ok() {
            for entry in &batch {
                let Some(capsule) = entry.body.io().and_then(|e| sealer.capsule_of(e.who)) else { continue };
                match returns.last_mut() {
                    Some((c, n)) if *c == capsule => *n += 1,
                    _ => returns.push((capsule, 1)),
                }
            }
        }
        let mut st = shared.lock_eagerly();
        match result {
            Ok(()) => {
                st.written += written;
                st.in_flight -= batch.len();
                st.in_flight_oldest = taken.front().map(|e| e.t_ns);
                for &(capsule, n) in &returns {
                    if let Some(own) = st.queued_by.get_mut(capsule as usize) {
                        *own -= n.min(*own);
                    }
                }
                st.mirror_shares();
                batch.clear();
            }
            Err(e) => {
                let reason = e.to_string();
                st.failed = Some(reason.clone());
                shared.refusing.store(true, Ordering::SeqCst);
                st.admit_lanes();
                // The failure's signal takes the wait primitive's spin locks, which a
                // background thread must not hold (see `run_in_background`).
                crate::platform::run_normally();
                shared.failure.cancel();
                shared.not_full.notify_all();
                shared.progress.notify_all();
                // Records already stamped describe operations that happened: they still
                // go to whatever sink survives, then the record naming the failure.
                let mut rest: Vec<Stamped> = taken.drain(..).chain(st.queue.drain(..)).collect();
                st.in_flight = 0;
                st.in_flight_oldest = None;
                let mut failure = IoEvent::ok("", "", FN_SINK_FAILED, 0);
                failure.op.outcome = Outcome::Error;
                failure.op.error = Some(reason);
                let _ = st.ledger.append(failure, &mut rest);
                sealer.learn(&st.ledger);
                drop(st);
                let lines: Vec<String> = rest
                    .iter()
                    .map(|entry| {
                        let mut line = String::new();
                        sealer.seal(entry, &mut line);
                        line
                    })
                    .collect();
                // Best effort: with no survivor this fails too, and the failure is already
                // what the log reports.
                let _ = sink.write_batch(&lines).and_then(|()| sink.flush());
                return;
            }
        }
        drop(st);
        drop(sealing);
        shared.not_full.notify_all();
        shared.progress.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::thread;
    use std::time::Duration;

    use super::super::record::AuditRecord;
    use super::super::sink::{BreakingSink, MemorySink};
    use super::super::verify::verify;
    use super::*;

    /// A sink that takes its time over every batch.
    struct SlowSink {
        inner: MemorySink,
        delay: Duration,
    }

    impl Sink for SlowSink {
        fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
            thread::sleep(self.delay);
            self.inner.write_batch(lines)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A sink that breaks after `ok_batches` batches.
    fn parse(line: &str) -> AuditRecord {
        let (body, _) = super::super::record::unseal(line).unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// Four writers push 250 records each through an 8-record queue into a sink that
    /// sleeps on every batch. Every record arrives, each writer's in its own order, the
    /// queue filled (writers were held back) but never overflowed, the log verifies and
    /// its close record counts them all.
    #[test]
    fn slow_sink_loses_nothing_and_keeps_each_writers_order() {
        const WRITERS: u64 = 4;
        const PER_WRITER: u64 = 250;
        let memory = MemorySink::new();
        let log =
            AuditLog::start(SlowSink { inner: memory.clone(), delay: Duration::from_millis(1) }, 8);
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let handle = log.handle();
                thread::spawn(move || {
                    for i in 0..PER_WRITER {
                        let mut e = IoEvent::ok(
                            format!("w{w}"),
                            "p",
                            "astrid:io/streams.output-stream.write",
                            i,
                        );
                        e.op.bytes = Some(i);
                        handle.record(e).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let stats = log.handle().stats();
        assert!((8..=10).contains(&stats.high_water), "the queue filled (to at most two lines over: the genesis with the first record): {}", stats.high_water);
        let total = log.close().unwrap();
        assert_eq!(total, WRITERS * PER_WRITER + 2, "the genesis, the records, the close");

        let lines = memory.lines().clone();
        assert_eq!(lines.len() as u64, total);
        let summary = verify(lines.iter().map(String::as_str)).unwrap();
        assert_eq!(summary.io_records, WRITERS * PER_WRITER);
        let last = parse(lines.last().unwrap());
        assert_eq!(last.function, "astrid:audit/close");
        assert_eq!(last.count, Some(WRITERS * PER_WRITER + 1));
        for w in 0..WRITERS {
            let mine: Vec<u64> = lines
                .iter()
                .map(|l| parse(l))
                .filter(|r| r.capsule == format!("w{w}"))
                .map(|r| r.bytes.unwrap())
                .collect();
            assert_eq!(mine, (0..PER_WRITER).collect::<Vec<_>>(), "writer {w}");
        }
    }

    #[test]
    fn capsule_end_drains_and_counts() {
        let memory = MemorySink::new();
        let log =
            AuditLog::start(SlowSink { inner: memory.clone(), delay: Duration::from_millis(2) }, 4);
        let h = log.handle();
        for capsule in ["a", "b", "a", "a", "b"] {
            h.record(IoEvent::ok(capsule, "p", "astrid:io/poll.poll", 1)).unwrap();
        }
        assert_eq!(h.capsule_end("a"), Ok(3));
        // Drained: the end record is already in the sink when capsule_end returns.
        {
            let lines = memory.lines();
            assert_eq!(lines.len(), 7, "the genesis, five records, the end");
            let end = parse(&lines[6]);
            assert_eq!(
                (end.function.as_str(), end.capsule.as_str(), end.count),
                ("astrid:audit/capsule-end", "a", Some(3))
            );
        }
        assert_eq!(h.capsule_end("b"), Ok(2));
        assert_eq!(log.close(), Ok(9));
        assert!(verify(memory.lines().iter().map(String::as_str)).is_ok());
    }

    /// A panic hook's view: with the sink slow and records piling up, `unwritten` stops
    /// the drainer after its batch and hands back the rest, sealed so that what the sink
    /// got followed by what it returns is one unbroken chain.
    #[test]
    fn unwritten_lines_carry_on_from_the_last_written_line() {
        let memory = MemorySink::new();
        let log = AuditLog::start(SlowSink { inner: memory.clone(), delay: Duration::from_millis(20) }, 4096);
        let h = log.handle();
        for i in 0..2000 {
            h.record(IoEvent::ok("c", "p", "astrid:io/poll.poll", i)).unwrap();
        }
        let rest = h.unwritten().expect("the drainer let go within its patience");
        let mut all = memory.lines().clone();
        assert!(!rest.is_empty(), "nothing was pending");
        all.extend(rest);
        assert_eq!(all.len(), 2001, "the genesis and every record, once");
        super::super::verify::verify_open(all.iter().map(String::as_str)).expect("one unbroken chain");
        assert!(log.close().is_err(), "a stopped log cannot close");
    }

    /// A sink that holds every batch until its gate opens.
    struct GatedSink {
        inner: MemorySink,
        gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
    }

    impl Sink for GatedSink {
        fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
            let (open, cv) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.inner.write_batch(lines)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// One capsule flooding the log waits behind its own records once it holds its share
    /// of the queue (its wait ends with its cancellation), while another capsule's records
    /// still go in; with the sink stalled, nothing is lost once it moves again.
    #[test]
    fn a_flooding_capsule_waits_for_its_own_share_and_the_others_go_on() {
        let memory = MemorySink::new();
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let log = AuditLog::start(GatedSink { inner: memory.clone(), gate: gate.clone() }, 8);
        let h = log.handle();
        let share = capsule_share(8);
        // The drainer takes the first record and stalls writing it (it still counts: it is
        // not written); then `flood` fills its share.
        h.record(IoEvent::ok("flood", "p", "f", 0)).unwrap();
        while !h.shared.lock().queue.is_empty() {
            thread::sleep(Duration::from_millis(1));
        }
        for i in 1..share {
            h.record(IoEvent::ok("flood", "p", "f", 1 + i as u64)).unwrap();
        }
        let cancel = CancelToken::new();
        let blocked = {
            let (h, cancel) = (h.clone(), cancel.clone());
            thread::spawn(move || h.record_unless(IoEvent::ok("flood", "p", "f", 99), Some(&cancel)))
        };
        thread::sleep(Duration::from_millis(50));
        assert!(!blocked.is_finished(), "a capsule over its share was let in");
        // The rest of the queue (the genesis is unwritten too) is the others'.
        let room = 8 - 1 - share;
        for i in 0..room {
            h.record(IoEvent::ok("other", "p", "f", i as u64)).expect("another capsule still finds room");
        }
        cancel.cancel();
        assert_eq!(blocked.join().unwrap(), Err(AuditError::Cancelled));
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let total = log.close().unwrap();
        let lines = memory.lines().clone();
        assert_eq!(lines.len() as u64, total);
        verify(lines.iter().map(String::as_str)).expect("the log verifies");
        assert_eq!(lines.iter().filter(|l| l.contains("\"capsule\":\"other\"")).count(), room);
    }

    /// A record left unwritten longer than `MAX_LAG` holds back the next writer (after its
    /// own record is in) and a computing capsule's `keep_up`, until the drainer has caught
    /// up; a cancellation ends `keep_up`'s wait; at `MAX_LAG` or under, nobody waits.
    #[test]
    fn records_waiting_too_long_hold_writers_back_until_the_drainer_catches_up() {
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        let now = Arc::new(AtomicU64::new(0));
        let clock = {
            let now = now.clone();
            Box::new(move || now.load(SeqCst))
        };
        let memory = MemorySink::new();
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let log = AuditLog::start_with(Chain::with_clock(clock), GatedSink { inner: memory.clone(), gate: gate.clone() }, 64);
        let h = log.handle();
        // The drainer takes the genesis and the first record and stalls writing them.
        h.record(IoEvent::ok("c", "p", "f", 0)).unwrap();
        while !h.shared.lock().queue.is_empty() {
            thread::sleep(Duration::from_millis(1));
        }
        h.record(IoEvent::ok("c", "p", "f", 1)).unwrap();
        let lag = MAX_LAG.as_nanos() as u64;
        now.store(lag, SeqCst);
        h.record(IoEvent::ok("c", "p", "f", 2)).expect("at MAX_LAG a writer goes on");
        h.keep_up(&CancelToken::new());
        now.store(lag + 1_000_000, SeqCst);
        let cancel = CancelToken::new();
        let computing = {
            let (h, cancel) = (h.clone(), cancel.clone());
            thread::spawn(move || h.keep_up(&cancel))
        };
        let writer = {
            let h = h.clone();
            thread::spawn(move || h.record(IoEvent::ok("c", "p", "f", 3)))
        };
        thread::sleep(Duration::from_millis(50));
        assert!(!computing.is_finished(), "a capsule computing past MAX_LAG did not wait for the log");
        assert!(!writer.is_finished(), "a writer past MAX_LAG did not wait for the log");
        assert_eq!(h.stats().sealed, 5, "the waiting writer's record is in (genesis, four records)");
        cancel.cancel();
        computing.join().unwrap();
        assert!(!writer.is_finished(), "the writer's wait ended without the drainer");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        assert_eq!(writer.join().unwrap(), Ok(4));
        let total = log.close().unwrap();
        let lines = memory.lines().clone();
        assert_eq!(lines.len() as u64, total);
        assert_eq!(total, 6);
        verify(lines.iter().map(String::as_str)).expect("the log verifies");
    }

    #[test]
    fn records_after_close_are_refused_and_counted() {
        let memory = MemorySink::new();
        let log = AuditLog::start(memory.clone(), 4);
        let h = log.handle();
        assert_eq!(h.record(IoEvent::ok("c", "p", "f", 1)), Ok(1), "after the genesis");
        assert_eq!(log.close(), Ok(3));
        assert_eq!(h.record(IoEvent::ok("c", "p", "f", 1)), Err(AuditError::Closed));
        assert_eq!(h.capsule_end("c"), Err(AuditError::Closed));
        assert_eq!(h.stats().refused, 2);
        assert_eq!(h.stats().sealed, 3, "refused records take no sequence number");
        assert_eq!(memory.lines().len(), 3);
    }

    #[test]
    fn dropping_the_log_still_closes_it() {
        let memory = MemorySink::new();
        {
            let log = AuditLog::start(memory.clone(), 4);
            log.handle().record(IoEvent::ok("c", "p", "f", 1)).unwrap();
        }
        let lines = memory.lines();
        assert_eq!(verify(lines.iter().map(String::as_str)).unwrap().records, 3);
    }

    #[test]
    fn a_failed_sink_fails_closed() {
        let memory = MemorySink::new();
        let log = AuditLog::start(BreakingSink { inner: memory.clone(), ok_batches: 1 }, 4);
        let h = log.handle();
        h.record(IoEvent::ok("c", "p", "f", 1)).unwrap();
        h.drain().unwrap();
        // Accepted into the queue, but the sink breaks on it.
        h.record(IoEvent::ok("c", "p", "f", 2)).unwrap();
        assert!(matches!(h.drain(), Err(AuditError::SinkFailed(_))));
        assert!(matches!(h.record(IoEvent::ok("c", "p", "f", 3)), Err(AuditError::SinkFailed(_))));
        assert!(matches!(log.close(), Err(AuditError::SinkFailed(_))));
        assert_eq!(memory.lines().len(), 2, "the genesis and the first record");
    }

    #[test]
    fn a_failing_file_leaves_the_serial_console_the_rest_and_the_failure() {
        use super::super::sink::TeeSink;
        use super::super::verify::verify_open;
        let (serial, file) = (MemorySink::new(), MemorySink::new());
        let tee = TeeSink::new(vec![
            ("serial console".into(), Box::new(serial.clone())),
            ("file /root/audit.log".into(), Box::new(BreakingSink { inner: file.clone(), ok_batches: 1 })),
        ]);
        let log = AuditLog::start(tee, 16);
        let h = log.handle();
        let failure = h.failure();
        h.record(IoEvent::ok("c", "p", "f", 1)).unwrap();
        h.drain().unwrap();
        assert!(!failure.is_cancelled());
        h.record(IoEvent::ok("c", "p", "f", 2)).unwrap();
        assert!(matches!(h.drain(), Err(AuditError::SinkFailed(_))));
        assert!(failure.is_cancelled(), "the failure signal fires");
        assert!(matches!(h.record(IoEvent::ok("c", "p", "f", 3)), Err(AuditError::SinkFailed(_))), "nothing more is accepted");
        assert!(matches!(log.close(), Err(AuditError::SinkFailed(_))));
        let lines = serial.lines().clone();
        let last = parse(lines.last().unwrap());
        assert_eq!(last.function, FN_SINK_FAILED);
        assert!(last.error.as_deref().unwrap().contains("file /root/audit.log"), "{last:?}");
        assert_eq!(lines.len(), 4, "the genesis, both records and the failure reach the console");
        verify_open(lines.iter().map(String::as_str)).expect("the survivor's log is one unbroken chain");
        let ended = super::super::verify::verify(lines.iter().map(String::as_str)).unwrap_err();
        assert!(matches!(ended.kind, super::super::verify::BreakKind::EndedBySinkFailure(ref why) if why.contains("audit.log")), "{ended}");
        let filed = file.lines().clone();
        assert_eq!(filed, lines[..filed.len()], "the file got the first batch only");
        assert!(filed.len() < 3);
    }

    #[test]
    fn a_writer_waiting_for_room_is_woken_by_its_cancellation() {
        let log = AuditLog::start(SlowSink { inner: MemorySink::new(), delay: Duration::from_secs(2) }, 1);
        let h = log.handle();
        h.record(IoEvent::ok("c", "p", "f", 1)).unwrap();
        // The drainer holds the first record for 2 s; fill the queue's one slot.
        thread::sleep(Duration::from_millis(50));
        h.record(IoEvent::ok("c", "p", "f", 2)).unwrap();
        let cancel = CancelToken::new();
        let canceller = {
            let c = cancel.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                c.cancel();
            })
        };
        let started = std::time::Instant::now();
        assert_eq!(h.record_unless(IoEvent::ok("c", "p", "f", 3), Some(&cancel)), Err(AuditError::Cancelled));
        assert!(started.elapsed() < Duration::from_secs(1), "woken by the cancellation, not by room");
        canceller.join().unwrap();
        log.close().unwrap();
    }

    /// A host call as the envelope hands it over: a compile-time function name (or one
    /// made at run time, which takes the lock), ended now, `i` as its byte count.
    fn lane_call<'a>(c: &'a Arc<str>, p: &'a Arc<str>, i: u64, owned_name: bool) -> Call<'a> {
        let name: std::borrow::Cow<'static, str> = if owned_name { format!("astrid:io/made-{}", i % 3).into() } else { "astrid:io/streams.input-stream.read".into() };
        let mut op = super::super::record::Op::ok(name, i);
        op.bytes = Some(i);
        Call { capsule: c, principal: p, op, ended: Some(std::time::Instant::now()) }
    }

    /// Three capsules record through their lanes into a small queue and a slow sink,
    /// every seventh call through the lock (a name made at run time), each capsule
    /// ending its run with its end record: nothing is lost, each capsule's records are in
    /// its own order and before its end record, the queue never held more than its
    /// capacity and a lane per capsule, and the log verifies.
    #[test]
    fn lanes_keep_each_capsules_order_and_lose_nothing() {
        let memory = MemorySink::new();
        let capacity = 64;
        let log = AuditLog::start(SlowSink { inner: memory.clone(), delay: Duration::from_millis(1) }, capacity);
        let writers: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|name| {
                let h = log.handle();
                thread::spawn(move || {
                    let (c, p): (Arc<str>, Arc<str>) = (name.into(), "p".into());
                    let mut lane = h.lane(&c, &p);
                    for i in 0..1500u64 {
                        lane.record_call(lane_call(&c, &p, i, i % 7 == 0), None).unwrap();
                    }
                    drop(lane);
                    assert_eq!(h.capsule_end(name).unwrap(), 1500, "{name}'s end counts its records");
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let stats = log.handle().stats();
        assert!(stats.high_water <= capacity + 2 + 3 * LANE_SLOTS, "the queue held {} records", stats.high_water);
        let total = log.close().unwrap();
        let lines = memory.lines().clone();
        assert_eq!(lines.len() as u64, total);
        verify(lines.iter().map(String::as_str)).expect("the log verifies");
        for name in ["a", "b", "c"] {
            let mine: Vec<AuditRecord> = lines.iter().map(|l| parse(l)).filter(|r| r.capsule == name).collect();
            let io: Vec<u64> = mine.iter().filter_map(|r| r.bytes).collect();
            assert_eq!(io, (0..1500).collect::<Vec<_>>(), "{name}'s records, all, in its order");
            assert_eq!(mine.last().map(|r| r.function.as_str()), Some(super::super::record::FN_CAPSULE_END), "{name}'s end record is its last");
        }
    }

    /// A lane's records reach the sink without anyone draining: the first one after the
    /// drainer went idle wakes it (or its poll finds it).
    #[test]
    fn a_lane_wakes_an_idle_drainer() {
        let memory = MemorySink::new();
        let log = AuditLog::start(memory.clone(), 64);
        let h = log.handle();
        h.record(IoEvent::ok("c", "p", "f", 0)).unwrap();
        h.drain().unwrap();
        // Longer than any linger: the drainer sleeps until rung.
        thread::sleep(Duration::from_millis(300));
        let (c, p): (Arc<str>, Arc<str>) = ("c".into(), "p".into());
        let mut lane = h.lane(&c, &p);
        lane.record_call(lane_call(&c, &p, 1, false), None).unwrap();
        let started = std::time::Instant::now();
        while memory.lines().len() < 3 {
            assert!(started.elapsed() < Duration::from_secs(5), "the lane's record was not written");
            thread::sleep(Duration::from_millis(5));
        }
        drop(lane);
        log.close().unwrap();
    }

    /// A lane on a log whose sink failed refuses the call, as the lock's path does; what
    /// it held before the failure still went to the sink before the failure's record
    /// would (here, with no survivor, the failure is what the log reports).
    #[test]
    fn a_lane_fails_closed() {
        let memory = MemorySink::new();
        let log = AuditLog::start(BreakingSink { inner: memory.clone(), ok_batches: 1 }, 16);
        let h = log.handle();
        let (c, p): (Arc<str>, Arc<str>) = ("c".into(), "p".into());
        let mut lane = h.lane(&c, &p);
        lane.record_call(lane_call(&c, &p, 1, false), None).unwrap();
        h.drain().unwrap();
        lane.record_call(lane_call(&c, &p, 2, false), None).unwrap();
        assert!(matches!(h.drain(), Err(AuditError::SinkFailed(_))), "the sink broke on the lane's second record");
        assert!(matches!(lane.record_call(lane_call(&c, &p, 3, false), None), Err(AuditError::SinkFailed(_))));
        assert!(matches!(log.close(), Err(AuditError::SinkFailed(_))));
    }

    /// The panic hook's lines include what a lane holds, numbered after the queue's.
    #[test]
    fn unwritten_lines_include_the_lanes() {
        let memory = MemorySink::new();
        let log = AuditLog::start(SlowSink { inner: memory.clone(), delay: Duration::from_millis(20) }, 4096);
        let h = log.handle();
        let (c, p): (Arc<str>, Arc<str>) = ("c".into(), "p".into());
        let mut lane = h.lane(&c, &p);
        for i in 0..500 {
            h.record(IoEvent::ok("c", "p", "astrid:io/poll.poll", i)).unwrap();
            lane.record_call(lane_call(&c, &p, i, false), None).unwrap();
        }
        let rest = h.unwritten().expect("the drainer let go within its patience");
        let mut all = memory.lines().clone();
        all.extend(rest);
        assert_eq!(all.len(), 1001, "the genesis and every record, once");
        super::super::verify::verify_open(all.iter().map(String::as_str)).expect("one unbroken chain");
    }
}
