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

/// Most bytes of a log message shown on the console: the serial console keeps
/// interrupts off for a whole write, so one capsule's megabyte-long line would stall
/// the machine. The audit record counts every byte.
pub const MAX_LOG_LINE: usize = 4096;

/// A log message as the console shows it: at most [`MAX_LOG_LINE`] bytes (cut at a
/// character boundary) and, when cut, how much was left out. Escaping is the console's
/// (`say!`), not this function's.
pub fn clip_log(message: &str) -> (&str, String) {
    if message.len() <= MAX_LOG_LINE {
        return (message, String::new());
    }
    let mut end = MAX_LOG_LINE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    (&message[..end], format!(" … ({} more bytes)", message.len() - end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_log_lines_are_cut_at_a_character() {
        assert_eq!(clip_log("short"), ("short", String::new()));
        let long = "é".repeat(MAX_LOG_LINE);
        let (shown, more) = clip_log(&long);
        assert!(shown.len() <= MAX_LOG_LINE && shown.len() >= MAX_LOG_LINE - 1);
        assert_eq!(more, format!(" … ({} more bytes)", long.len() - shown.len()));
    }
}
