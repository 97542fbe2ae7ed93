//! `astrid:io@1.0.0` (error, poll, streams) over the stream provider
//! (`sources::stream`) and the wait primitive. A cancelled wait answers `closed` on a
//! stream and `cancelled` from `poll`/`block`; either way the record says `cancelled`.

use wasmtime::component::Resource;

use super::bindings::astrid::io::{error, poll, streams};
use super::context::{Core, NoContext, View};
use super::envelope::host_fns;
use crate::sources::stream::{self, Ended, Payload, Side};
use crate::sources::{InputStream, IoError, OutputStream};
use crate::wait::{self, Pollable, Readiness, WaitError};

pub type IoView<'a> = View<'a, NoContext>;

/// The contract's hard cap on one `poll` call.
pub const MAX_POLL_LIST: usize = 256;

use poll::ErrorCode as PollError;
use streams::StreamError;

impl error::Host for IoView<'_> {}

host_fns! { impl error::HostError for IoView<'_> as "astrid:io/error.error" {
    fn to_debug_string(cx, err: Resource<IoError>) -> String {
        Ok(cx.core.get(&err)?.message.clone())
    }

    fn drop(cx, err: Resource<IoError>) -> () {
        cx.core.delete(err)?;
        Ok(())
    }
} }

host_fns! { impl poll::Host for IoView<'_> as "astrid:io/poll" {
    fn poll(cx, pollables: Vec<Resource<Pollable>>) -> Result<Vec<u32>, PollError> {
        let count = u32::try_from(pollables.len()).unwrap_or(u32::MAX);
        if pollables.is_empty() {
            cx.core.polled(count, None);
            return Ok(Err(PollError::InvalidInput));
        }
        if pollables.len() > MAX_POLL_LIST {
            cx.core.polled(count, None);
            return Ok(Err(PollError::TooLarge));
        }
        let sources: Vec<&dyn Readiness> =
            pollables.iter().map(|p| cx.core.get(p).map(|p| &*p.source as &dyn Readiness)).collect::<wasmtime::Result<_>>()?;
        let result = wait::wait_any(&sources, &cx.core.cancel, None);
        drop(sources);
        Ok(match result {
            Ok(ready) => {
                cx.core.polled(count, Some(ready.len() as u32));
                Ok(ready.into_iter().map(|i| i as u32).collect())
            }
            Err(WaitError::Cancelled) => {
                cx.core.polled(count, None);
                cx.core.cancelled();
                Err(PollError::Cancelled)
            }
            Err(WaitError::TimedOut) => unreachable!("poll waits without a deadline"),
        })
    }
} }

host_fns! { impl poll::HostPollable for IoView<'_> as "astrid:io/poll.pollable" {
    fn ready(cx, this: Resource<Pollable>) -> bool {
        Ok(cx.core.get(&this)?.source.is_ready())
    }

    fn block(cx, this: Resource<Pollable>) -> Result<(), PollError> {
        let core = &*cx.core;
        let result = wait::wait_one(&*core.get(&this)?.source, &core.cancel, None);
        Ok(match result {
            Ok(()) => Ok(()),
            Err(WaitError::Cancelled) => {
                cx.core.cancelled();
                Err(PollError::Cancelled)
            }
            Err(WaitError::TimedOut) => unreachable!("block waits without a deadline"),
        })
    }

    fn drop(cx, this: Resource<Pollable>) -> () {
        cx.core.delete(this)?;
        Ok(())
    }
} }

fn checked_len(len: u64) -> wasmtime::Result<usize> {
    if len > u64::from(u32::MAX) {
        wasmtime::bail!("stream length {len} is beyond what a wasm32 capsule can address");
    }
    Ok(len as usize)
}

/// Turns how a stream call ended into its WIT answer and notes it for the record: a
/// failure closes the stream (`close`) and hands the capsule an error resource.
fn answer<T>(core: &mut Core, ended: Ended<T>, bytes: impl Fn(&T) -> u64, close: impl FnOnce(&mut Core)) -> wasmtime::Result<Result<T, StreamError>> {
    Ok(match ended {
        Ended::Done(v) => {
            core.moved(bytes(&v));
            Ok(v)
        }
        Ended::Closed => {
            core.moved(0);
            Err(StreamError::Closed)
        }
        Ended::Cancelled => {
            core.moved(0);
            core.cancelled();
            Err(StreamError::Closed)
        }
        Ended::Failed(message) => {
            core.moved(0);
            close(core);
            core.detail(message.clone());
            Err(StreamError::LastOperationFailed(core.push(IoError { message })?))
        }
    })
}

fn close_input(s: &Resource<InputStream>) -> impl FnOnce(&mut Core) + '_ {
    move |core| {
        if let Ok(s) = core.get_mut(s) {
            s.closed = true;
        }
    }
}

fn close_output(s: &Resource<OutputStream>) -> impl FnOnce(&mut Core) + '_ {
    move |core| {
        if let Ok(s) = core.get_mut(s) {
            s.close();
        }
    }
}

fn read(cx: &mut IoView<'_>, s: &Resource<InputStream>, len: u64, blocking: bool) -> wasmtime::Result<Result<Vec<u8>, StreamError>> {
    let len = checked_len(len)?;
    let ended = stream::read(cx.core.get(s)?, len, blocking, &cx.core.cancel);
    answer(cx.core, ended, |b| b.len() as u64, close_input(s))
}

