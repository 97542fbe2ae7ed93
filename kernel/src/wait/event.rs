//! The event word a waiter sleeps on, and the notifier through which a source bumps the
//! words of everyone waiting on it. The futex calls behind them live in `platform`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use spin::mutex::SpinMutex;
use spin::relax::Yield;

use crate::platform::{self, futex_wait};

/// A generation counter that one or more threads sleep on until it moves.
///
/// The contract that rules out lost wake-ups: a waiter reads `current()` *before* it
/// checks whatever condition it waits for, and passes that value to
/// `wait_until_changed`; a source changes its state *before* it calls `wake_all`. A
/// change that lands between the check and the sleep has then already moved the
/// generation, so the sleep returns at once.
///
/// The word's lowest bit says "someone may be asleep on it": a waiter sets it (in the
/// same compare-and-swap that proves the generation has not moved) before it sleeps,
/// and `wake_all` clears it while moving the generation on, and makes the wake system
/// call only when it was set. A wake that finds nobody asleep (the common case when the
/// waiter is still checking, or has already returned) is then one atomic operation.
#[derive(Debug, Default)]
pub struct EventWord {
    word: AtomicU32,
}

/// The "someone may be asleep" bit; the generation moves in steps of `GENERATION`.
const SLEEPING: u32 = 1;
const GENERATION: u32 = 2;

/// Why `wait_until_changed` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitResult {
    /// The generation differs from the one the caller saw.
    Changed,
    /// The deadline passed with the generation unchanged.
    TimedOut,
}

impl EventWord {
    pub const fn new() -> Self {
        EventWord { word: AtomicU32::new(0) }
    }

    /// The generation now. SeqCst so it is ordered before the caller's readiness check.
    pub fn current(&self) -> u32 {
        self.word.load(Ordering::SeqCst) & !SLEEPING
    }

    /// Moves the generation on and wakes every thread sleeping on this word.
    pub fn wake_all(&self) {
        if self.bump() {
            platform::futex_wake(&self.word, u32::MAX);
        }
    }

    /// Moves the generation on and clears the sleeping bit; says whether it was set (a
    /// thread may be asleep and needs `futex_wake`). Clearing it is safe because the
    /// wake that follows wakes *every* sleeper, and each one sets it again before it
    /// sleeps again.
    fn bump(&self) -> bool {
        let old = self
            .word
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(v.wrapping_add(GENERATION) & !SLEEPING))
            .unwrap_or_else(|v| v);
        old & SLEEPING != 0
    }

    /// Sleeps until the generation differs from `seen` or `deadline` passes. Spurious
    /// futex returns are absorbed here; a wrap of the counter all the way round (2^31
    /// bumps between the read and the sleep) is the only way to miss a change.
    pub fn wait_until_changed(&self, seen: u32, deadline: Option<Instant>) -> WaitResult {
        if self.spin_until_changed(seen, deadline) {
            return WaitResult::Changed;
        }
        loop {
            let v = self.word.load(Ordering::SeqCst);
            if v & !SLEEPING != seen {
                return WaitResult::Changed;
            }
            let timeout = match deadline {
                None => None,
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return WaitResult::TimedOut;
                    }
                    Some(deadline - now)
                }
            };
            // Announce the sleep; a bump in between fails the swap and the loop sees it.
            if v & SLEEPING == 0
                && self.word.compare_exchange(v, v | SLEEPING, Ordering::SeqCst, Ordering::SeqCst).is_err()
            {
                continue;
            }
            // Whatever the futex says, the loop re-reads the word and the clock.
            let _ = futex_wait(&self.word, v | SLEEPING, timeout);
        }
    }
}

impl EventWord {
    /// Spins (yielding) for `platform::spin_before_sleep()` (none in the image), or
    /// until `deadline` if that comes first; true when the generation moved meanwhile.
    /// The sleeping bit stays clear while spinning, so the waker makes no system call.
    fn spin_until_changed(&self, seen: u32, deadline: Option<Instant>) -> bool {
        let spin = platform::spin_before_sleep();
        if spin.is_zero() {
            return false;
        }
        let started = Instant::now();
        let until = deadline.map_or(started + spin, |d| d.min(started + spin));
        loop {
            if self.word.load(Ordering::SeqCst) & !SLEEPING != seen {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            // Yield rather than only spin: when the partner is runnable on this same CPU
            // (its wake landed here), it gets the CPU at once instead of after the spin.
            std::thread::yield_now();
        }
    }
}

thread_local! {
    /// The word each thread's waits sleep on, made once per thread: a wait allocates
    /// nothing for it, and a late bump from a wait that already ended is one more
    /// spurious wake-up, which every wait re-checks anyway.
    static THREAD_WORD: Arc<EventWord> = Arc::new(EventWord::new());
}

/// This thread's event word (see `THREAD_WORD`).
pub fn thread_word() -> Arc<EventWord> {
    THREAD_WORD.with(Arc::clone)
}

/// The list of event words a readiness source bumps when it may have become ready.
///
/// Waiters register their word for the length of one wait. The list is guarded by a
/// spin lock held only to push, remove or walk it (moving each word's generation on, an
/// atomic operation): the wake system calls happen after it is released, so a woken
/// waiter taking its registration out never finds the lock held by its own waker. The
/// lock must never sleep on a futex itself (it runs inside sources' own operations);
/// contended, it yields the CPU instead of spinning, so a preempted holder on the same
/// core gets to finish.
#[derive(Default)]
pub struct Notifier {
    waiters: SpinMutex<Vec<Arc<EventWord>>, Yield>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("waiters", &self.waiters.lock().len()).finish()
    }
}

