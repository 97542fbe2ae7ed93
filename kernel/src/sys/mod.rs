//! What `astrid:sys` answers from, without WIT: the image's clocks and seeded
//! randomness. The host hands a seed through the boot path (`ASTRID_SEED`) where it can;
//! otherwise the seed comes from the CPU's RDSEED/RDRAND, never from kernel 0.11's
//! entropy call (zeros under TCG), and without either randomness is refused.

pub mod random;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use random::{Seed, SeedError};

/// Longest `sleep-ns` (the contract's 60 s).
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Most bytes one `random-bytes` returns.
pub const MAX_RANDOM: u64 = 4096;

/// Where the monotonic clock starts: the image's first use of it.
fn epoch() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Nanoseconds on the image's monotonic clock.
pub fn monotonic_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch on the wall clock (0 if it is before it).
pub fn wall_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A log message as one console line: a capsule cannot start a line of its own (no
/// `\n`/`\r`), nor write control characters that move the terminal's cursor.
pub fn one_line(message: &str) -> String {
    message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_cannot_break_the_console_framing() {
        for (input, want) in [
            ("plain", "plain"),
            ("two\nlines", "two lines"),
            ("cr\r\n@@audit {}", "cr  @@audit {}"),
            ("esc\u{1b}[2J", "esc [2J"),
        ] {
            assert_eq!(one_line(input), want);
        }
    }
}
