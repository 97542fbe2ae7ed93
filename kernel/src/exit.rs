//! Exit statuses of the image and how they cross the QEMU boundary.
//!
//! Under uhyve and in hosted mode the status propagates natively. Under QEMU the
//! application writes a value to the isa-debug-exit port and QEMU exits with
//! `2 * value + 1`. The kernel itself writes 0 (failure) or 1 (success) there, and our
//! loader writes 8..=15, so the application offsets its status by [`APP_BASE`] to keep
//! every origin distinguishable on the host side.

/// Statuses the application reports (sysexits(3) numbering where one fits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The capsule was loaded and ran to completion.
    Ok = 0,
    /// The capsule failed (trap, error result) — the capsule's fault, not the image's.
    CapsuleFailed = 1,
    /// The capsule was cancelled (its deadline passed, or the host cancelled it).
    CapsuleCancelled = 2,
    /// The image was started wrongly (no capsule, bad arguments).
    Usage = 64,
    /// The capsule is not acceptable (empty, not wasm, unsupported version, too large).
    DataErr = 65,
    /// The capsule could not be found or read.
    NoInput = 66,
    /// An internal error of the image.
    Software = 70,
    /// An audit sink failed: the image stopped every capsule rather than let it go on
    /// unrecorded (fail-closed); the surviving sink's log ends with the failure.
    AuditFailed = 74,
}

impl Status {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// First debug-exit value used by the application (value = APP_BASE + status).
pub const APP_BASE: u32 = 16;
/// Largest application status that survives the debug-exit encoding (QEMU keeps 8 bits).
pub const APP_MAX_STATUS: u32 = 127 - APP_BASE;
/// Debug-exit values written by our boot loader (`boot/`), one per failure kind.
pub const LOADER_CODES: core::ops::RangeInclusive<u32> = 8..=15;

/// Where a guest run ended, decoded from QEMU's exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// The application reported this status.
    App(u8),
    /// The boot loader failed with this code (see boot/README.md).
    Loader(u32),
    /// The kernel wrote its own verdict (panic or an exit that bypassed the application).
    Kernel { success: bool },
    /// QEMU exited without any debug-exit write: triple fault, reset, or QEMU error.
    NoReport(i32),
}

/// The value the application writes to the debug-exit port for `status`.
pub fn debug_exit_value(status: u8) -> u32 {
    APP_BASE + u32::from(status).min(APP_MAX_STATUS)
}

/// Decodes QEMU's process exit status (with `isa-debug-exit` attached).
pub fn decode_qemu_status(rc: i32) -> GuestExit {
    if rc <= 0 || rc % 2 == 0 {
        return GuestExit::NoReport(rc);
    }
    let value = ((rc - 1) / 2) as u32;
    match value {
        0 => GuestExit::Kernel { success: false },
        1 => GuestExit::Kernel { success: true },
        v if LOADER_CODES.contains(&v) => GuestExit::Loader(v),
        v if v >= APP_BASE => GuestExit::App((v - APP_BASE) as u8),
        v => GuestExit::NoReport(v as i32 * 2 + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_statuses_round_trip_through_qemu_encoding() {
        for s in [0u8, 1, 2, 64, 65, 66, 70, APP_MAX_STATUS as u8] {
            let rc = (2 * debug_exit_value(s) + 1) as i32 & 0xff;
            assert_eq!(decode_qemu_status(rc), GuestExit::App(s), "status {s}");
        }
    }

    #[test]
    fn kernel_and_loader_values_are_not_mistaken_for_app_statuses() {
        assert_eq!(decode_qemu_status(1), GuestExit::Kernel { success: false });
        assert_eq!(decode_qemu_status(3), GuestExit::Kernel { success: true });
        assert_eq!(decode_qemu_status(17), GuestExit::Loader(8));
        assert_eq!(decode_qemu_status(31), GuestExit::Loader(15));
        assert_eq!(decode_qemu_status(0), GuestExit::NoReport(0));
        assert_eq!(decode_qemu_status(-9), GuestExit::NoReport(-9));
    }

    #[test]
    fn oversized_statuses_saturate_instead_of_wrapping_into_other_origins() {
        assert_eq!(debug_exit_value(255), 127);
        assert_eq!(decode_qemu_status(255), GuestExit::App(APP_MAX_STATUS as u8));
    }
}
