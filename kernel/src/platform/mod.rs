//! The one seam between the application and what it runs on. Everything that differs
//! between the Hermit image and hosted mode (a Linux process) is chosen here, once.

#[cfg(target_os = "hermit")]
mod hermit;
#[cfg(target_os = "hermit")]
pub use hermit::*;
#[cfg(all(target_os = "hermit", feature = "engine"))]
pub mod wasmtime_glue;
#[cfg(target_os = "hermit")]
mod heap;

pub mod phases;

#[cfg(not(target_os = "hermit"))]
mod hosted;
#[cfg(not(target_os = "hermit"))]
pub use hosted::*;

/// `poll_fd` event bits (the same values on Linux and Hermit).
pub const POLLIN: i16 = 0x1;
pub const POLLOUT: i16 = 0x4;
pub const POLLERR: i16 = 0x8;
pub const POLLHUP: i16 = 0x10;

/// What one futex wait ended with. Every outcome other than `TimedOut` may be
/// spurious from the caller's point of view: callers re-check the word they wait on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FutexWait {
    /// A wake reached this waiter (or the kernel woke it for its own reasons).
    Woken,
    /// The timeout passed first.
    TimedOut,
    /// The word no longer held `expected` when the wait began: nothing to sleep for.
    Mismatch,
    /// A signal interrupted the wait (Linux only).
    Interrupted,
}

/// Ends the process with `status`, after making sure everything printed has left.
#[allow(clippy::disallowed_methods)] // flushes only: nothing is written here
pub fn exit(status: crate::exit::Status) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    report_exit(status.code());
    std::process::exit(i32::from(status.code()))
}
