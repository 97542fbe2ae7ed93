//! Where sealed lines go. One trait; each transport is one type (`LinesSink` for files
//! and sockets, `ConsoleSink` in `console.rs` for the serial console, `MemorySink` for
//! tests and in-process consumers).

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};

/// A destination for audit lines. The queue calls it from one thread, in log order.
pub trait Sink: Send {
    /// Writes `lines` in order, each one record without its newline. Either all of them
    /// are handed on, or the error says the sink is broken: the queue does not retry
    /// (it cannot know how much got through) and fails closed.
    fn write_batch(&mut self, lines: &[String]) -> io::Result<()>;

    /// Pushes out whatever the sink still holds. The queue calls it after every batch,
    /// so a record that `drain` reported written has left the image's buffers.
    fn flush(&mut self) -> io::Result<()>;
}

/// Writes `prefix` + line + `\n` for each line, grouping whole lines into writes of at
/// most `max_write` bytes (a longer line goes alone), so no write splits a line.
pub(crate) fn write_lines(
    out: &mut impl Write,
    buf: &mut Vec<u8>,
    lines: &[String],
    prefix: &str,
    max_write: usize,
) -> io::Result<()> {
    buf.clear();
    for line in lines {
        let len = prefix.len() + line.len() + 1;
        if !buf.is_empty() && buf.len() + len > max_write {
            out.write_all(buf)?;
            buf.clear();
        }
        buf.extend_from_slice(prefix.as_bytes());
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
    if !buf.is_empty() {
        out.write_all(buf)?;
        buf.clear();
    }
    Ok(())
}

/// Plain JSON lines, for a file (virtio-fs, uhyve's file mapping) or a TCP collector.
/// Writes up to 64 KiB at a time: the Hermit kernel caps one FUSE write there, and
/// batches that size are what make virtio-fs fast.
pub struct LinesSink<W> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write + Send> LinesSink<W> {
    pub const MAX_WRITE: usize = 64 << 10;

    pub fn new(out: W) -> Self {
        LinesSink { out, buf: Vec::new() }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Sink for LinesSink<W> {
    fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
        write_lines(&mut self.out, &mut self.buf, lines, "", Self::MAX_WRITE)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Keeps lines in memory; clones share them, so a test (or an in-process reader) keeps
/// one clone and hands the other to the queue.
#[derive(Clone, Default)]
pub struct MemorySink {
    lines: Arc<Mutex<Vec<String>>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn lines(&self) -> MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Sink for MemorySink {
    fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
        self.lines().extend_from_slice(lines);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every write call, to check how lines are grouped.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_grouped_without_splitting_any() {
        let lines: Vec<String> = (0..10).map(|i| format!("{i}").repeat(30)).collect();
        let mut out = Writes::default();
        let mut buf = Vec::new();
        write_lines(&mut out, &mut buf, &lines, "> ", 100).unwrap();
        // 33 bytes per framed line: three fit in 100.
        assert_eq!(out.0.iter().map(Vec::len).collect::<Vec<_>>(), vec![99, 99, 99, 33]);
        let all: Vec<u8> = out.0.concat();
        let expected: String = lines.iter().map(|l| format!("> {l}\n")).collect();
        assert_eq!(String::from_utf8(all).unwrap(), expected);
        // A line longer than the limit goes alone, whole.
        let mut out = Writes::default();
        let long = vec!["x".repeat(250), "y".into()];
        write_lines(&mut out, &mut buf, &long, "", 100).unwrap();
        assert_eq!(out.0.iter().map(Vec::len).collect::<Vec<_>>(), vec![251, 2]);
    }

    #[test]
    fn lines_sink_writes_plain_lines() {
        let mut sink = LinesSink::new(Vec::new());
        sink.write_batch(&["{\"a\":1}".into(), "{\"b\":2}".into()]).unwrap();
        sink.flush().unwrap();
        assert_eq!(sink.into_inner(), b"{\"a\":1}\n{\"b\":2}\n");
    }
}

/// Every batch to several sinks, in order (the serial console and the virtio file).
/// One sink failing does not silence the others: it is set aside with its error, the
/// call that broke it answers that error (so the log fails closed), and later batches
/// still reach the survivors, so the last records, and the one naming the failure,
/// land somewhere. With no survivor left every call fails.
pub struct TeeSink {
    sinks: Vec<Teed>,
}

struct Teed {
    name: String,
    sink: Box<dyn Sink>,
    failed: bool,
}

impl TeeSink {
    /// Sinks with the names failures are reported under (`serial console`, `file …`).
    pub fn new(sinks: Vec<(String, Box<dyn Sink>)>) -> Self {
        TeeSink { sinks: sinks.into_iter().map(|(name, sink)| Teed { name, sink, failed: false }).collect() }
    }

    fn each(&mut self, mut op: impl FnMut(&mut dyn Sink) -> io::Result<()>) -> io::Result<()> {
        let mut broke = Vec::new();
        for t in self.sinks.iter_mut().filter(|t| !t.failed) {
            if let Err(e) = op(&mut *t.sink) {
                t.failed = true;
                broke.push(format!("{}: {e}", t.name));
            }
        }
        if !broke.is_empty() {
            return Err(io::Error::other(broke.join("; ")));
        }
        if self.sinks.iter().all(|t| t.failed) {
            return Err(io::Error::other("no audit sink is left"));
        }
        Ok(())
    }
}

impl Sink for TeeSink {
    fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
        self.each(|s| s.write_batch(lines))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.each(|s| s.flush())
    }
}

/// A sink that takes `ok_batches` batches, then fails every call: the queue's and the
/// tee's fault-injection tests share it.
#[cfg(test)]
pub(crate) struct BreakingSink {
    pub inner: MemorySink,
    pub ok_batches: usize,
}

#[cfg(test)]
impl Sink for BreakingSink {
    fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
        if self.ok_batches == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        self.ok_batches -= 1;
        self.inner.write_batch(lines)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tee_tests {
    use super::*;

    #[test]
    fn one_sink_failing_does_not_silence_the_other() {
        let (serial, file) = (MemorySink::new(), MemorySink::new());
        let mut tee = TeeSink::new(vec![
            ("serial console".into(), Box::new(serial.clone())),
            ("file audit.log".into(), Box::new(BreakingSink { inner: file.clone(), ok_batches: 1 })),
        ]);
        tee.write_batch(&["1".to_string()]).unwrap();
        let e = tee.write_batch(&["2".to_string()]).unwrap_err();
        assert_eq!(e.to_string(), "file audit.log: disk on fire", "the failure names the sink");
        tee.write_batch(&["3".to_string()]).expect("the survivor still takes batches");
        assert_eq!(*serial.lines(), vec!["1", "2", "3"]);
        assert_eq!(*file.lines(), vec!["1"]);
        let mut lone = TeeSink::new(vec![("file".into(), Box::new(BreakingSink { inner: MemorySink::new(), ok_batches: 0 }))]);
        assert!(lone.write_batch(&["1".to_string()]).is_err());
        assert!(lone.write_batch(&["2".to_string()]).is_err(), "no survivor: every call fails");
    }

    #[test]
    fn a_tee_hands_every_batch_to_every_sink_in_order() {
        let (a, b) = (MemorySink::new(), MemorySink::new());
        let mut tee = TeeSink::new(vec![("a".into(), Box::new(a.clone())), ("b".into(), Box::new(b.clone()))]);
        tee.write_batch(&["1".to_string(), "2".to_string()]).unwrap();
        tee.write_batch(&["3".to_string()]).unwrap();
        tee.flush().unwrap();
        assert_eq!(*a.lines(), vec!["1", "2", "3"]);
        assert_eq!(*b.lines(), vec!["1", "2", "3"]);
    }
}

impl Sink for Box<dyn Sink> {
    fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
        (**self).write_batch(lines)
    }

    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}
