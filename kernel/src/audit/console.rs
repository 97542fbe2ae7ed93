//! Audit lines on the serial console, framed so they separate from everything else
//! written there (the kernel's log, the image's own messages): each audit line starts
//! with `@@audit `, and the host's `extract` keeps exactly those lines.
//!
//! Contract for the rest of the image: nothing else may start a console line with
//! `FRAME_PREFIX`. Capsule output that reaches the console must be escaped or framed
//! on its own, or a capsule could put lines in the audit stream (the chain would flag
//! them, but the stream would no longer verify).

use std::io::{self, Write};

use super::sink::{Sink, write_lines};

pub const FRAME_PREFIX: &str = "@@audit ";

/// The console line for one audit line (without the newline).
pub fn frame(line: &str) -> String {
    format!("{FRAME_PREFIX}{line}")
}

/// The audit lines in a console capture, in order, with the frame taken off. Only lines
/// that start with the frame count; a `\r` before the newline (serial terminals) is
/// dropped.
pub fn extract(console_text: &str) -> Vec<&str> {
    console_text
        .split('\n')
        .filter_map(|l| l.strip_suffix('\r').unwrap_or(l).strip_prefix(FRAME_PREFIX))
        .collect()
}

/// Framed lines to a console. Writes stay at or under 4 KiB: the Hermit kernel writes
/// the console byte by byte with interrupts off for the whole call, so a large write
/// stalls the machine (a 64 KiB write blocks interrupts for ~120 ms under QEMU).
pub struct ConsoleSink<W> {
    out: W,
    buf: Vec<u8>,
}

impl ConsoleSink<io::Stdout> {
    /// The image's console. Going through std's stdout keeps audit lines whole between
    /// the image's other prints, which take the same lock.
    pub fn stdout() -> Self {
        Self::new(io::stdout())
    }
}

impl<W: Write + Send> ConsoleSink<W> {
    pub const MAX_WRITE: usize = 4 << 10;

    pub fn new(out: W) -> Self {
        ConsoleSink { out, buf: Vec::new() }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Sink for ConsoleSink<W> {
    fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
        write_lines(&mut self.out, &mut self.buf, lines, FRAME_PREFIX, Self::MAX_WRITE)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::chain::Chain;
    use super::super::record::IoEvent;
    use super::super::verify::verify;
    use super::*;

    #[test]
    fn audit_lines_separate_from_kernel_log_lines() {
        let mut chain = Chain::new();
        // The genesis record comes with the first.
        let lines = [
            chain.append(IoEvent::ok("c", "p", "astrid:io/poll.poll", 3)).unwrap(),
            chain.append(IoEvent::ok("c", "p", "astrid:io/poll.poll", 4)).unwrap(),
            chain.close().unwrap(),
        ]
        .concat();
        assert_eq!(lines.len(), 4);
        let mut sink = ConsoleSink::new(Vec::new());
        sink.write_batch(&lines[..3]).unwrap();
        let mut console = sink.into_inner();
        // The kernel and the image talk in between; a serial capture may add `\r`.
        console.extend_from_slice(b"[0][INFO] hermit kernel says hi\r\n");
        console.extend_from_slice(b"astrid: capsule hello exited 0\n");
        console.extend_from_slice(b"text mentioning @@audit mid-line\n");
        let mut sink = ConsoleSink::new(console);
        sink.write_batch(&lines[3..]).unwrap();
        let mut console = String::from_utf8(sink.into_inner()).unwrap();
        console = console.replacen("\n", "\r\n", 1);
        let extracted = extract(&console);
        assert_eq!(extracted, lines.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(verify(extracted).is_ok());
        assert_eq!(frame("{}"), "@@audit {}");
    }

    #[test]
    fn console_writes_stay_small() {
        #[derive(Default)]
        struct Sizes(Vec<usize>);
        impl Write for Sizes {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.push(b.len());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let lines: Vec<String> = (0..200).map(|i| format!("{{\"n\":{i:0>150}}}")).collect();
        let mut sink = ConsoleSink::new(Sizes::default());
        sink.write_batch(&lines).unwrap();
        let sizes = sink.into_inner().0;
        assert!(sizes.len() > 1);
        assert!(sizes.iter().all(|&s| s <= 4096), "{sizes:?}");
    }
}
