//! The image's console (stdout: the serial port under QEMU, uhyve's console) as a byte
//! sink for what capsules say. Every line a capsule writes starts with its label, so a
//! capsule can never begin a console line itself — in particular not an audit line.
//! Writes stay at most 4 KiB: the serial console keeps interrupts off for a whole write.

use std::io::Write;
use std::sync::Mutex;

use super::{ByteSink, StreamFailure};
use crate::wait::{Notifier, Readiness};

const PERMIT: usize = 4096;

pub struct ConsoleOutput {
    label: String,
    /// Whether the next byte this capsule writes starts a line.
    at_line_start: Mutex<bool>,
}

impl ConsoleOutput {
    /// A console sink whose lines start with `[capsule] `.
    pub fn new(capsule: &str) -> Self {
        ConsoleOutput { label: format!("[{capsule}] "), at_line_start: Mutex::new(true) }
    }

    fn labelled(&self, bytes: &[u8]) -> Vec<u8> {
        let mut at_start = self.at_line_start.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(bytes.len() + self.label.len());
        for &b in bytes {
            if *at_start {
                out.extend_from_slice(self.label.as_bytes());
            }
            out.push(b);
            *at_start = b == b'\n';
        }
        out
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
    fn write(&self, bytes: &[u8]) -> Result<(), StreamFailure> {
        let text = self.labelled(bytes);
        std::io::stdout().lock().write_all(&text).map_err(|e| StreamFailure::Failed(e.to_string()))
    }
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
}
