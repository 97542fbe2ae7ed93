//! Start-up phases: where the image's boot spends its time, on the guest's own clock.
//! Each step of the start-up path marks its end ([`mark`]: one clock read and a push
//! under a lock, nothing printed); with `ASTRID_BOOT_PHASES=1` the entry point prints
//! them as one line when the run has ended, just before the exit (`scripts/bench --only
//! boot` reads it), so the console, which is slow under TCG, costs the boot nothing
//! until then.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most marks kept (a boot with many capsules marks each one's steps; later ones drop).
const MAX_MARKS: usize = 64;

/// What the line starts with (`scripts/bench` finds it by this).
pub const LINE_PREFIX: &str = "astrid: boot phases (ms since main):";

static MARKS: Mutex<Vec<(&'static str, Instant)>> = Mutex::new(Vec::new());

/// Notes that the step `label` ended now. The first mark is the clock's zero.
pub fn mark(label: &'static str) {
    let now = Instant::now();
    if let Ok(mut marks) = MARKS.lock()
        && marks.len() < MAX_MARKS
    {
        marks.push((label, now));
    }
}

/// The marks so far, each as its label and its time since the first.
pub fn so_far() -> Vec<(&'static str, Duration)> {
    let marks = MARKS.lock().map(|m| m.clone()).unwrap_or_default();
    let Some(&(_, zero)) = marks.first() else { return Vec::new() };
    marks.into_iter().map(|(label, at)| (label, at.saturating_duration_since(zero))).collect()
}

/// The one console line: `LINE_PREFIX label=ms.ms label=ms.ms …`.
pub fn line() -> String {
    render(&so_far())
}

fn render(marks: &[(&str, Duration)]) -> String {
    let mut out = String::from(LINE_PREFIX);
    for (label, at) in marks {
        out.push_str(&format!(" {label}={:.1}", at.as_secs_f64() * 1e3));
    }
    out
}

/// Parses a [`line`] back into its marks (label, ms since main): `None` when `line`
/// is not one.
pub fn parse(line: &str) -> Option<Vec<(String, f64)>> {
    let rest = &line[line.find(LINE_PREFIX)? + LINE_PREFIX.len()..];
    rest.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_line_parses_back_to_its_marks() {
        let line = render(&[("main", Duration::ZERO), ("engine", Duration::from_micros(12_345)), ("loaded", Duration::from_millis(70))]);
        let parsed = parse(&format!("   12.0 ms  {line}")).expect("the line parses");
        assert_eq!(parsed, vec![("main".to_string(), 0.0), ("engine".to_string(), 12.3), ("loaded".to_string(), 70.0)]);
        assert_eq!(parse("astrid: something else"), None);
    }

    #[test]
    fn marks_are_kept_in_order_on_the_first_marks_clock() {
        mark("phases-test-a");
        std::thread::sleep(Duration::from_millis(2));
        mark("phases-test-b");
        let marks = so_far();
        let at = |l: &str| marks.iter().find(|(k, _)| *k == l).map(|(_, t)| *t);
        // Other tests in this process may mark too (and fill the list): only when both
        // of ours are kept can their order be checked.
        if let (Some(a), Some(b)) = (at("phases-test-a"), at("phases-test-b")) {
            assert!(b >= a + Duration::from_millis(2), "{marks:?}");
        }
        assert_eq!(marks.first().map(|(_, t)| *t), Some(Duration::ZERO));
    }
}
