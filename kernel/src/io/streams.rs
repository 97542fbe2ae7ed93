//! `astrid:io/streams` over byte sources and sinks, with the contract's promises kept:
//! reads take at most 1 MiB per call, a write beyond the `check-write` permit traps,
//! blocking writes of any size are segmented, a stream is closed for good after
//! `last-operation-failed`, a stream cannot be dropped while its pollables live, and
//! every blocking call races the capsule's cancellation (a cancelled wait ends the call
//! with `closed`, as the hosted kernel does, and the audit record says `cancelled`).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Resource;

use super::astrid::io::streams::{Host, HostInputStream, HostOutputStream, StreamError};
use super::{Counts, IoError, Pollable, audit};
use crate::engine::state::CapsuleState;
use crate::sources::{ByteSink, ByteSource, StreamFailure};
use crate::wait::{self, Readiness};

/// Most bytes one `read`, `skip` or `splice` moves.
pub const READ_CEILING: usize = 1 << 20;
/// Chunk of the segmented blocking writes.
const ZEROES_CHUNK: usize = 64 << 10;

pub struct InputStream {
    source: Arc<dyn ByteSource>,
    closed: bool,
}

pub struct OutputStream {
    sink: Arc<dyn ByteSink>,
    /// What the last `check-write` allowed and no write has used up yet.
    permit: usize,
    closed: bool,
}

impl InputStream {
    pub fn new(source: Arc<dyn ByteSource>) -> Self {
        InputStream { source, closed: false }
    }
}

impl OutputStream {
    pub fn new(sink: Arc<dyn ByteSink>) -> Self {
        OutputStream { sink, permit: 0, closed: false }
    }
}

/// How one stream call ended, before it is turned into WIT values.
enum Ended<T> {
    Done(T),
    Closed,
    /// The wait was cancelled: `closed` to the capsule, `cancelled` in the audit log.
    Cancelled,
    Failed(String),
}

impl<T> From<StreamFailure> for Ended<T> {
    fn from(f: StreamFailure) -> Self {
        match f {
            StreamFailure::Closed => Ended::Closed,
            StreamFailure::Failed(m) => Ended::Failed(m),
        }
    }
}

fn checked_len(len: u64) -> wasmtime::Result<usize> {
    if len > u64::from(u32::MAX) {
        wasmtime::bail!("stream length {len} is beyond what a wasm32 capsule can address");
    }
    Ok(len as usize)
}

/// Waits for `source`; `false` when the capsule was cancelled.
fn wait_for(source: &dyn Readiness, state: &CapsuleState) -> bool {
    wait::wait_one(source, &state.cancel, None).is_ok()
}

impl CapsuleState {
    /// Turns an outcome into the WIT result, closing the stream on failure, and audits.
    fn finish<T>(
        &mut self,
        function: &str,
        started: Instant,
        ended: Ended<T>,
        bytes: impl Fn(&T) -> u64,
        close: impl FnOnce(&mut CapsuleState),
    ) -> wasmtime::Result<Result<T, StreamError>> {
        let (result, error) = match ended {
            Ended::Done(v) => {
                let n = bytes(&v);
                audit(self, function, started, Counts { bytes: Some(n), ..Counts::default() }, None);
                return Ok(Ok(v));
            }
            Ended::Closed => (Err(StreamError::Closed), "closed".to_string()),
            Ended::Cancelled => (Err(StreamError::Closed), "cancelled".to_string()),
            Ended::Failed(message) => {
                close(self);
                let err = self.push(IoError { message: message.clone() })?;
                (Err(StreamError::LastOperationFailed(err)), message)
            }
        };
        audit(self, function, started, Counts { bytes: Some(0), ..Counts::default() }, Some(&error));
        Ok(result)
    }

    fn input(&self, s: &Resource<InputStream>) -> wasmtime::Result<(Arc<dyn ByteSource>, bool)> {
        let s = self.table.get(s)?;
        Ok((s.source.clone(), s.closed))
    }

