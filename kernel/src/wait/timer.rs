//! A source that becomes ready at an instant on the monotonic clock. Nobody fires it:
//! a wait that includes it sleeps no later than its deadline and then finds it ready.

use std::time::{Duration, Instant};

use super::Readiness;
use super::event::Notifier;

/// How far away "never" is: about a century.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    deadline: Instant,
}

impl Timer {
    /// Ready `delay` from now. A delay too large for the clock saturates to "never" in
    /// practice (`NEVER`).
    pub fn after(delay: Duration) -> Self {
        let now = Instant::now();
        let deadline = now
            .checked_add(delay)
            .unwrap_or_else(|| now + NEVER);
        Timer { deadline }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Readiness for Timer {
    fn is_ready(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn notifier(&self) -> Option<&Notifier> {
        None
    }

    fn ready_at(&self) -> Option<Instant> {
        Some(self.deadline)
    }
}
