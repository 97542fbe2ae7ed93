//! The wait primitive: readiness sources bump event words and wake waiters; `block`,
//! `poll` and every blocking stream call sleep here, racing the capsule's cancellation
//! and an optional deadline. It knows nothing of WIT; the futex calls are `platform`'s.

mod cancel;
mod event;
mod pipe;
mod timer;

use std::sync::Arc;
use std::time::Instant;

pub use cancel::{CancelToken, cancel_after};
pub use event::{EventWord, Notifier, Registration, WaitResult};
pub use pipe::{Closed, PipeError, PipeReader, PipeWriter, TransferClosed, byte_pipe};
pub use timer::Timer;

/// Something a capsule can wait for: a stream that may have bytes, a timer, a
/// subscription, a cancellation. A new kind of source implements this and nothing else.
pub trait Readiness {
    /// Whether the source is ready now. Must not block and must not change the source:
    /// a wait calls it again after every wake-up.
    fn is_ready(&self) -> bool;

    /// Where the source announces that it may have become ready. A source whose state
    /// changes must return one, change its state first and then call `notify` on it, or
    /// its waiters sleep through the change. `None` only for sources that change on
    /// their own clock alone (see `ready_at`).
    fn notifier(&self) -> Option<&Notifier>;

    /// The instant at which the source becomes ready without anyone notifying (a timer);
    /// a wait including it sleeps no later than that.
    fn ready_at(&self) -> Option<Instant> {
        None
    }
}

/// `astrid:io/poll.pollable`: a readiness source a capsule holds a handle to.
pub struct Pollable {
    pub source: Arc<dyn Readiness + Send + Sync>,
    /// What its owner is charged for the resource it watches (a socket), kept until
    /// this pollable is dropped too.
    pub hold: Option<crate::quota::Held>,
}

impl Pollable {
    pub fn new(source: Arc<dyn Readiness + Send + Sync>) -> Self {
        Pollable { source, hold: None }
    }

    /// Keeps `hold` (its owner's charge for the watched resource) while it lives.
    pub fn holding(mut self, hold: Option<crate::quota::Held>) -> Self {
        self.hold = hold;
        self
    }
}

/// Why a wait ended without a ready source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// The cancel token fired, before or during the wait.
    Cancelled,
    /// The deadline passed with no source ready.
    TimedOut,
}

/// Waits until at least one of `sources` is ready and returns the indices of *every*
/// source ready at that moment, ascending (the shape of `poll`).
///
/// Cancellation wins over readiness, so a cancelled capsule cannot keep itself busy on
/// always-ready sources. A deadline already past turns this into a non-blocking scan.
/// With no sources it waits for cancellation or the deadline alone (a cancellable
/// sleep). The same source may appear more than once; each index is reported.
pub fn wait_any(
    sources: &[&dyn Readiness],
    cancel: &CancelToken,
    deadline: Option<Instant>,
) -> Result<Vec<usize>, WaitError> {
    wait_any_with(sources, cancel, deadline, &mut || {})
}

/// Waits until `source` is ready (the shape of `block`, and of every blocking stream
/// call). Allocates nothing: the thread's own event word, at most two registrations.
pub fn wait_one(
    source: &dyn Readiness,
    cancel: &CancelToken,
    deadline: Option<Instant>,
) -> Result<(), WaitError> {
    if cancel.is_cancelled() {
        return Err(WaitError::Cancelled);
    }
    if source.is_ready() {
        return Ok(());
    }
    let word = event::thread_word();
    let _source = source.notifier().map(|n| n.register(&word));
    let _cancel = cancel.notifier().map(|n| n.register(&word));
    let wake_at = source.ready_at().into_iter().chain(deadline).min();
    sleep_until(&word, cancel, deadline, wake_at, &mut || source.is_ready().then_some(()), &mut || {})
}

fn ready_indices(sources: &[&dyn Readiness]) -> Vec<usize> {
    // Collecting from a filter allocates only once something is ready.
    sources.iter().enumerate().filter(|(_, s)| s.is_ready()).map(|(i, _)| i).collect()
}

/// `wait_any` with a hook that runs after the readiness check and before the sleep:
/// the window in which a lost wake-up would happen. Tests fire sources from it.
fn wait_any_with(
    sources: &[&dyn Readiness],
    cancel: &CancelToken,
    deadline: Option<Instant>,
    before_sleep: &mut dyn FnMut(),
) -> Result<Vec<usize>, WaitError> {
    // Fast path: nothing to register when the answer is already known.
    if cancel.is_cancelled() {
        return Err(WaitError::Cancelled);
    }
    let ready = ready_indices(sources);
    if !ready.is_empty() {
        return Ok(ready);
    }

    // Register before the first `current()` read, so any change from here on either
    // shows in the readiness check or moves the word.
    let word = event::thread_word();
    let _registrations: Vec<Registration<'_>> = sources
        .iter()
        .filter_map(|s| s.notifier())
        .chain(cancel.notifier())
        .map(|n| n.register(&word))
        .collect();
    // Sources that turn ready on their own clock bound the sleep.
    let wake_at = sources.iter().filter_map(|s| s.ready_at()).chain(deadline).min();
    let mut check = || {
        let ready = ready_indices(sources);
        (!ready.is_empty()).then_some(ready)
    };
    sleep_until(&word, cancel, deadline, wake_at, &mut check, before_sleep)
}

