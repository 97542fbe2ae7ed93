//! Charging host-side resources to the capsule that caused them. An `Account` has a
//! limit; `Account::charge` takes an amount from it and hands back a `Charge`, which
//! gives the amount back when it is dropped. A charge travels with what it pays for (a
//! queued message, a connection's pipes, a thread), so the account is only credited when
//! the resource itself is gone, not when the capsule lets go of its handle.
//!
//! Accounts are per capsule (its ipc queue bytes, its connections) or image-wide (the
//! threads the image may start for connections). Nothing here knows WIT or the engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a charge was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted {
    pub what: &'static str,
    pub limit: usize,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} quota exhausted (limit {})", self.what, self.limit)
    }
}

impl std::error::Error for Exhausted {}

/// Something with a limit that charges are taken from.
#[derive(Debug)]
pub struct Account {
    what: &'static str,
    limit: usize,
    used: AtomicUsize,
}

impl Account {
    pub fn new(what: &'static str, limit: usize) -> Arc<Account> {
        Arc::new(Account { what, limit, used: AtomicUsize::new(0) })
    }

    /// Takes `amount` when it fits under the limit; never goes over, even when several
    /// threads charge at once.
    pub fn charge(self: &Arc<Self>, amount: usize) -> Result<Charge, Exhausted> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(amount).filter(|&n| n <= self.limit))
            .map(|_| Charge { account: self.clone(), amount })
            .map_err(|_| Exhausted { what: self.what, limit: self.limit })
    }

    /// What is charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `amount` more would fit now (a hint: another thread may take it first).
    pub fn has_room(&self, amount: usize) -> bool {
        self.used().checked_add(amount).is_some_and(|n| n <= self.limit)
    }
}

/// An amount taken from an account; given back on drop.
#[derive(Debug)]
pub struct Charge {
    account: Arc<Account>,
    amount: usize,
}

impl Charge {
    pub fn amount(&self) -> usize {
        self.amount
    }

    /// Makes this charge `amount`: takes the difference from the account when growing
    /// (refused past the limit, the charge unchanged), gives it back when shrinking.
    pub fn resize(&mut self, amount: usize) -> Result<(), Exhausted> {
        let account = &self.account;
        if amount > self.amount {
            let more = amount - self.amount;
            account
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(more).filter(|&n| n <= account.limit))
                .map_err(|_| Exhausted { what: account.what, limit: account.limit })?;
        } else {
            account.used.fetch_sub(self.amount - amount, Ordering::AcqRel);
        }
        self.amount = amount;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.used.fetch_sub(self.amount, Ordering::AcqRel);
    }
}

/// What a handle keeps alive for its owner's accounts: dropping the last holder gives
/// the charge back. Cloned into every handle made from one resource (a stream's halves
/// and pollables), so the charge outlives the handle the capsule dropped first.
pub type Held = Arc<Charge>;

/// What one capsule can make the image hold on its heap at most, in bytes: a part that
/// cannot be scaled (its tables, pipes, UDP queues, handles, one call's copies) and the
/// budgets that can (kv, ipc queue, TCP frame assembly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapAsk {
    pub fixed: usize,
    pub kv: usize,
    pub ipc: usize,
    pub frames: usize,
}

impl HeapAsk {
    pub fn total(&self) -> usize {
        self.fixed.saturating_add(self.kv).saturating_add(self.ipc).saturating_add(self.frames)
    }

    /// The scalable budgets at `parts` of [`SCALE`], never below `floor` (nor above what
    /// was asked).
    fn scaled(&self, parts: u64, floor: &HeapAsk) -> HeapAsk {
        let at = |asked: usize, least: usize| {
            let share = (asked as u128 * parts as u128 / SCALE as u128) as usize;
            share.max(least.min(asked))
        };
        HeapAsk { fixed: self.fixed, kv: at(self.kv, floor.kv), ipc: at(self.ipc, floor.ipc), frames: at(self.frames, floor.frames) }
    }
}

/// The resolution of [`fit_heap`]'s scaling.
const SCALE: u64 = 1 << 20;

/// The capsules' asks do not fit the heap even with every scalable budget at its floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapTooSmall {
    /// What the capsules may have (the heap less the image's reserve).
    pub available: usize,
    /// What they need at the least.
    pub needed: usize,
}

