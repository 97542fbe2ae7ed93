//! Giving up: write the failure code to QEMU's isa-debug-exit port when the loader's command
//! line asked for it (`debug-exit=0x<port>`), otherwise halt for good with interrupts off.

use core::arch::asm;
use core::sync::atomic::{AtomicU32, Ordering};

use astrid_boot::{BootError, FailureCode};

use super::outl;

/// The debug-exit port, or `NO_PORT` on bare metal, where the port may belong to anything.
static EXIT_PORT: AtomicU32 = AtomicU32::new(NO_PORT);
const NO_PORT: u32 = u32::MAX;

/// Records where failures are reported (from the loader's command line).
pub fn set_debug_exit(port: Option<u16>) {
    EXIT_PORT.store(port.map_or(NO_PORT, u32::from), Ordering::Relaxed);
}

/// Prints the error and fails with its code.
pub fn report(error: &BootError) -> ! {
    crate::say!("error: {error}");
    fail(error.code)
}

/// Exits with `code` through debug-exit if configured; halts otherwise (or if QEMU has no
/// such device and the write did nothing).
pub fn fail(code: FailureCode) -> ! {
    let port = EXIT_PORT.load(Ordering::Relaxed);
    if port != NO_PORT {
        outl(port as u16, code.value());
    }
    halt()
}

/// Stops this CPU for good.
pub fn halt() -> ! {
    loop {
        // SAFETY: disabling interrupts and halting only stops the CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}
