//! Hosted (Linux process) side of the platform seam.

/// A Linux process has no boot modules.
pub fn boot_module(_addr: u64, _len: u64) -> Option<&'static [u8]> {
    None
}

/// The process exit status already carries everything.
pub fn report_exit(_status: u8) {}
