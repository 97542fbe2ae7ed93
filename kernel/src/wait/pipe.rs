//! A bounded in-memory byte pipe: the first producer-consumer source, and the shape later
//! capsule-to-capsule streams take. Each half is a readiness source: the reader is
//! ready when it has bytes or has reached end of file, the writer when it has room or
//! its reader is gone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::event::Notifier;
use super::{CancelToken, Readiness, WaitError, wait_one};

/// The other half is gone: for a reader, end of file (after the buffered bytes); for a
/// writer, nobody will ever read what it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

/// Why a blocking pipe operation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeError {
    Closed,
    Cancelled,
    TimedOut,
}

impl From<Closed> for PipeError {
    fn from(_: Closed) -> Self {
        PipeError::Closed
    }
}

impl From<WaitError> for PipeError {
    fn from(e: WaitError) -> Self {
        match e {
            WaitError::Cancelled => PipeError::Cancelled,
            WaitError::TimedOut => PipeError::TimedOut,
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Bumped when bytes arrive or the writer goes away.
    readable: Notifier,
    /// Bumped when room frees up or the reader goes away.
    writable: Notifier,
}

struct State {
    buf: VecDeque<u8>,
    capacity: usize,
    reader_open: bool,
    writer_open: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the byte queue consistent (every
        // mutation is a single VecDeque call), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A pipe holding at most `capacity` bytes in flight.
///
/// # Panics
/// If `capacity` is zero: such a pipe could never move a byte.
pub fn byte_pipe(capacity: usize) -> (PipeWriter, PipeReader) {
    assert!(capacity > 0, "a pipe needs room for at least one byte");
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buf: VecDeque::new(),
            capacity,
            reader_open: true,
            writer_open: true,
        }),
        readable: Notifier::new(),
        writable: Notifier::new(),
    });
    (PipeWriter { shared: Arc::clone(&shared) }, PipeReader { shared })
}

pub struct PipeReader {
    shared: Arc<Shared>,
}

pub struct PipeWriter {
    shared: Arc<Shared>,
}

impl PipeReader {
    /// Takes up to `max` buffered bytes without waiting. An empty result means "nothing
    /// yet", never end of file: end of file is `Err(Closed)`, once the writer is gone
    /// and every byte it wrote has been read.
    pub fn read(&self, max: usize) -> Result<Vec<u8>, Closed> {
        let bytes = {
            let mut state = self.shared.lock();
            if state.buf.is_empty() {
                return if state.writer_open { Ok(Vec::new()) } else { Err(Closed) };
            }
            let n = max.min(state.buf.len());
            let mut out = Vec::with_capacity(n);
            take_front(&mut state.buf, n, |part| out.extend_from_slice(part));
            out
        };
        if !bytes.is_empty() {
            self.shared.writable.notify();
        }
        Ok(bytes)
    }

