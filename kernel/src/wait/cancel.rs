//! A capsule's cancellation, as a readiness source: cancelling wakes every wait that
//! registered the token, and those waits return `cancelled`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Readiness;
use super::event::Notifier;

/// Shared by every wait of one capsule (clones share one flag). Once cancelled it stays
/// cancelled: a capsule is never un-cancelled.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    notifier: Notifier,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag, then wakes every wait in progress on this token. Idempotent.
    pub fn cancel(&self) {
        // SeqCst pairs with the waiter's read of its event word (see `EventWord`).
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.notifier.notify();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }
}

impl Readiness for CancelToken {
    fn is_ready(&self) -> bool {
        self.is_cancelled()
    }

    fn notifier(&self) -> Option<&Notifier> {
        Some(&self.inner.notifier)
    }
}

/// Cancels `token` after `delay`, from a thread of its own that ends early when the
/// token is cancelled otherwise: a capsule's deadline watchdog, and the testing
/// package's cancel from the host side.
pub fn cancel_after(token: &CancelToken, delay: std::time::Duration) -> std::io::Result<()> {
    let token = token.clone();
    let deadline = std::time::Instant::now() + delay;
    std::thread::Builder::new().name("astrid-canceller".into()).spawn(move || {
        if super::wait_any(&[], &token, Some(deadline)) == Err(super::WaitError::TimedOut) {
            token.cancel();
        }
    })?;
    Ok(())
}
