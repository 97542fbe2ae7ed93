//! `astrid-unikernel:testing/sources`: a timer pollable, in-memory pipes, a stream a host
//! thread feeds, the console, and a cancel from the host side — what test and bench
//! capsules wait on until ipc and net exist. Linked only into test and bench images.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Resource;

use super::bindings::astrid_unikernel::testing::sources::Host;
use super::context::{Core, TestingCtx, View};
use super::envelope::host_fns;
use crate::sources::{ByteSink, ByteSource, ConsoleOutput, InputStream, NullSink, OutputStream, StreamFailure, ZeroSource, pipe};
use crate::wait::{self, Pollable, Timer};

pub type TestingView<'a> = View<'a, TestingCtx>;

fn new_input(core: &mut Core, source: Arc<dyn ByteSource>) -> wasmtime::Result<Resource<InputStream>> {
    core.push(InputStream::new(source))
}

fn new_output(core: &mut Core, sink: Arc<dyn ByteSink>) -> wasmtime::Result<Resource<OutputStream>> {
    core.push(OutputStream::new(sink))
}

/// Largest pipe a capsule may ask for.
const MAX_PIPE: u32 = 1 << 20;

host_fns! { impl Host for TestingView<'_> as "astrid-unikernel:testing/sources" {
    fn timer(cx, ns: u64) -> Resource<Pollable> {
        cx.core.push(Pollable::new(Arc::new(Timer::after(Duration::from_nanos(ns)))))
    }

    fn pipe(cx, capacity: u32) -> (Resource<OutputStream>, Resource<InputStream>) {
        if capacity == 0 || capacity > MAX_PIPE {
            wasmtime::bail!("pipe capacity {capacity} is outside 1..={MAX_PIPE}");
        }
        let (w, r) = pipe(capacity as usize);
        let out = new_output(cx.core, w)?;
        let input = new_input(cx.core, r)?;
        Ok((out, input))
    }

    fn fed_by_host(cx, data: Vec<u8>, delay_ns: u64) -> Resource<InputStream> {
        let (w, r) = pipe(data.len().clamp(1, MAX_PIPE as usize));
        let input = new_input(cx.core, r)?;
        let cancel = cx.core.cancel.clone();
        let deadline = Instant::now() + Duration::from_nanos(delay_ns);
        std::thread::Builder::new().name("astrid-test-feeder".into()).spawn(move || {
            // A cancellable sleep: the capsule going away ends the feeder early.
            if wait::wait_any(&[], &cancel, Some(deadline)) == Err(wait::WaitError::TimedOut) && !write_all(&*w, &data, &cancel) {
                return;
            }
            drop(w);
        })?;
        Ok(input)
    }

    fn console(cx) -> Resource<OutputStream> {
        let sink = Arc::new(ConsoleOutput::new(&cx.core.identity.capsule));
        new_output(cx.core, sink)
    }

    fn echo_by_host(cx, capacity: u32) -> (Resource<OutputStream>, Resource<InputStream>) {
        if capacity == 0 || capacity > MAX_PIPE {
            wasmtime::bail!("echo capacity {capacity} is outside 1..={MAX_PIPE}");
        }
        let (to_host, from_capsule) = pipe(capacity as usize);
        let (to_capsule, from_host) = pipe(capacity as usize);
        let out = new_output(cx.core, to_host)?;
        let input = new_input(cx.core, from_host)?;
        let cancel = cx.core.cancel.clone();
        std::thread::Builder::new().name("astrid-test-echo".into()).spawn(move || {
            loop {
                if wait::wait_one(&*from_capsule, &cancel, None).is_err() {
                    return;
                }
                let bytes = match from_capsule.read(capacity as usize) {
                    Ok(b) => b,
                    Err(StreamFailure::Closed | StreamFailure::Failed(_)) => return,
                };
                if !write_all(&*to_capsule, &bytes, &cancel) {
                    return;
                }
            }
        })?;
        Ok((out, input))
    }

    fn zeroes_by_host(cx, len: u64) -> Resource<InputStream> {
        new_input(cx.core, Arc::new(ZeroSource::new(len)))
    }

    fn null_sink(cx) -> Resource<OutputStream> {
        new_output(cx.core, Arc::new(NullSink::default()))
    }

    fn test_argument(cx) -> String {
        Ok(cx.pkg.argument.clone())
    }

    fn cancel_self_after(cx, delay_ns: u64) -> () {
        crate::wait::cancel_after(&cx.core.cancel, Duration::from_nanos(delay_ns))?;
        Ok(())
    }
} }

/// Writes all of `bytes` into `sink` as permits allow, waiting between them; `false`
/// when the sink closed or the capsule was cancelled.
fn write_all(sink: &dyn ByteSink, bytes: &[u8], cancel: &wait::CancelToken) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        match sink.check_write() {
            Ok(0) => {
                if wait::wait_one(sink, cancel, None).is_err() {
                    return false;
                }
            }
            Ok(n) => {
                let end = (at + n).min(bytes.len());
                if sink.write(&bytes[at..end]).is_err() {
                    return false;
                }
                at = end;
            }
            Err(_) => return false,
        }
    }
    true
}