    /// Takes up to `buf.len()` buffered bytes into `buf` without waiting and says how
    /// many; like `read` otherwise (0: nothing yet, `Err(Closed)`: end of file).
    pub fn read_into(&self, buf: &mut [u8]) -> Result<usize, Closed> {
        let n = {
            let mut state = self.shared.lock();
            if state.buf.is_empty() {
                return if state.writer_open { Ok(0) } else { Err(Closed) };
            }
            let n = buf.len().min(state.buf.len());
            let mut at = 0;
            take_front(&mut state.buf, n, |part| {
                buf[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            });
            n
        };
        if n > 0 {
            self.shared.writable.notify();
        }
        Ok(n)
    }

    /// Moves up to `max` buffered bytes straight into `dst`'s buffer (one copy, no
    /// buffer in between), as many as `dst` has room for, without waiting. `Ok(0)`:
    /// nothing buffered yet or no room. Both pipes are locked together, in address
    /// order, so two splices in opposite directions cannot deadlock. Not for a pipe
    /// into itself (`same_pipe`).
    pub fn transfer_to(&self, dst: &PipeWriter, max: usize) -> Result<usize, TransferClosed> {
        debug_assert!(!self.same_pipe(dst), "a pipe spliced into itself takes the buffered path");
        let n = {
            let src_first = Arc::as_ptr(&self.shared) < Arc::as_ptr(&dst.shared);
            let (mut src, mut out) = if src_first {
                let src = self.shared.lock();
                (src, dst.shared.lock())
            } else {
                let out = dst.shared.lock();
                (self.shared.lock(), out)
            };
            if !out.reader_open {
                return Err(TransferClosed::Sink);
            }
            if src.buf.is_empty() {
                return if src.writer_open { Ok(0) } else { Err(TransferClosed::Source) };
            }
            let n = max.min(src.buf.len()).min(out.capacity - out.buf.len());
            take_front(&mut src.buf, n, |part| out.buf.extend(part));
            n
        };
        if n > 0 {
            self.shared.writable.notify();
            dst.shared.readable.notify();
        }
        Ok(n)
    }

    /// Whether `writer` writes into this very pipe.
    pub fn same_pipe(&self, writer: &PipeWriter) -> bool {
        Arc::ptr_eq(&self.shared, &writer.shared)
    }

    /// Waits until at least one byte (up to `max`) or end of file is there.
    pub fn read_blocking(
        &self,
        max: usize,
        cancel: &CancelToken,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, PipeError> {
        loop {
            let bytes = self.read(max)?;
            if !bytes.is_empty() || max == 0 {
                return Ok(bytes);
            }
            wait_one(self, cancel, deadline)?;
        }
    }

    /// Bytes buffered now.
    pub fn buffered(&self) -> usize {
        self.shared.lock().buf.len()
    }

    /// Copies up to `max` buffered bytes without taking them; like `read` otherwise.
    pub fn peek(&self, max: usize) -> Result<Vec<u8>, Closed> {
        let state = self.shared.lock();
        if state.buf.is_empty() {
            return if state.writer_open { Ok(Vec::new()) } else { Err(Closed) };
        }
        Ok(state.buf.iter().take(max).copied().collect())
    }

    /// Stops reading for good (what dropping the reader does, for a reader that is
    /// shared): buffered bytes are discarded and the writer sees `Closed`. Idempotent.
    pub fn close(&self) {
        {
            let mut state = self.shared.lock();
            state.reader_open = false;
            // Nobody can read these any more; free them now rather than with the writer.
            state.buf = VecDeque::new();
        }
        self.shared.writable.notify();
    }

    /// Whether the writer is still there (bytes may still come).
    pub fn writer_open(&self) -> bool {
        self.shared.lock().writer_open
    }
}

impl PipeWriter {
    /// Ends the stream (what dropping the writer does, for a writer that is shared): the
    /// reader gets the buffered bytes, then end of file. Idempotent.
    pub fn close(&self) {
        self.shared.lock().writer_open = false;
        self.shared.readable.notify();
    }

    /// Whether the reader is still there (writing still means something).
    pub fn reader_open(&self) -> bool {
        self.shared.lock().reader_open
    }

    /// How many bytes a `write` would accept now (0: full).
    pub fn writable(&self) -> Result<usize, Closed> {
        let state = self.shared.lock();
        if !state.reader_open {
            return Err(Closed);
        }
        Ok(state.capacity - state.buf.len())
    }

    /// Buffers as much of `bytes` as fits, without waiting, and says how much that was
    /// (0 when full). Backpressure is the caller's: wait on the writer and try again.
    pub fn write(&self, bytes: &[u8]) -> Result<usize, Closed> {
        let n = {
            let mut state = self.shared.lock();
            if !state.reader_open {
                return Err(Closed);
            }
            let n = bytes.len().min(state.capacity - state.buf.len());
            state.buf.extend(&bytes[..n]);
            n
        };
        if n > 0 {
            self.shared.readable.notify();
        }
        Ok(n)
    }

    /// Writes every byte of `bytes`, waiting for room as often as it takes. On an error
    /// the bytes before it are already in the pipe.
    pub fn write_all_blocking(
        &self,
        mut bytes: &[u8],
        cancel: &CancelToken,
        deadline: Option<Instant>,
    ) -> Result<(), PipeError> {
        while !bytes.is_empty() {
            let n = self.write(bytes)?;
            bytes = &bytes[n..];
            if n == 0 {
                wait_one(self, cancel, deadline)?;
            }
        }
        Ok(())
    }
}

/// Which end of a `transfer_to` is closed: the source reached end of file, or the
/// sink's reader is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferClosed {
    Source,
    Sink,
}

/// Removes the first `n` bytes of `buf`, handing them to `put` as at most two slices
/// (a ring buffer's two halves): whole-slice copies rather than a byte at a time.
fn take_front(buf: &mut VecDeque<u8>, n: usize, mut put: impl FnMut(&[u8])) {
    let (a, b) = buf.as_slices();
    let from_a = n.min(a.len());
    put(&a[..from_a]);
    if n > from_a {
        put(&b[..n - from_a]);
    }
    buf.drain(..n);
}

impl Readiness for PipeReader {
    fn is_ready(&self) -> bool {
        let state = self.shared.lock();
        !state.buf.is_empty() || !state.writer_open
    }

