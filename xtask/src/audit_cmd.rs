//! `xtask audit verify LOG`: checks an audit log — a file of JSON lines (the virtio
//! sink) or a captured console with `@@audit ` lines — for sequence, hash chain and
//! structure, and names the first break.

use std::path::Path;

use anyhow::{Context, Result};
use astrid_kernel::audit;

/// The audit lines of a log file or a console capture.
pub fn audit_lines(text: &str) -> Vec<&str> {
    if text.lines().any(|l| l.starts_with(audit::FRAME_PREFIX)) {
        audit::extract(text)
    } else {
        text.lines().filter(|l| !l.trim().is_empty()).collect()
    }
}

/// Verifies `path`; prints the summary or the first break. Returns whether it held.
pub fn verify(path: &Path, allow_open: bool) -> Result<bool> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading audit log {}", path.display()))?;
    let lines = audit_lines(&text);
    let result = if allow_open { audit::verify_open(lines.iter().copied()) } else { audit::verify(lines.iter().copied()) };
    match result {
        Ok(summary) => {
            println!(
                "{}: OK — {} records ({} io records, {} capsule ends){}, head {}",
                path.display(),
                summary.records,
                summary.io_records,
                summary.capsules_ended,
                if summary.closed { ", closed" } else { ", still open" },
                summary.head
            );
            Ok(true)
        }
        Err(b) => {
            println!("{}: BROKEN — {b}", path.display());
            Ok(false)
        }
    }
}