fn skip(cx: &mut IoView<'_>, s: &Resource<InputStream>, len: u64, blocking: bool) -> wasmtime::Result<Result<u64, StreamError>> {
    let len = checked_len(len)?;
    let ended = stream::read(cx.core.get(s)?, len, blocking, &cx.core.cancel).map(|b| b.len() as u64);
    answer(cx.core, ended, |n| *n, close_input(s))
}

fn write_all(cx: &mut IoView<'_>, s: &Resource<OutputStream>, payload: Payload<'_>) -> wasmtime::Result<Result<(), StreamError>> {
    let cancel = cx.core.cancel.clone();
    let ended = stream::write_all(cx.core.get_mut(s)?, payload, &cancel);
    Ok(answer(cx.core, ended, |n| *n, close_output(s))?.map(|_| ()))
}

fn flush(cx: &mut IoView<'_>, s: &Resource<OutputStream>) -> wasmtime::Result<Result<(), StreamError>> {
    let ended = cx.core.get(s)?.flush();
    answer(cx.core, ended, |_| 0, close_output(s))
}

fn splice(cx: &mut IoView<'_>, dst: &Resource<OutputStream>, src: &Resource<InputStream>, len: u64, blocking: bool) -> wasmtime::Result<Result<u64, StreamError>> {
    let len = checked_len(len)?;
    let cancel = cx.core.cancel.clone();
    let source = {
        let s = cx.core.get(src)?;
        InputStream { source: s.source.clone(), closed: s.closed, hold: s.hold.clone() }
    };
    let (ended, side) = stream::splice(cx.core.get_mut(dst)?, &source, len, blocking, &cancel);
    match side {
        Side::Source => answer(cx.core, ended, |n| *n, close_input(src)),
        Side::Sink => answer(cx.core, ended, |n| *n, close_output(dst)),
    }
}

impl streams::Host for IoView<'_> {}

host_fns! { impl streams::HostInputStream for IoView<'_> as "astrid:io/streams.input-stream" {
    fn read(cx, s: Resource<InputStream>, len: u64) -> Result<Vec<u8>, StreamError> {
        read(cx, &s, len, false)
    }

    fn blocking_read(cx, s: Resource<InputStream>, len: u64) -> Result<Vec<u8>, StreamError> {
        read(cx, &s, len, true)
    }

    fn skip(cx, s: Resource<InputStream>, len: u64) -> Result<u64, StreamError> {
        skip(cx, &s, len, false)
    }

    fn blocking_skip(cx, s: Resource<InputStream>, len: u64) -> Result<u64, StreamError> {
        skip(cx, &s, len, true)
    }

    fn subscribe(cx, s: Resource<InputStream>) -> Resource<Pollable> {
        let source = cx.core.get(&s)?.source.clone();
        cx.core.push_child(Pollable::new(source), &s)
    }

    fn drop(cx, s: Resource<InputStream>) -> () {
        cx.core.delete(s)?;
        Ok(())
    }
} }

host_fns! { impl streams::HostOutputStream for IoView<'_> as "astrid:io/streams.output-stream" {
    fn check_write(cx, s: Resource<OutputStream>) -> Result<u64, StreamError> {
        let ended = cx.core.get_mut(&s)?.check_write();
        answer(cx.core, ended, |p| *p, close_output(&s))
    }

    fn write(cx, s: Resource<OutputStream>, contents: Vec<u8>) -> Result<(), StreamError> {
        let ended = cx.core.get_mut(&s)?.write(&contents)?;
        let n = contents.len() as u64;
        answer(cx.core, ended, |_| n, close_output(&s))
    }

    fn blocking_write_and_flush(cx, s: Resource<OutputStream>, contents: Vec<u8>) -> Result<(), StreamError> {
        write_all(cx, &s, Payload::Bytes(&contents))
    }

    fn flush(cx, s: Resource<OutputStream>) -> Result<(), StreamError> {
        flush(cx, &s)
    }

    fn blocking_flush(cx, s: Resource<OutputStream>) -> Result<(), StreamError> {
        flush(cx, &s)
    }

    fn subscribe(cx, s: Resource<OutputStream>) -> Resource<Pollable> {
        let sink = cx.core.get(&s)?.sink.clone();
        cx.core.push_child(Pollable::new(sink), &s)
    }

    fn write_zeroes(cx, s: Resource<OutputStream>, len: u64) -> Result<(), StreamError> {
        let len = checked_len(len)?;
        let stream = cx.core.get_mut(&s)?;
        // Checked before anything is allocated: the permit bounds the buffer.
        if len > stream.permit {
            return Err(stream::PermitExceeded { len, permit: stream.permit }.into());
        }
        let ended = stream.write(&vec![0; len])?;
        answer(cx.core, ended, |_| len as u64, close_output(&s))
    }

    fn blocking_write_zeroes_and_flush(cx, s: Resource<OutputStream>, len: u64) -> Result<(), StreamError> {
        write_all(cx, &s, Payload::Zeroes(len))
    }

    fn splice(cx, dst: Resource<OutputStream>, src: Resource<InputStream>, len: u64) -> Result<u64, StreamError> {
        splice(cx, &dst, &src, len, false)
    }

    fn blocking_splice(cx, dst: Resource<OutputStream>, src: Resource<InputStream>, len: u64) -> Result<u64, StreamError> {
        splice(cx, &dst, &src, len, true)
    }

    fn drop(cx, s: Resource<OutputStream>) -> () {
        cx.core.delete(s)?;
        Ok(())
    }
} }
