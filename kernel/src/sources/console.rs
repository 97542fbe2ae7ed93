//! The image's console (stdout: the serial port under QEMU, uhyve's console) as a byte
//! sink for what capsules say. Every line a capsule writes starts with its label, so a
//! capsule can never begin a console line itself — in particular not an audit line —
//! and what it writes passes the console's one escaping rule (`audit::needs_escape`):
//! only `\n` ends a line; a `\r`, another control character, a Unicode line separator or
//! an override is shown escaped, and bytes that are not UTF-8 as `\x..`.
//! Writes stay at most 4 KiB: the serial console keeps interrupts off for a whole write.

use std::io::Write;
use std::sync::Mutex;

use super::{ByteSink, StreamFailure};
use crate::audit;
use crate::wait::{Notifier, Readiness};

const PERMIT: usize = 4096;

pub struct ConsoleOutput {
    label: String,
    state: Mutex<LineState>,
}

struct LineState {
    /// Whether the next character this capsule writes starts a line.
    at_line_start: bool,
    /// The start of a UTF-8 sequence a write ended in the middle of (at most 3 bytes).
    pending: Vec<u8>,
}

impl ConsoleOutput {
    /// A console sink whose lines start with `[capsule] `.
    pub fn new(capsule: &str) -> Self {
        ConsoleOutput { label: format!("[{}] ", audit::escape(capsule)), state: Mutex::new(LineState { at_line_start: true, pending: Vec::new() }) }
    }

    fn labelled(&self, bytes: &[u8]) -> Vec<u8> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut input = std::mem::take(&mut st.pending);
        input.extend_from_slice(bytes);
        let mut out = String::with_capacity(input.len() + self.label.len());
        let mut rest = input.as_slice();
        loop {
            let (good, bad) = match std::str::from_utf8(rest) {
                Ok(text) => (text, None),
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    (std::str::from_utf8(good).unwrap_or_default(), Some((bad, e.error_len())))
                }
            };
            for c in good.chars() {
                self.push(&mut st, &mut out, c);
            }
            match bad {
                None => break,
                // A sequence cut by the end of this write: the next write completes it.
                Some((bad, None)) => {
                    st.pending = bad.to_vec();
                    break;
                }
                Some((bad, Some(n))) => {
                    for b in &bad[..n] {
                        self.start_line(&mut st, &mut out);
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                    rest = &bad[n..];
                }
            }
        }
        out.into_bytes()
    }

    fn start_line(&self, st: &mut LineState, out: &mut String) {
        if st.at_line_start {
            out.push_str(&self.label);
            st.at_line_start = false;
        }
    }

    fn push(&self, st: &mut LineState, out: &mut String, c: char) {
        self.start_line(st, out);
        if c == '\n' {
            out.push('\n');
            st.at_line_start = true;
        } else if audit::needs_escape(c) {
            out.push_str(&audit::escape(c.encode_utf8(&mut [0; 4])));
        } else {
            out.push(c);
        }
    }
}

impl Readiness for ConsoleOutput {
    fn is_ready(&self) -> bool {
        true
    }
    fn notifier(&self) -> Option<&Notifier> {
        None
    }
}

impl ByteSink for ConsoleOutput {
    fn check_write(&self) -> Result<usize, StreamFailure> {
        Ok(PERMIT)
    }
    #[allow(clippy::disallowed_methods)] // labelled and escaped above
    fn write(&self, bytes: &[u8]) -> Result<(), StreamFailure> {
        let text = self.labelled(bytes);
        std::io::stdout().lock().write_all(&text).map_err(|e| StreamFailure::Failed(e.to_string()))
    }
    #[allow(clippy::disallowed_methods)] // flushes what `write` put there
    fn flush(&self) -> Result<(), StreamFailure> {
        std::io::stdout().lock().flush().map_err(|e| StreamFailure::Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capsule_output_cannot_start_a_console_line() {
        let sink = ConsoleOutput::new("demo");
        let mut out = sink.labelled(b"@@au");
        out.extend(sink.labelled(b"dit {\"seq\":0}\nok\n@@audit x"));
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, "[demo] @@audit {\"seq\":0}\n[demo] ok\n[demo] @@audit x");
        assert!(crate::audit::extract(&out).is_empty(), "{out}");
    }

    #[test]
    fn only_a_newline_ends_a_line_and_the_rest_is_shown_escaped() {
        #[rustfmt::skip]
        let cases: &[(&[&[u8]], &str)] = &[
            (&[b"a\rb"], "[c] a\\rb"),
            (&[b"x\r@@audit {}\n"], "[c] x\\r@@audit {}\n"),
            (&["nel\u{85}@@audit\u{2028}@@audit".as_bytes()], "[c] nel\\u{85}@@audit\\u{2028}@@audit"),
            (&[b"esc\x1b[2J"], "[c] esc\\u{1b}[2J"),
            // A character split across writes is kept whole; bytes that are no UTF-8 are shown.
            (&[b"\xc3", b"\xa9!"], "[c] \u{e9}!"),
            (&[b"\xe2\x80", b"\xa8x"], "[c] \\u{2028}x"),
            (&[b"\xff\n\xfe"], "[c] \\xff\n[c] \\xfe"),
            (&["é\n\n".as_bytes()], "[c] é\n[c] \n"),
        ];
        for (writes, want) in cases {
            let sink = ConsoleOutput::new("c");
            let out: Vec<u8> = writes.iter().flat_map(|w| sink.labelled(w)).collect();
            let out = String::from_utf8(out).unwrap();
            assert_eq!(out, *want, "{writes:?}");
            assert!(crate::audit::extract(&out).is_empty());
        }
    }
}