    fn read_input(&mut self, s: &Resource<InputStream>, len: u64, blocking: bool) -> wasmtime::Result<Ended<Vec<u8>>> {
        let len = checked_len(len)?.min(READ_CEILING);
        let (source, closed) = self.input(s)?;
        if closed {
            return Ok(Ended::Closed);
        }
        loop {
            match source.read(len) {
                Ok(bytes) if bytes.is_empty() && blocking && len > 0 => {
                    if !wait_for(&*source, self) {
                        return Ok(Ended::Cancelled);
                    }
                }
                Ok(bytes) => return Ok(Ended::Done(bytes)),
                Err(f) => return Ok(f.into()),
            }
        }
    }

    fn close_input(&mut self, s: &Resource<InputStream>) {
        if let Ok(s) = self.table.get_mut(s) {
            s.closed = true;
        }
    }

    fn close_output(&mut self, s: &Resource<OutputStream>) {
        if let Ok(s) = self.table.get_mut(s) {
            s.closed = true;
            s.permit = 0;
        }
    }

    fn output(&self, s: &Resource<OutputStream>) -> wasmtime::Result<(Arc<dyn ByteSink>, bool)> {
        let s = self.table.get(s)?;
        Ok((s.sink.clone(), s.closed))
    }

    /// `write` / `write-zeroes`: within the permit, or a trap.
    fn write_within_permit(&mut self, s: &Resource<OutputStream>, bytes: &[u8]) -> wasmtime::Result<Ended<()>> {
        let stream = self.table.get_mut(s)?;
        if stream.closed {
            return Ok(Ended::Closed);
        }
        if bytes.len() > stream.permit {
            wasmtime::bail!(
                "write of {} bytes exceeds the check-write permit of {} bytes",
                bytes.len(),
                stream.permit
            );
        }
        stream.permit -= bytes.len();
        let sink = stream.sink.clone();
        Ok(match sink.write(bytes) {
            Ok(()) => Ended::Done(()),
            Err(f) => f.into(),
        })
    }

    /// The segmented blocking write: `total` bytes taken from `chunk_at(offset, max)`.
    fn write_all_blocking(
        &mut self,
        s: &Resource<OutputStream>,
        total: usize,
        chunk_at: impl Fn(usize, usize) -> Vec<u8>,
    ) -> wasmtime::Result<Ended<u64>> {
        let (sink, closed) = self.output(s)?;
        if closed {
            return Ok(Ended::Closed);
        }
        self.table.get_mut(s)?.permit = 0;
        let mut written = 0;
        while written < total {
            let permit = match sink.check_write() {
                Ok(p) => p,
                Err(f) => return Ok(f.into()),
            };
            if permit == 0 {
                if !wait_for(&*sink, self) {
                    return Ok(Ended::Cancelled);
                }
                continue;
            }
            let chunk = chunk_at(written, permit.min(total - written));
            if let Err(f) = sink.write(&chunk) {
                return Ok(f.into());
            }
            written += chunk.len();
        }
        Ok(match sink.flush() {
            Ok(()) => Ended::Done(written as u64),
            Err(f) => f.into(),
        })
    }

    fn splice_streams(
        &mut self,
        dst: &Resource<OutputStream>,
        src: &Resource<InputStream>,
        len: u64,
        blocking: bool,
    ) -> wasmtime::Result<(Ended<u64>, bool)> {
        let len = checked_len(len)?.min(READ_CEILING);
        let (source, src_closed) = self.input(src)?;
        let (sink, dst_closed) = self.output(dst)?;
        // The bool says which side failed: true = the source.
        if dst_closed {
            return Ok((Ended::Closed, false));
        }
        if src_closed {
            return Ok((Ended::Closed, true));
        }
        self.table.get_mut(dst)?.permit = 0;
        loop {
            if blocking && !source.is_ready() && !wait_for(&*source, self) {
                return Ok((Ended::Cancelled, true));
            }
            let permit = match sink.check_write() {
                Ok(p) => p,
                Err(f) => return Ok((f.into(), false)),
            };
            if permit == 0 {
                if !blocking {
                    return Ok((Ended::Done(0), false));
                }
                if !wait_for(&*sink, self) {
                    return Ok((Ended::Cancelled, false));
                }
                continue;
            }
            let bytes = match source.read(permit.min(len)) {
                Ok(b) => b,
                Err(f) => return Ok((f.into(), true)),
            };
            if bytes.is_empty() && blocking && len > 0 {
                continue;
            }
            return Ok(match sink.write(&bytes) {
                Ok(()) => (Ended::Done(bytes.len() as u64), false),
                Err(f) => (f.into(), false),
            });
        }
    }
}