/// The loop every wait ends in, once its word is registered with every notifier: read
/// the generation, check cancellation and then readiness (`check`), sleep until the
/// word moves or `wake_at`, and again. Cancellation wins over readiness.
fn sleep_until<T>(
    word: &EventWord,
    cancel: &CancelToken,
    deadline: Option<Instant>,
    wake_at: Option<Instant>,
    check: &mut dyn FnMut() -> Option<T>,
    before_sleep: &mut dyn FnMut(),
) -> Result<T, WaitError> {
    loop {
        let seen = word.current();
        if cancel.is_cancelled() {
            return Err(WaitError::Cancelled);
        }
        if let Some(ready) = check() {
            return Ok(ready);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(WaitError::TimedOut);
        }
        before_sleep();
        // Changed or timed out, the loop re-checks everything.
        let _ = word.wait_until_changed(seen, wake_at);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use super::*;

    /// A test source: ready once `fire` ran.
    #[derive(Default)]
    struct Flag {
        set: AtomicBool,
        notifier: Notifier,
    }

    impl Flag {
        fn fire(&self) {
            self.set.store(true, Ordering::SeqCst);
            self.notifier.notify();
        }
    }

    impl Readiness for Flag {
        fn is_ready(&self) -> bool {
            self.set.load(Ordering::SeqCst)
        }
        fn notifier(&self) -> Option<&Notifier> {
            Some(&self.notifier)
        }
    }

    /// Many sources sharing one readiness word and one notifier, so a test can make
    /// several of them ready in a single atomic step.
    struct Bits {
        mask: AtomicU64,
        notifier: Notifier,
    }

    struct Bit<'a>(&'a Bits, u32);

    impl Readiness for Bit<'_> {
        fn is_ready(&self) -> bool {
            self.0.mask.load(Ordering::SeqCst) & (1 << self.1) != 0
        }
        fn notifier(&self) -> Option<&Notifier> {
            Some(&self.0.notifier)
        }
    }

    fn in_secs(secs: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(secs))
    }

    #[test]
    fn wake_from_another_thread() {
        let flag = Arc::new(Flag::default());
        let cancel = CancelToken::new();
        let firer = {
            let flag = Arc::clone(&flag);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(30));
                flag.fire();
            })
        };
        let start = Instant::now();
        assert_eq!(wait_any(&[&*flag], &cancel, in_secs(10)), Ok(vec![0]));
        assert!(start.elapsed() < Duration::from_secs(2));
        firer.join().unwrap();
        assert_eq!(flag.notifier.waiter_count(), 0, "the wait left its registration behind");
    }

    #[test]
    fn deadline_times_out() {
        let flag = Flag::default();
        let cancel = CancelToken::new();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(50);
        assert_eq!(wait_any(&[&flag], &cancel, Some(deadline)), Err(WaitError::TimedOut));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(50) && took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn past_deadline_is_a_non_blocking_scan() {
        let (a, b) = (Flag::default(), Flag::default());
        let cancel = CancelToken::new();
        let now = Some(Instant::now());
        assert_eq!(wait_any(&[&a, &b], &cancel, now), Err(WaitError::TimedOut));
        b.fire();
        assert_eq!(wait_any(&[&a, &b], &cancel, now), Ok(vec![1]));
    }

    /// The cancel token fires while the wait is asleep (the hook tells us it is about to
    /// sleep; the wait has no deadline worth speaking of), and the wait returns at once.
    #[test]
    fn cancellation_wakes_a_wait_in_progress() {
        let flag = Flag::default();
        let cancel = CancelToken::new();
        let (about_to_sleep, sleeping) = mpsc::channel();
        let canceller = {
            let cancel = cancel.clone();
            thread::spawn(move || {
                sleeping.recv_timeout(Duration::from_secs(10)).expect("the wait never slept");
                thread::sleep(Duration::from_millis(30));
                cancel.cancel();
            })
        };
        let start = Instant::now();
        let mut hook = || {
            let _ = about_to_sleep.send(());
        };
        let got = wait_any_with(&[&flag], &cancel, in_secs(60), &mut hook);
        assert_eq!(got, Err(WaitError::Cancelled));
        assert!(start.elapsed() < Duration::from_secs(2), "cancel took {:?}", start.elapsed());
        canceller.join().unwrap();
        // Waits that start after the cancel return at once, whatever is ready.
        flag.fire();
        assert_eq!(wait_any(&[&flag], &cancel, in_secs(60)), Err(WaitError::Cancelled));
    }

    #[test]
    fn cancellable_sleep_with_no_sources() {
        let cancel = CancelToken::new();
        let short = Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(wait_any(&[], &cancel, short), Err(WaitError::TimedOut));
        let c = cancel.clone();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            c.cancel();
        });
        let start = Instant::now();
        assert_eq!(wait_any(&[], &cancel, in_secs(60)), Err(WaitError::Cancelled));
        assert!(start.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }

    /// The lost wake-up window, forced: the source fires after the wait found nothing
    /// ready and before it sleeps. A wait that read its event word after the check (or
    /// registered late) would sleep the full 10 s; this one must see the change at once.
    #[test]
    fn a_source_firing_between_check_and_sleep_is_not_lost() {
        let flag = Flag::default();
        let cancel = CancelToken::new();
        let mut checks_before_sleep = 0;
        let mut hook = || {
            checks_before_sleep += 1;
            if checks_before_sleep == 1 {
                flag.fire();
            }
        };
        let start = Instant::now();
        let got = wait_any_with(&[&flag], &cancel, in_secs(10), &mut hook);
        assert_eq!(got, Ok(vec![0]));
        assert_eq!(checks_before_sleep, 1, "the wait slept again after the source fired");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    /// Same window for the cancel token: a cancel landing there still ends the wait.
    #[test]
    fn a_cancel_between_check_and_sleep_is_not_lost() {
        let flag = Flag::default();
        let cancel = CancelToken::new();
        let start = Instant::now();
        let got = wait_any_with(&[&flag], &cancel, in_secs(10), &mut || cancel.cancel());
        assert_eq!(got, Err(WaitError::Cancelled));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    /// Sixty-four sources; a thread makes five of them ready in one atomic step. The
    /// wait reports all five, ascending, whatever order they were listed in the mask.
    #[test]
    fn poll_returns_every_ready_index_ascending() {
        let bits = Arc::new(Bits { mask: AtomicU64::new(0), notifier: Notifier::new() });
        let cancel = CancelToken::new();
        let fired: u64 = (1 << 63) | (1 << 40) | (1 << 7) | (1 << 3) | (1 << 0);
        let firer = {
            let bits = Arc::clone(&bits);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(30));
                bits.mask.fetch_or(fired, Ordering::SeqCst);
                bits.notifier.notify();
            })
        };
        let sources: Vec<Bit<'_>> = (0..64).map(|i| Bit(&bits, i)).collect();
        let refs: Vec<&dyn Readiness> = sources.iter().map(|s| s as &dyn Readiness).collect();
        assert_eq!(wait_any(&refs, &cancel, in_secs(10)), Ok(vec![0, 3, 7, 40, 63]));
        firer.join().unwrap();
    }

    /// Several independent sources fire inside the window before the sleep: one wake
    /// reports them all, and duplicates of a source are reported at each index.
    #[test]
    fn poll_reports_all_sources_that_fired_together() {
        let flags: Vec<Flag> = (0..10).map(|_| Flag::default()).collect();
        let cancel = CancelToken::new();
        let mut refs: Vec<&dyn Readiness> = flags.iter().map(|f| f as &dyn Readiness).collect();
        refs.push(&flags[5]);
        let mut hook = || {
            flags[8].fire();
            flags[2].fire();
            flags[5].fire();
        };
        let got = wait_any_with(&refs, &cancel, in_secs(60), &mut hook);
        assert_eq!(got, Ok(vec![2, 5, 8, 10]));
    }

    #[test]
    fn timer_source_becomes_ready_on_time() {
        let cancel = CancelToken::new();
        let start = Instant::now();
        let timer = Timer::after(Duration::from_millis(40));
        let never = Flag::default();
        assert_eq!(wait_any(&[&never, &timer], &cancel, in_secs(10)), Ok(vec![1]));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(40) && took < Duration::from_secs(2), "{took:?}");
        // The timer stays ready.
        assert!(timer.is_ready());
        // A deadline before the timer wins.
        let later = Timer::after(Duration::from_secs(30));
        let short = Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(wait_one(&later, &cancel, short), Err(WaitError::TimedOut));
    }

    #[test]
    fn poll_over_pipes_reports_the_readable_ones() {
        let pipes: Vec<(PipeWriter, PipeReader)> = (0..6).map(|_| byte_pipe(8)).collect();
        let cancel = CancelToken::new();
        let readers: Vec<&dyn Readiness> = pipes.iter().map(|(_, r)| r as &dyn Readiness).collect();
        pipes[4].0.write(b"x").unwrap();
        pipes[1].0.write(b"y").unwrap();
        assert_eq!(wait_any(&readers, &cancel, in_secs(10)), Ok(vec![1, 4]));
    }

    /// Many threads waiting on one source at once are all woken by one notify.
    #[test]
    fn one_notify_wakes_every_waiter() {
        let flag = Arc::new(Flag::default());
        let cancel = CancelToken::new();
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let (flag, cancel) = (Arc::clone(&flag), cancel.clone());
                thread::spawn(move || wait_any(&[&*flag], &cancel, in_secs(10)))
            })
            .collect();
        thread::sleep(Duration::from_millis(30));
        flag.fire();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(vec![0]));
        }
    }
}
