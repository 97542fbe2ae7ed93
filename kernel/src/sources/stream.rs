//! The streams a capsule holds over byte sources and sinks, with the io contract's
//! promises kept: reads take at most `READ_CEILING` per call, a write beyond the last
//! `check-write` permit is refused, blocking writes of any size are segmented (and end
//! on cancellation between segments), a stream is closed for good after a failure, and
//! every blocking step waits on the wait primitive racing the capsule's cancellation.
//! Nothing here knows WIT: the host file turns `Ended` into the WIT's values.

use std::sync::Arc;

use super::{ByteSink, ByteSource, StreamFailure};
use crate::quota::Held;
use crate::wait::{self, CancelToken, Readiness};

/// Most bytes one `read`, `skip` or `splice` moves.
pub const READ_CEILING: usize = 1 << 20;
/// Segment of the blocking zero writes: one static buffer, never allocated per call.
const ZEROES_CHUNK: usize = 64 << 10;
static ZEROES: [u8; ZEROES_CHUNK] = [0; ZEROES_CHUNK];

/// `astrid:io/error.error`: what went wrong with a stream's last operation.
pub struct IoError {
    pub message: String,
}

/// `astrid:io/streams.input-stream`.
pub struct InputStream {
    pub source: Arc<dyn ByteSource>,
    pub closed: bool,
    /// What its owner is charged for the resource behind it (a connection), kept
    /// until this handle is dropped too.
    pub hold: Option<Held>,
}

/// `astrid:io/streams.output-stream`.
pub struct OutputStream {
    pub sink: Arc<dyn ByteSink>,
    /// What the last `check-write` allowed and no write has used up yet.
    pub permit: usize,
    pub closed: bool,
    /// See `InputStream::hold`.
    pub hold: Option<Held>,
}

impl InputStream {
    pub fn new(source: Arc<dyn ByteSource>) -> Self {
        InputStream { source, closed: false, hold: None }
    }

    /// Keeps `hold` (its owner's charge for the resource behind it) while it lives.
    pub fn holding(mut self, hold: Option<Held>) -> Self {
        self.hold = hold;
        self
    }
}

impl OutputStream {
    pub fn new(sink: Arc<dyn ByteSink>) -> Self {
        OutputStream { sink, permit: 0, closed: false, hold: None }
    }

    /// Keeps `hold` (its owner's charge for the resource behind it) while it lives.
    pub fn holding(mut self, hold: Option<Held>) -> Self {
        self.hold = hold;
        self
    }

    /// `check-write`: asks the sink and remembers the permit.
    pub fn check_write(&mut self) -> Ended<u64> {
        if self.closed {
            return Ended::Closed;
        }
        match self.sink.check_write() {
            Ok(permit) => {
                self.permit = permit;
                Ended::Done(permit as u64)
            }
            Err(f) => f.into(),
        }
    }

    /// `write` / `write-zeroes`: within the permit, or `PermitExceeded` (a trap).
    pub fn write(&mut self, bytes: &[u8]) -> Result<Ended<()>, PermitExceeded> {
        if self.closed {
            return Ok(Ended::Closed);
        }
        if bytes.len() > self.permit {
            return Err(PermitExceeded { len: bytes.len(), permit: self.permit });
        }
        self.permit -= bytes.len();
        Ok(match self.sink.write(bytes) {
            Ok(()) => Ended::Done(()),
            Err(f) => f.into(),
        })
    }

    /// `flush`: our sinks complete a flush before returning, so blocking or not is one.
    pub fn flush(&self) -> Ended<()> {
        if self.closed {
            return Ended::Closed;
        }
        match self.sink.flush() {
            Ok(()) => Ended::Done(()),
            Err(f) => f.into(),
        }
    }

    pub fn close(&mut self) {
        self.closed = true;
        self.permit = 0;
    }
}

/// A write past the `check-write` permit: the contract makes it a trap.
#[derive(Debug)]
pub struct PermitExceeded {
    pub len: usize,
    pub permit: usize,
}