impl Host for CapsuleState {}

impl HostInputStream for CapsuleState {
    fn read(&mut self, s: Resource<InputStream>, len: u64) -> wasmtime::Result<Result<Vec<u8>, StreamError>> {
        let started = Instant::now();
        let ended = self.read_input(&s, len, false)?;
        self.finish("astrid:io/streams.input-stream.read", started, ended, |b| b.len() as u64, |st| st.close_input(&s))
    }

    fn blocking_read(&mut self, s: Resource<InputStream>, len: u64) -> wasmtime::Result<Result<Vec<u8>, StreamError>> {
        let started = Instant::now();
        let ended = self.read_input(&s, len, true)?;
        self.finish("astrid:io/streams.input-stream.blocking-read", started, ended, |b| b.len() as u64, |st| st.close_input(&s))
    }

    fn skip(&mut self, s: Resource<InputStream>, len: u64) -> wasmtime::Result<Result<u64, StreamError>> {
        let started = Instant::now();
        let ended = match self.read_input(&s, len, false)? {
            Ended::Done(b) => Ended::Done(b.len() as u64),
            other => map_ended(other),
        };
        self.finish("astrid:io/streams.input-stream.skip", started, ended, |n| *n, |st| st.close_input(&s))
    }

    fn blocking_skip(&mut self, s: Resource<InputStream>, len: u64) -> wasmtime::Result<Result<u64, StreamError>> {
        let started = Instant::now();
        let ended = match self.read_input(&s, len, true)? {
            Ended::Done(b) => Ended::Done(b.len() as u64),
            other => map_ended(other),
        };
        self.finish("astrid:io/streams.input-stream.blocking-skip", started, ended, |n| *n, |st| st.close_input(&s))
    }

    fn subscribe(&mut self, s: Resource<InputStream>) -> wasmtime::Result<Resource<Pollable>> {
        let started = Instant::now();
        let (source, _) = self.input(&s)?;
        let pollable = self.push_child(Pollable::new(source), &s)?;
        audit(self, "astrid:io/streams.input-stream.subscribe", started, Counts::default(), None);
        Ok(pollable)
    }

    fn drop(&mut self, s: Resource<InputStream>) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.delete(s)?;
        audit(self, "astrid:io/streams.input-stream.drop", started, Counts::default(), None);
        Ok(())
    }
}

fn map_ended<A, B>(e: Ended<A>) -> Ended<B> {
    match e {
        Ended::Done(_) => unreachable!("mapped by the caller"),
        Ended::Closed => Ended::Closed,
        Ended::Cancelled => Ended::Cancelled,
        Ended::Failed(m) => Ended::Failed(m),
    }
}

