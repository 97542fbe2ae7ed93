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
