//! `astrid-unikernel:testing/sources`: a timer pollable, in-memory pipes, a stream a host
//! thread feeds, the console, and a cancel from the host side — what test and bench
//! capsules wait on until ipc and net exist. Linked only into test and bench images.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Resource;

use crate::engine::state::CapsuleState;
use crate::io::astrid_unikernel::testing::sources::Host;
use crate::io::{InputStream, OutputStream, Pollable, new_input, new_output};
use crate::sources::{ByteSink, ByteSource, ConsoleSink, NullSink, StreamFailure, ZeroSource, pipe};
use crate::wait::{self, Timer};

/// Largest pipe a capsule may ask for.
const MAX_PIPE: u32 = 1 << 20;

impl Host for CapsuleState {
    fn timer(&mut self, ns: u64) -> wasmtime::Result<Resource<Pollable>> {
        self.push(Pollable::new(Arc::new(Timer::after(Duration::from_nanos(ns)))))
    }

    fn pipe(&mut self, capacity: u32) -> wasmtime::Result<(Resource<OutputStream>, Resource<InputStream>)> {
        if capacity == 0 || capacity > MAX_PIPE {
            wasmtime::bail!("pipe capacity {capacity} is outside 1..={MAX_PIPE}");
        }
        let (w, r) = pipe(capacity as usize);
        let out = new_output(self, w)?;
        let input = new_input(self, r)?;
        Ok((out, input))
    }

    fn fed_by_host(&mut self, data: Vec<u8>, delay_ns: u64) -> wasmtime::Result<Resource<InputStream>> {
        let (w, r) = pipe(data.len().clamp(1, MAX_PIPE as usize));
        let input = new_input(self, r)?;
        let cancel = self.cancel.clone();
        let deadline = Instant::now() + Duration::from_nanos(delay_ns);
        std::thread::Builder::new().name("astrid-test-feeder".into()).spawn(move || {
            // A cancellable sleep: the capsule going away ends the feeder early.
            if wait::wait_any(&[], &cancel, Some(deadline)) == Err(wait::WaitError::TimedOut) {
                if !write_all(&*w, &data, &cancel) {
                    return;
                }
            }
            drop(w);
        })?;
        Ok(input)
    }

    fn console(&mut self) -> wasmtime::Result<Resource<OutputStream>> {
        let sink = Arc::new(ConsoleSink::new(&self.capsule));
        new_output(self, sink)
    }

    fn echo_by_host(&mut self, capacity: u32) -> wasmtime::Result<(Resource<OutputStream>, Resource<InputStream>)> {
        if capacity == 0 || capacity > MAX_PIPE {
            wasmtime::bail!("echo capacity {capacity} is outside 1..={MAX_PIPE}");
        }
        let (to_host, from_capsule) = pipe(capacity as usize);
        let (to_capsule, from_host) = pipe(capacity as usize);
        let out = new_output(self, to_host)?;
        let input = new_input(self, from_host)?;
        let cancel = self.cancel.clone();
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

    fn zeroes_by_host(&mut self, len: u64) -> wasmtime::Result<Resource<InputStream>> {
        new_input(self, Arc::new(ZeroSource::new(len)))
    }

    fn null_sink(&mut self) -> wasmtime::Result<Resource<OutputStream>> {
        new_output(self, Arc::new(NullSink::default()))
    }

    fn test_argument(&mut self) -> wasmtime::Result<String> {
        Ok(std::env::var("ASTRID_TEST_ARG").unwrap_or_default())
    }

    fn cancel_self_after(&mut self, delay_ns: u64) -> wasmtime::Result<()> {
        super::cancel_after(&self.cancel, Duration::from_nanos(delay_ns))
    }
}

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