    fn notifier(&self) -> Option<&Notifier> {
        Some(&self.shared.readable)
    }
}

impl Readiness for PipeWriter {
    fn is_ready(&self) -> bool {
        let state = self.shared.lock();
        state.buf.len() < state.capacity || !state.reader_open
    }

    fn notifier(&self) -> Option<&Notifier> {
        Some(&self.shared.writable)
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.close();
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::Duration;

    use super::*;

    fn soon(secs: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(secs))
    }

    #[test]
    fn full_pipe_refuses_then_accepts_after_a_read() {
        let (w, r) = byte_pipe(4);
        assert_eq!(w.write(b"abcdef"), Ok(4));
        assert_eq!(w.writable(), Ok(0));
        assert!(!w.is_ready());
        assert_eq!(w.write(b"ef"), Ok(0));
        assert!(r.is_ready());
        assert_eq!(r.read(3), Ok(b"abc".to_vec()));
        assert!(w.is_ready());
        assert_eq!(w.write(b"ef"), Ok(2));
        assert_eq!(r.read(100), Ok(b"def".to_vec()));
        assert_eq!(r.read(100), Ok(Vec::new()), "empty is 'nothing yet', not EOF");
        assert!(!r.is_ready());
    }

    #[test]
    fn reader_sees_remaining_bytes_then_eof_after_writer_drop() {
        let (w, r) = byte_pipe(8);
        w.write(b"tail").unwrap();
        drop(w);
        assert!(r.is_ready());
        assert_eq!(r.read(2), Ok(b"ta".to_vec()));
        assert_eq!(r.read(8), Ok(b"il".to_vec()));
        assert_eq!(r.read(8), Err(Closed));
        assert!(r.is_ready(), "EOF is a ready state: a wait must not hang on it");
    }

    #[test]
    fn writer_sees_closed_after_reader_drop() {
        let (w, r) = byte_pipe(2);
        w.write(b"xy").unwrap();
        assert!(!w.is_ready());
        drop(r);
        assert!(w.is_ready());
        assert_eq!(w.writable(), Err(Closed));
        assert_eq!(w.write(b"z"), Err(Closed));
    }