impl std::fmt::Display for PermitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "write of {} bytes exceeds the check-write permit of {} bytes", self.len, self.permit)
    }
}

impl std::error::Error for PermitExceeded {}

/// How one stream operation ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended<T> {
    Done(T),
    /// The other end is gone, or the stream was closed before.
    Closed,
    /// The capsule's cancellation ended the wait.
    Cancelled,
    /// The operation failed; the stream is closed for good afterwards.
    Failed(String),
}

impl<T> Ended<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Ended<U> {
        match self {
            Ended::Done(v) => Ended::Done(f(v)),
            Ended::Closed => Ended::Closed,
            Ended::Cancelled => Ended::Cancelled,
            Ended::Failed(m) => Ended::Failed(m),
        }
    }
}

impl<T> From<StreamFailure> for Ended<T> {
    fn from(f: StreamFailure) -> Self {
        match f {
            StreamFailure::Closed => Ended::Closed,
            StreamFailure::Failed(m) => Ended::Failed(m),
        }
    }
}

/// Waits for `source`; `false` when the capsule was cancelled.
fn wait_for(source: &dyn Readiness, cancel: &CancelToken) -> bool {
    wait::wait_one(source, cancel, None).is_ok()
}

/// `read` / `blocking-read`: up to `len` bytes (at most `READ_CEILING`); blocking waits
/// until at least one byte, the end, or cancellation.
pub fn read(stream: &InputStream, len: usize, blocking: bool, cancel: &CancelToken) -> Ended<Vec<u8>> {
    if stream.closed {
        return Ended::Closed;
    }
    let len = len.min(READ_CEILING);
    loop {
        match stream.source.read(len) {
            Ok(bytes) if bytes.is_empty() && blocking && len > 0 => {
                if !wait_for(&*stream.source, cancel) {
                    return Ended::Cancelled;
                }
            }
            Ok(bytes) => return Ended::Done(bytes),
            Err(f) => return f.into(),
        }
    }
}

/// What a blocking write sends.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    Bytes(&'a [u8]),
    Zeroes(u64),
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::Zeroes(n) => *n,
        }
    }

    /// Up to `max` bytes from `offset`.
    fn chunk(&self, offset: u64, max: usize) -> &[u8] {
        match self {
            Payload::Bytes(b) => {
                let at = offset as usize;
                &b[at..at + max.min(b.len() - at)]
            }
            Payload::Zeroes(n) => &ZEROES[..max.min(ZEROES_CHUNK).min((n - offset).try_into().unwrap_or(usize::MAX))],
        }
    }
}

/// `blocking-write-and-flush` / `blocking-write-zeroes-and-flush`: the whole payload,
/// as permits allow, then a flush. Cancellation ends it in a wait, and between segments
/// once one went out, so a huge length cannot outlive the capsule's deadline while a
/// cancelled capsule's short last words (one segment) still reach their sink.
pub fn write_all(stream: &mut OutputStream, payload: Payload<'_>, cancel: &CancelToken) -> Ended<u64> {
    if stream.closed {
        return Ended::Closed;
    }
    stream.permit = 0;
    let sink = &*stream.sink;
    let total = payload.len();
    let mut written = 0u64;
    while written < total {
        if written > 0 && cancel.is_cancelled() {
            return Ended::Cancelled;
        }
        let permit = match sink.check_write() {
            Ok(p) => p,
            Err(f) => return f.into(),
        };
        if permit == 0 {
            if !wait_for(sink, cancel) {
                return Ended::Cancelled;
            }
            continue;
        }
        let chunk = payload.chunk(written, permit);
        if let Err(f) = sink.write(chunk) {
            return f.into();
        }
        written += chunk.len() as u64;
    }
    match sink.flush() {
        Ok(()) => Ended::Done(written),
        Err(f) => f.into(),
    }
}

/// Which end of a splice failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Sink,
}

