//! The audit verifier (`audit::verify_with`, and `audit::extract` for a console capture):
//! any text, however it imitates a log (forged lines, spliced runs, broken signatures,
//! huge numbers), gets a summary or the first break, never a panic.
//!
//! Input: a flags byte (bit 0: the log may still be open; bit 1: pin the seeds' key),
//! then the log: a console capture (lines framed with `@@audit `) or bare lines.
//! Holds: a verified log has one record per line, a close record unless open, an end
//! record for every capsule loaded, and verifies the same way with the key it names
//! pinned; every shorter prefix of it verifies as an open log; a break names a line of
//! the log (or the one after it).
#![no_main]

use astrid_fuzz::Reader;
use astrid_kernel::audit::{self, BreakKind, Options, Signing, SigningKey, VerifyingKey};
use libfuzzer_sys::fuzz_target;

/// The key the seeds are signed with (`SigningKey::from_bytes(&[1; 32])`).
fn seed_key() -> VerifyingKey {
    SigningKey::from_bytes(&[1; 32]).verifying_key()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Reader::new(data);
    let flags = input.u8();
    let text = String::from_utf8_lossy(input.rest());
    let lines: Vec<&str> = if text.lines().any(|l| l.starts_with(audit::FRAME_PREFIX)) {
        audit::extract(&text)
    } else {
        text.lines().filter(|l| !l.trim().is_empty()).collect()
    };
    let options = Options { key: (flags & 2 != 0).then(seed_key), open: flags & 1 != 0 };
    match audit::verify_with(lines.iter().copied(), &options) {
        Ok(summary) => {
            assert_eq!(summary.records, lines.len() as u64);
            assert!(summary.closed || options.open);
            if summary.closed {
                assert_eq!(summary.capsules_loaded, summary.capsules_ended);
            }
            assert!(summary.io_records <= summary.records);
            if let Signing::Signed { key, pinned } = &summary.signing {
                assert_eq!(*pinned, options.key.is_some());
                let bytes = audit::unhex::<32>(key).expect("the summary's key is 64 hex digits");
                let pinned = Options { key: Some(VerifyingKey::from_bytes(&bytes).expect("a valid key")), open: options.open };
                let again = audit::verify_with(lines.iter().copied(), &pinned).expect("verifies with its own key pinned");
                assert_eq!(again.records, summary.records);
            }
            for cut in [lines.len().saturating_sub(1), lines.len() / 2] {
                let open = Options { key: options.key, open: true };
                if let Err(b) = audit::verify_with(lines[..cut].iter().copied(), &open) {
                    panic!("a prefix of {cut} of {} lines of a verified log does not verify open: {b}", lines.len());
                }
            }
        }
        Err(b) => {
            assert!(b.line_no >= 1 && b.line_no <= lines.len() + 1, "break at line {} of {}", b.line_no, lines.len());
            if !matches!(b.kind, BreakKind::Truncated { .. } | BreakKind::EndedBySinkFailure(_)) {
                assert!(b.line_no <= lines.len());
            }
            let _ = b.to_string();
        }
    }
});
