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
#[derive(Debug, Default)]
pub struct EventWord {
    generation: AtomicU32,
}

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
        EventWord { generation: AtomicU32::new(0) }
    }

    /// The generation now. SeqCst so it is ordered before the caller's readiness check.
    pub fn current(&self) -> u32 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Moves the generation on and wakes every thread sleeping on this word.
    pub fn wake_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        platform::futex_wake(&self.generation, u32::MAX);
    }

    /// Sleeps until the generation differs from `seen` or `deadline` passes. Spurious
    /// futex returns are absorbed here; a wrap of the counter all the way round (2^32
    /// bumps between the read and the sleep) is the only way to miss a change.
    pub fn wait_until_changed(&self, seen: u32, deadline: Option<Instant>) -> WaitResult {
        loop {
            if self.current() != seen {
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
            // Whatever the futex says, the loop re-reads the word and the clock.
            let _ = futex_wait(&self.generation, seen, timeout);
        }
    }
}

/// The list of event words a readiness source bumps when it may have become ready.
///
/// Waiters register their word for the length of one wait. The list is guarded by a
/// spin lock held only to push, remove or walk it: the wake path runs inside sources'
/// own operations and must never sleep on a futex itself. Contended, it yields the CPU
/// instead of spinning, so a preempted holder on the same core gets to finish.
#[derive(Default)]
pub struct Notifier {
    waiters: SpinMutex<Vec<Arc<EventWord>>, Yield>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("waiters", &self.waiters.lock().len()).finish()
    }
}

impl Notifier {
    pub const fn new() -> Self {
        Notifier { waiters: SpinMutex::new(Vec::new()) }
    }

    /// Adds `word` to the list until the returned registration is dropped. Registering
    /// the same word twice is allowed (a poll may list one pollable twice); each
    /// registration removes one entry.
    pub fn register(&self, word: &Arc<EventWord>) -> Registration<'_> {
        self.waiters.lock().push(Arc::clone(word));
        Registration { notifier: self, word: Arc::clone(word) }
    }

    /// Wakes every registered waiter. Call it after the state change it announces.
    pub fn notify(&self) {
        for word in self.waiters.lock().iter() {
            word.wake_all();
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
    word: Arc<EventWord>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waiters = self.notifier.waiters.lock();
        if let Some(i) = waiters.iter().position(|w| Arc::ptr_eq(w, &self.word)) {
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