/// `splice` / `blocking-splice`: moves up to `len` bytes (at most `READ_CEILING`) from
/// `src` to `dst`, as much as the sink takes now.
pub fn splice(dst: &mut OutputStream, src: &InputStream, len: usize, blocking: bool, cancel: &CancelToken) -> (Ended<u64>, Side) {
    if dst.closed {
        return (Ended::Closed, Side::Sink);
    }
    if src.closed {
        return (Ended::Closed, Side::Source);
    }
    dst.permit = 0;
    let len = len.min(READ_CEILING);
    let (source, sink) = (&*src.source, &*dst.sink);
    loop {
        if blocking && !source.is_ready() && !wait_for(source, cancel) {
            return (Ended::Cancelled, Side::Source);
        }
        let permit = match sink.check_write() {
            Ok(p) => p,
            Err(f) => return (f.into(), Side::Sink),
        };
        if permit == 0 {
            if !blocking {
                return (Ended::Done(0), Side::Sink);
            }
            if !wait_for(sink, cancel) {
                return (Ended::Cancelled, Side::Sink);
            }
            continue;
        }
        let moved = match move_bytes(source, sink, permit.min(len)) {
            Ok(n) => n,
            Err(ended) => return ended,
        };
        if moved == 0 && blocking && len > 0 {
            continue;
        }
        return (Ended::Done(moved as u64), Side::Sink);
    }
}