    #[test]
    fn blocking_read_is_woken_by_writer_and_by_eof() {
        let (w, r) = byte_pipe(8);
        let cancel = CancelToken::new();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            w.write(b"hi").unwrap();
            thread::sleep(Duration::from_millis(20));
            drop(w);
        });
        assert_eq!(r.read_blocking(8, &cancel, soon(10)), Ok(b"hi".to_vec()));
        assert_eq!(r.read_blocking(8, &cancel, soon(10)), Err(PipeError::Closed));
        t.join().unwrap();
    }

    #[test]
    fn blocking_write_is_woken_by_reader_drop() {
        let (w, r) = byte_pipe(1);
        let cancel = CancelToken::new();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            drop(r);
        });
        let start = Instant::now();
        assert_eq!(w.write_all_blocking(b"abc", &cancel, soon(10)), Err(PipeError::Closed));
        assert!(start.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }

    #[test]
    fn blocking_read_is_cancelled_and_times_out() {
        let (_w, r) = byte_pipe(8);
        let cancel = CancelToken::new();
        let short = Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(r.read_blocking(8, &cancel, short), Err(PipeError::TimedOut));
        let c = cancel.clone();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            c.cancel();
        });
        let start = Instant::now();
        assert_eq!(r.read_blocking(8, &cancel, soon(30)), Err(PipeError::Cancelled));
        assert!(start.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }

    /// Bytes move pipe to pipe in order, across the ring buffer's wrap, limited by the
    /// request, by what is buffered and by the destination's room; each closed side is
    /// told apart.
    #[test]
    fn transfer_moves_bytes_in_order_and_names_the_closed_side() {
        let (w1, r1) = byte_pipe(8);
        let (w2, r2) = byte_pipe(5);
        // Wrap the source's ring: write 6, read 4, write 6 more (8 buffered, split).
        w1.write(b"abcdef").unwrap();
        assert_eq!(r1.read(4), Ok(b"abcd".to_vec()));
        assert_eq!(w1.write(b"ghijkl"), Ok(6));
        assert_eq!(r1.transfer_to(&w2, 3), Ok(3), "limited by the request");
        assert_eq!(r1.transfer_to(&w2, 100), Ok(2), "limited by the destination's room");
        assert_eq!(r1.transfer_to(&w2, 100), Ok(0), "destination full");
        assert_eq!(r2.read(100), Ok(b"efghi".to_vec()));
        assert_eq!(r1.transfer_to(&w2, 100), Ok(3), "limited by what is buffered");
        assert_eq!(r2.read(100), Ok(b"jkl".to_vec()));
        assert_eq!(r1.transfer_to(&w2, 100), Ok(0), "nothing buffered yet");
        let mut buf = [0u8; 4];
        w1.write(b"xyz").unwrap();
        assert_eq!(r1.read_into(&mut buf), Ok(3));
        assert_eq!(&buf[..3], b"xyz");
        drop(w1);
        assert_eq!(r1.transfer_to(&w2, 100), Err(TransferClosed::Source));
        assert_eq!(r1.read_into(&mut buf), Err(Closed));
        let (w3, r3) = byte_pipe(4);
        w3.write(b"q").unwrap();
        drop(r2);
        assert_eq!(r3.transfer_to(&w2, 100), Err(TransferClosed::Sink));
        assert!(!r3.same_pipe(&w2) && r3.same_pipe(&w3));
    }

    /// Two threads splice in opposite directions between the same two pipes, each
    /// locking both: no deadlock, and every byte arrives.
    #[test]
    fn opposite_transfers_do_not_deadlock() {
        let (wa, ra) = byte_pipe(64);
        let (wb, rb) = byte_pipe(64);
        let (wa, ra, wb, rb) = (Arc::new(wa), Arc::new(ra), Arc::new(wb), Arc::new(rb));
        wa.write(&[1; 64]).unwrap();
        let spinner = |from: Arc<PipeReader>, to: Arc<PipeWriter>| {
            thread::spawn(move || {
                for _ in 0..20_000 {
                    let _ = from.transfer_to(&to, 7);
                }
            })
        };
        let t1 = spinner(Arc::clone(&ra), Arc::clone(&wb));
        let t2 = spinner(Arc::clone(&rb), Arc::clone(&wa));
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(ra.buffered() + rb.buffered(), 64, "bytes were lost or made up");
    }

    /// A fast writer against a slow reader through a 16-byte pipe: the writer is held
    /// back (never more than the capacity in flight) and every byte arrives, in order.
    #[test]
    fn backpressure_holds_the_writer_and_loses_nothing() {
        const TOTAL: usize = 20_000;
        const CAP: usize = 16;
        let (w, r) = byte_pipe(CAP);
        let cancel = CancelToken::new();
        let data: Vec<u8> = (0..TOTAL).map(|i| (i * 7 % 251) as u8).collect();
        let expected = data.clone();
        let writer_cancel = cancel.clone();
        let writer = thread::spawn(move || w.write_all_blocking(&data, &writer_cancel, soon(60)));
        let mut got = Vec::with_capacity(TOTAL);
        let mut reads = 0;
        loop {
            assert!(r.buffered() <= CAP);
            match r.read_blocking(5, &cancel, soon(60)) {
                Ok(bytes) => {
                    assert!(bytes.len() <= 5);
                    got.extend(bytes);
                }
                Err(PipeError::Closed) => break,
                Err(e) => panic!("reader stopped: {e:?}"),
            }
            reads += 1;
            if reads % 500 == 0 {
                // Be slow now and then so the writer really fills the pipe and waits.
                thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(writer.join().unwrap(), Ok(()));
        assert_eq!(got.len(), TOTAL);
        assert!(got == expected, "bytes arrived out of order");
    }
}