impl HostOutputStream for CapsuleState {
    fn check_write(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<Result<u64, StreamError>> {
        let started = Instant::now();
        let (sink, closed) = self.output(&s)?;
        let ended = if closed {
            Ended::Closed
        } else {
            match sink.check_write() {
                Ok(permit) => {
                    self.table.get_mut(&s)?.permit = permit;
                    Ended::Done(permit as u64)
                }
                Err(f) => f.into(),
            }
        };
        self.finish("astrid:io/streams.output-stream.check-write", started, ended, |p| *p, |st| st.close_output(&s))
    }

    fn write(&mut self, s: Resource<OutputStream>, contents: Vec<u8>) -> wasmtime::Result<Result<(), StreamError>> {
        let started = Instant::now();
        let n = contents.len() as u64;
        let ended = self.write_within_permit(&s, &contents)?;
        self.finish("astrid:io/streams.output-stream.write", started, ended, |_| n, |st| st.close_output(&s))
    }

    fn blocking_write_and_flush(&mut self, s: Resource<OutputStream>, contents: Vec<u8>) -> wasmtime::Result<Result<(), StreamError>> {
        let started = Instant::now();
        let ended = self.write_all_blocking(&s, contents.len(), |at, max| contents[at..at + max].to_vec())?;
        let result = self.finish("astrid:io/streams.output-stream.blocking-write-and-flush", started, ended, |n| *n, |st| st.close_output(&s))?;
        Ok(result.map(|_| ()))
    }

    fn flush(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<Result<(), StreamError>> {
        self.flush_output(s, "astrid:io/streams.output-stream.flush")
    }

    fn blocking_flush(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<Result<(), StreamError>> {
        // Our sinks complete a flush before returning, so both forms are the same call.
        self.flush_output(s, "astrid:io/streams.output-stream.blocking-flush")
    }

    fn subscribe(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<Resource<Pollable>> {
        let started = Instant::now();
        let (sink, _) = self.output(&s)?;
        let pollable = self.push_child(Pollable::new(sink), &s)?;
        audit(self, "astrid:io/streams.output-stream.subscribe", started, Counts::default(), None);
        Ok(pollable)
    }

    fn write_zeroes(&mut self, s: Resource<OutputStream>, len: u64) -> wasmtime::Result<Result<(), StreamError>> {
        let started = Instant::now();
        let len = checked_len(len)?;
        let permit = self.table.get(&s)?.permit;
        if len > permit {
            wasmtime::bail!("write-zeroes of {len} bytes exceeds the check-write permit of {permit} bytes");
        }
        let ended = self.write_within_permit(&s, &vec![0; len])?;
        self.finish("astrid:io/streams.output-stream.write-zeroes", started, ended, |_| len as u64, |st| st.close_output(&s))
    }

    fn blocking_write_zeroes_and_flush(&mut self, s: Resource<OutputStream>, len: u64) -> wasmtime::Result<Result<(), StreamError>> {
        let started = Instant::now();
        let total = usize::try_from(len).map_err(|_| wasmtime::format_err!("length {len} does not fit this host"))?;
        let zeroes = vec![0u8; ZEROES_CHUNK];
        let ended = self.write_all_blocking(&s, total, |_, max| zeroes[..max.min(ZEROES_CHUNK)].to_vec())?;
        let result = self.finish("astrid:io/streams.output-stream.blocking-write-zeroes-and-flush", started, ended, |n| *n, |st| st.close_output(&s))?;
        Ok(result.map(|_| ()))
    }

    fn splice(&mut self, dst: Resource<OutputStream>, src: Resource<InputStream>, len: u64) -> wasmtime::Result<Result<u64, StreamError>> {
        self.splice_call(dst, src, len, false)
    }

    fn blocking_splice(&mut self, dst: Resource<OutputStream>, src: Resource<InputStream>, len: u64) -> wasmtime::Result<Result<u64, StreamError>> {
        self.splice_call(dst, src, len, true)
    }

    fn drop(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.delete(s)?;
        audit(self, "astrid:io/streams.output-stream.drop", started, Counts::default(), None);
        Ok(())
    }
}

impl CapsuleState {
    fn flush_output(&mut self, s: Resource<OutputStream>, function: &str) -> wasmtime::Result<Result<(), StreamError>> {
        let started = Instant::now();
        let (sink, closed) = self.output(&s)?;
        let ended = if closed {
            Ended::Closed
        } else {
            match sink.flush() {
                Ok(()) => Ended::Done(()),
                Err(f) => f.into(),
            }
        };
        self.finish(function, started, ended, |_| 0, |st| st.close_output(&s))
    }

    fn splice_call(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
        blocking: bool,
    ) -> wasmtime::Result<Result<u64, StreamError>> {
        let started = Instant::now();
        let (ended, source_side) = self.splice_streams(&dst, &src, len, blocking)?;
        let function = if blocking {
            "astrid:io/streams.output-stream.blocking-splice"
        } else {
            "astrid:io/streams.output-stream.splice"
        };
        self.finish(function, started, ended, |n| *n, |st| {
            if source_side {
                st.close_input(&src)
            } else {
                st.close_output(&dst)
            }
        })
    }
}