thread_local! {
    /// The buffer a thread's splices move bytes through, reused from call to call (it
    /// grows to the largest chunk spliced, at most `READ_CEILING`).
    static SPLICE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Moves up to `max` bytes that `source` has now into `sink` (which has room for
/// them): pipe to pipe directly, otherwise through the thread's splice buffer. Never
/// allocates per call.
fn move_bytes(source: &dyn ByteSource, sink: &dyn ByteSink, max: usize) -> Result<usize, (Ended<u64>, Side)> {
    if let (Some(from), Some(to)) = (source.as_pipe(), sink.as_pipe())
        && !from.same_pipe(to)
    {
        return from.transfer_to(to, max).map_err(|closed| match closed {
            wait::TransferClosed::Source => (Ended::Closed, Side::Source),
            wait::TransferClosed::Sink => (Ended::Closed, Side::Sink),
        });
    }
    SPLICE_BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if buffer.len() < max {
            buffer.resize(max, 0);
        }
        let n = source.read_into(&mut buffer[..max]).map_err(|f| (f.into(), Side::Source))?;
        if n > 0 {
            sink.write(&buffer[..n]).map_err(|f| (f.into(), Side::Sink))?;
        }
        Ok(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{NullSink, pipe};

    #[test]
    fn a_write_past_the_permit_is_refused_and_within_it_goes_through() {
        let (w, _r) = pipe(16);
        let mut out = OutputStream::new(w);
        assert!(out.write(b"x").is_err(), "no permit yet");
        assert_eq!(out.check_write(), Ended::Done(16));
        assert_eq!(out.write(b"0123456789").unwrap(), Ended::Done(()));
        assert!(out.write(b"0123456789").is_err(), "6 left of the permit");
    }

    #[test]
    fn huge_zero_writes_end_on_cancellation() {
        let mut out = OutputStream::new(Arc::new(NullSink::default()));
        let cancel = CancelToken::new();
        cancel.cancel();
        assert_eq!(write_all(&mut out, Payload::Zeroes(u64::MAX), &cancel), Ended::Cancelled);
        assert_eq!(write_all(&mut out, Payload::Bytes(b"last words"), &cancel), Ended::Done(10), "one segment still goes out");
        let live = CancelToken::new();
        assert_eq!(write_all(&mut out, Payload::Zeroes(200_000), &live), Ended::Done(200_000));
    }

    /// An always-writable sink that cancels the capsule when its `at`-th segment arrives.
    struct CancellingSink {
        inner: NullSink,
        segments: std::sync::atomic::AtomicU32,
        at: u32,
        cancel: CancelToken,
    }

    impl Readiness for CancellingSink {
        fn is_ready(&self) -> bool {
            true
        }
        fn notifier(&self) -> Option<&crate::wait::Notifier> {
            None
        }
    }

    impl crate::sources::ByteSink for CancellingSink {
        fn check_write(&self) -> Result<usize, crate::sources::StreamFailure> {
            self.inner.check_write()
        }
        fn write(&self, bytes: &[u8]) -> Result<(), crate::sources::StreamFailure> {
            if self.segments.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.at {
                self.cancel.cancel();
            }
            self.inner.write(bytes)
        }
        fn flush(&self) -> Result<(), crate::sources::StreamFailure> {
            Ok(())
        }
    }

    /// The cancel lands in the middle of `blocking-write-zeroes-and-flush` of 2^64 - 1
    /// bytes on a sink that never makes it wait: the write ends right after the segment
    /// during which it landed instead of running on (for ever, in practice).
    #[test]
    fn a_huge_zero_write_ends_when_cancelled_mid_way() {
        let cancel = CancelToken::new();
        let sink = Arc::new(CancellingSink { inner: NullSink::default(), segments: Default::default(), at: 3, cancel: cancel.clone() });
        let mut out = OutputStream::new(sink.clone());
        assert_eq!(write_all(&mut out, Payload::Zeroes(u64::MAX), &cancel), Ended::Cancelled);
        assert_eq!(sink.segments.load(std::sync::atomic::Ordering::SeqCst), 3);
        let segment = sink.inner.check_write().unwrap().min(ZEROES_CHUNK) as u64;
        assert_eq!(sink.inner.taken(), 3 * segment);
    }

    /// Splice pipe to pipe (the direct path), zero source to null sink and a pipe into
    /// itself (the buffered path): bytes arrive whole and in order, the sink's room and
    /// the request bound each call, and end of file is the source's side.
    #[test]
    fn splice_moves_bytes_on_every_path() {
        let cancel = CancelToken::new();
        let (w1, r1) = pipe(1 << 16);
        let (w2, r2) = pipe(1000);
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        assert_eq!(w1.writer().write(&data), Ok(5000));
        let (mut out, input) = (OutputStream::new(w2.clone()), InputStream::new(r1.clone()));
        let mut got = Vec::new();
        while got.len() < data.len() {
            let (ended, _) = splice(&mut out, &input, 700, true, &cancel);
            let Ended::Done(n) = ended else { panic!("splice ended {ended:?}") };
            assert!(n > 0 && n <= 700, "moved {n}");
            got.extend(r2.reader().read(1000).unwrap());
        }
        assert!(got == data, "bytes arrived damaged or out of order");
        drop(w1);
        assert_eq!(splice(&mut out, &input, 700, true, &cancel), (Ended::Closed, Side::Source));

        let zeroes = InputStream::new(Arc::new(crate::sources::ZeroSource::new(200_000)));
        let null = Arc::new(NullSink::default());
        let mut sink = OutputStream::new(null.clone());
        let mut moved = 0;
        while let (Ended::Done(n), _) = splice(&mut sink, &zeroes, 1 << 20, true, &cancel) {
            assert!(n <= 64 << 10, "more than the null sink's permit in one call");
            moved += n;
        }
        assert_eq!((moved, null.taken()), (200_000, 200_000));

        let (w, r) = pipe(16);
        w.writer().write(b"loop").unwrap();
        let (mut same_out, same_in) = (OutputStream::new(w.clone()), InputStream::new(r.clone()));
        assert_eq!(splice(&mut same_out, &same_in, 16, false, &cancel).0, Ended::Done(4));
        assert_eq!(r.reader().read(16), Ok(b"loop".to_vec()));
    }

    #[test]
    fn a_closed_stream_stays_closed() {
        let (w, r) = pipe(4);
        let mut out = OutputStream::new(w);
        out.close();
        assert_eq!(out.check_write(), Ended::Closed);
        let mut input = InputStream::new(r);
        input.closed = true;
        assert_eq!(read(&input, 4, true, &CancelToken::new()), Ended::Closed);
    }
}
