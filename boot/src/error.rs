//! Failure codes and the error every loader stage returns.
//! A failure code is what the loader writes to QEMU's isa-debug-exit port, so QEMU exits with
//! status `2 * code + 1`; the message says what went wrong and how to fix it.

use alloc::string::String;
use core::fmt;

/// Why the loader gave up. The numeric values are part of the loader's interface
/// (documented in boot/README.md): scripts map QEMU exit statuses back to them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCode {
    /// No multiboot module was given, so there is no app to boot.
    NoApp = 8,
    /// The app module is not an ELF file the loader can load.
    BadApp = 9,
    /// The app has no `HERMIT` note or a Hermit entry version other than 4.
    EntryVersion = 10,
    /// Not enough RAM above the placed app for the kernel.
    TooLittleMemory = 11,
    /// The multiboot information is unusable (bad magic, no memory map, modules outside RAM).
    BadMultiboot = 12,
    /// Anything else, including CPU exceptions and internal errors of the loader.
    Other = 13,
}

impl FailureCode {
    /// The value written to the debug-exit port.
    pub const fn value(self) -> u32 {
        self as u32
    }

    /// The exit status QEMU's isa-debug-exit device turns the value into.
    pub const fn qemu_exit_status(self) -> i32 {
        2 * self as i32 + 1
    }
}

/// A failure with a message for the serial console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootError {
    /// The failure code to exit with.
    pub code: FailureCode,
    /// What went wrong.
    pub what: String,
    /// How the user can fix it.
    pub fix: &'static str,
}

impl BootError {
    /// Creates an error from its parts.
    pub fn new(code: FailureCode, what: impl Into<String>, fix: &'static str) -> Self {
        Self {
            code,
            what: what.into(),
            fix,
        }
    }
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} — {}", self.what, self.fix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_documented_values() {
        assert_eq!(FailureCode::NoApp.value(), 8);
        assert_eq!(FailureCode::BadApp.value(), 9);
        assert_eq!(FailureCode::EntryVersion.value(), 10);
        assert_eq!(FailureCode::TooLittleMemory.value(), 11);
        assert_eq!(FailureCode::BadMultiboot.value(), 12);
        assert_eq!(FailureCode::Other.value(), 13);
        assert_eq!(FailureCode::NoApp.qemu_exit_status(), 17);
        assert_eq!(FailureCode::Other.qemu_exit_status(), 27);
    }

    #[test]
    fn message_names_problem_and_fix() {
        let e = BootError::new(FailureCode::NoApp, "no app module", "pass it with -initrd");
        assert_eq!(e.to_string(), "no app module — pass it with -initrd");
    }
}