/// Fits the capsules' heap asks into `available` bytes: as asked when they fit,
/// otherwise every capsule's kv, ipc and frame budgets are scaled down by one common
/// factor (the largest that fits), none below its `floor`; the fixed parts are never
/// scaled. Refused when even the floors do not fit.
pub fn fit_heap(available: usize, asks: &[HeapAsk], floor: &HeapAsk) -> Result<Vec<HeapAsk>, HeapTooSmall> {
    let sum = |parts: u64| asks.iter().map(|a| a.scaled(parts, floor).total() as u128).sum::<u128>();
    if asks.iter().map(|a| a.total() as u128).sum::<u128>() <= available as u128 {
        return Ok(asks.to_vec());
    }
    let least = sum(0);
    if least > available as u128 {
        return Err(HeapTooSmall { available, needed: usize::try_from(least).unwrap_or(usize::MAX) });
    }
    // The largest factor whose total fits: `lo` always fits, `hi` never does.
    let (mut lo, mut hi) = (0u64, SCALE);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if sum(mid) <= available as u128 { lo = mid } else { hi = mid }
    }
    Ok(asks.iter().map(|a| a.scaled(lo, floor)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_under_the_limit_and_come_back_on_drop() {
        // (limit, charges taken in order, which of them succeed)
        let cases: &[(usize, &[usize], &[bool])] = &[
            (10, &[4, 4, 4], &[true, true, false]),
            (10, &[10, 1], &[true, false]),
            (10, &[11], &[false]),
            (0, &[0, 1], &[true, false]),
            (usize::MAX, &[usize::MAX, 1], &[true, false]),
        ];
        for (limit, amounts, want) in cases {
            let account = Account::new("test", *limit);
            let mut held = Vec::new();
            for (amount, ok) in amounts.iter().zip(want.iter()) {
                match account.charge(*amount) {
                    Ok(c) => {
                        assert!(ok, "limit {limit}: {amount} was taken");
                        held.push(c);
                    }
                    Err(e) => {
                        assert!(!ok, "limit {limit}: {amount} was refused");
                        assert_eq!(e, Exhausted { what: "test", limit: *limit });
                    }
                }
            }
            assert_eq!(account.used(), held.iter().map(Charge::amount).sum::<usize>());
            drop(held);
            assert_eq!(account.used(), 0, "limit {limit}: not everything came back");
        }
    }

    #[test]
    fn a_held_charge_lives_until_its_last_holder_drops() {
        let account = Account::new("streams", 1);
        let held: Held = Arc::new(account.charge(1).unwrap());
        let half = held.clone();
        drop(held);
        assert!(account.charge(1).is_err(), "credited while a holder lives");
        drop(half);
        assert!(account.charge(1).is_ok());
    }

    #[test]
    fn a_charge_resizes_within_its_account() {
        let account = Account::new("frames", 10);
        let mut c = account.charge(2).unwrap();
        c.resize(10).unwrap();
        assert_eq!(account.used(), 10);
        assert_eq!(c.resize(11), Err(Exhausted { what: "frames", limit: 10 }));
        assert_eq!((c.amount(), account.used()), (10, 10), "a refused growth changes nothing");
        c.resize(3).unwrap();
        assert_eq!(account.used(), 3);
        drop(c);
        assert_eq!(account.used(), 0);
    }

    #[test]
    fn heap_asks_fit_as_asked_scaled_or_refused() {
        const M: usize = 1 << 20;
        let ask = |fixed, kv, ipc, frames| HeapAsk { fixed: fixed * M, kv: kv * M, ipc: ipc * M, frames: frames * M };
        let floor = ask(0, 1, 2, 1);
        // (available MiB, asks, what each capsule gets, or the least needed when refused)
        type Case = (usize, Vec<HeapAsk>, Result<Vec<HeapAsk>, usize>);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // Room for everything: as asked.
            (100, vec![ask(10, 16, 16, 16)], Ok(vec![ask(10, 16, 16, 16)])),
            (116, vec![ask(10, 16, 16, 16), ask(10, 16, 16, 16)], Ok(vec![ask(10, 16, 16, 16); 2])),
            // Scaled by one factor: half of each scalable budget.
            (68, vec![ask(10, 16, 16, 16), ask(10, 16, 16, 16)], Ok(vec![ask(10, 8, 8, 8); 2])),
            // A capsule that asked less keeps its proportion.
            (46, vec![ask(10, 16, 16, 16), ask(0, 8, 8, 8)], Ok(vec![ask(10, 8, 8, 8), ask(0, 4, 4, 4)])),
            // Floors hold; the others give up more.
            (22, vec![ask(0, 32, 32, 32), ask(0, 2, 2, 2)], Ok(vec![ask(0, 6, 6, 6), ask(0, 1, 2, 1)])),
            // A budget asked below its floor stays as asked.
            (10, vec![ask(0, 0, 1, 0), ask(0, 16, 16, 16)], Ok(vec![ask(0, 0, 1, 0), ask(0, 3, 3, 3)])),
            // Exactly the floors.
            (28, vec![ask(10, 16, 16, 16), ask(10, 16, 16, 16)], Ok(vec![ask(10, 1, 2, 1); 2])),
            // Not even the floors: refused, saying what was needed.
            (27, vec![ask(10, 16, 16, 16), ask(10, 16, 16, 16)], Err(28)),
            (0, vec![ask(1, 0, 0, 0)], Err(1)),
            // No capsules need nothing.
            (0, vec![], Ok(vec![])),
        ];
        for (available, asks, want) in cases {
            let got = fit_heap(available * M, &asks, &floor);
            match (&got, want) {
                (Ok(got), Ok(want)) => {
                    for (g, w) in got.iter().zip(&want) {
                        // One step of the factor's resolution below the exact share.
                        let near = |a: usize, b: usize| a <= b && b - a <= b / (1 << 16) + 1;
                        assert!(g.fixed == w.fixed && near(g.kv, w.kv) && near(g.ipc, w.ipc) && near(g.frames, w.frames), "{available} MiB: {got:?}, want {want:?}");
                    }
                    assert!(got.iter().map(HeapAsk::total).sum::<usize>() <= available * M, "{available} MiB: over the heap");
                }
                (Err(e), Err(needed)) => assert_eq!(*e, HeapTooSmall { available: available * M, needed: needed * M }),
                (got, want) => panic!("{available} MiB: {got:?}, want {want:?} (MiB)"),
            }
        }
    }

    #[test]
    fn concurrent_charges_never_exceed_the_limit() {
        let account = Account::new("threads", 100);
        let taken: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| (0..100).filter_map(|_| account.charge(1).ok()).collect::<Vec<_>>())).collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(taken.len(), 100);
        assert_eq!(account.used(), 100);
    }
}