/// Words woken after the lock is released without allocating; more spill to a `Vec`.
const INLINE_WAKES: usize = 4;

impl Notifier {
    pub const fn new() -> Self {
        Notifier { waiters: SpinMutex::new(Vec::new()) }
    }

    /// Adds `word` to the list until the returned registration is dropped. Registering
    /// the same word twice is allowed (a poll may list one pollable twice); each
    /// registration removes one entry.
    pub fn register(&self, word: &Arc<EventWord>) -> Registration<'_> {
        self.waiters.lock().push(Arc::clone(word));
        Registration { notifier: self, word: Arc::as_ptr(word) }
    }

    /// Wakes every registered waiter. Call it after the state change it announces.
    pub fn notify(&self) {
        let mut inline: [Option<Arc<EventWord>>; INLINE_WAKES] = Default::default();
        let mut spilled = Vec::new();
        {
            let waiters = self.waiters.lock();
            let mut n = 0;
            for word in waiters.iter() {
                if word.bump() {
                    if n < INLINE_WAKES {
                        inline[n] = Some(Arc::clone(word));
                        n += 1;
                    } else {
                        spilled.push(Arc::clone(word));
                    }
                }
            }
        }
        for word in inline.iter().flatten().chain(&spilled) {
            platform::futex_wake(&word.word, u32::MAX);
        }
    }

    /// How many waits are registered now (for tests and diagnostics).
    pub fn waiter_count(&self) -> usize {
        self.waiters.lock().len()
    }
}

/// One word's place in a notifier's list; dropping it takes the word out again.
pub struct Registration<'a> {
    notifier: &'a Notifier,
    /// Only compared, never dereferenced: the list's own `Arc` keeps the word alive.
    word: *const EventWord,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waiters = self.notifier.waiters.lock();
        if let Some(i) = waiters.iter().position(|w| std::ptr::eq(Arc::as_ptr(w), self.word)) {
            waiters.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::Duration;

    use super::*;

    #[test]
    fn changed_word_returns_without_sleeping() {
        let word = EventWord::new();
        let seen = word.current();
        word.wake_all();
        let start = Instant::now();
        let far = Instant::now() + Duration::from_secs(30);
        assert_eq!(word.wait_until_changed(seen, Some(far)), WaitResult::Changed);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn wake_from_another_thread() {
        let word = Arc::new(EventWord::new());
        let seen = word.current();
        let waker = {
            let word = Arc::clone(&word);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(30));
                word.wake_all();
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(word.wait_until_changed(seen, Some(deadline)), WaitResult::Changed);
        assert!(Instant::now() < deadline);
        waker.join().unwrap();
    }

    #[test]
    fn deadline_passes_without_a_change() {
        let word = EventWord::new();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(40);
        assert_eq!(word.wait_until_changed(word.current(), Some(deadline)), WaitResult::TimedOut);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(40), "woke early: {took:?}");
        assert!(took < Duration::from_secs(2), "woke late: {took:?}");
    }

    /// A wake with nobody asleep moves the generation and leaves no sleeping mark (it
    /// made no system call); a sleeper marks the word, and the wake clears the mark.
    #[test]
    fn the_sleeping_mark_is_set_by_a_sleeper_and_cleared_by_its_wake() {
        let word = Arc::new(EventWord::new());
        let seen = word.current();
        assert!(!word.bump(), "nobody asleep: no wake call needed");
        assert_ne!(word.current(), seen);
        let seen = word.current();
        let sleeper = {
            let word = Arc::clone(&word);
            thread::spawn(move || word.wait_until_changed(seen, Some(Instant::now() + Duration::from_secs(10))))
        };
        let start = Instant::now();
        while word.word.load(Ordering::SeqCst) & SLEEPING == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "the sleeper never marked the word");
            thread::yield_now();
        }
        word.wake_all();
        assert_eq!(sleeper.join().unwrap(), WaitResult::Changed);
        assert_eq!(word.word.load(Ordering::SeqCst) & SLEEPING, 0, "the wake left the mark set");
        assert!(!word.bump());
    }

    #[test]
    fn registrations_come_and_go() {
        let notifier = Notifier::new();
        let word = Arc::new(EventWord::new());
        let a = notifier.register(&word);
        let b = notifier.register(&word);
        assert_eq!(notifier.waiter_count(), 2);
        let seen = word.current();
        notifier.notify();
        assert_ne!(word.current(), seen);
        drop(a);
        assert_eq!(notifier.waiter_count(), 1);
        drop(b);
        assert_eq!(notifier.waiter_count(), 0);
        // Nobody registered: notifying touches no word.
        let seen = word.current();
        notifier.notify();
        assert_eq!(word.current(), seen);
    }
}
