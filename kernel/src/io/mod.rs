//! `astrid:io@1.0.0` for capsules: the WIT host glue, kept thin. It translates each call
//! onto the byte sources and sinks (`crate::sources`) and the wait primitive
//! (`crate::wait`), races every wait against the capsule's cancellation, and audits
//! every operation. It knows nothing about futexes, pipes or sockets.

mod error;
mod poll;
mod streams;

use std::sync::Arc;
use std::time::Instant;

pub use streams::{InputStream, OutputStream, READ_CEILING};

use crate::engine::state::CapsuleState;
use crate::sources::{ByteSink, ByteSource};
use crate::wait::Readiness;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "astrid-unikernel:image/capsule-host-testing",
    imports: { default: trappable },
    with: {
        "astrid:io/error.error": crate::io::IoError,
        "astrid:io/poll.pollable": crate::io::Pollable,
        "astrid:io/streams.input-stream": crate::io::InputStream,
        "astrid:io/streams.output-stream": crate::io::OutputStream,
        "astrid:ipc/host.subscription": crate::ipc::Subscription,
        "astrid:net/host.tcp-listener": crate::net::TcpListener,
        "astrid:net/host.tcp-stream": crate::net::TcpStream,
        "astrid:net/host.udp-socket": crate::net::UdpSocket,
        "astrid:net/host.unix-listener": crate::net::UnixListener,
    },
});

pub use astrid::io::poll::ErrorCode;
pub use astrid::io::streams::StreamError;

/// `astrid:io/error.error`: what went wrong with a stream's last operation.
pub struct IoError {
    pub message: String,
}

/// `astrid:io/poll.pollable`: a readiness source to wait on.
pub struct Pollable {
    pub(crate) source: Arc<dyn Readiness + Send + Sync>,
}

impl Pollable {
    pub fn new(source: Arc<dyn Readiness + Send + Sync>) -> Self {
        Pollable { source }
    }
}

/// Adds astrid:io to a capsule's linker.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<CapsuleState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    astrid::io::error::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    astrid::io::poll::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    astrid::io::streams::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// Hands a new input stream to the capsule.
pub fn new_input(state: &mut CapsuleState, source: Arc<dyn ByteSource>) -> wasmtime::Result<wasmtime::component::Resource<InputStream>> {
    state.push(InputStream::new(source))
}

/// Hands a new output stream to the capsule.
pub fn new_output(state: &mut CapsuleState, sink: Arc<dyn ByteSink>) -> wasmtime::Result<wasmtime::component::Resource<OutputStream>> {
    state.push(OutputStream::new(sink))
}

/// Counters an audit record may carry.
#[derive(Default, Clone, Copy)]
pub(crate) struct Counts {
    pub bytes: Option<u64>,
    pub pollable_count: Option<u32>,
    pub ready_count: Option<u32>,
}

/// Emits the audit event of one io operation (target `astrid.audit.io`); the image's
/// audit subscriber turns it into a chained record.
pub(crate) fn audit(state: &CapsuleState, function: &str, started: Instant, counts: Counts, error: Option<&str>) {
    state.host_calls.set(state.host_calls.get() + 1);
    let elapsed_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    tracing::event!(
        target: "astrid.audit.io",
        tracing::Level::INFO,
        capsule_id = state.capsule.as_str(),
        principal = state.principal.as_str(),
        function,
        outcome = if error.is_some() { "error" } else { "ok" },
        elapsed_ns,
        bytes = counts.bytes,
        pollable_count = counts.pollable_count,
        ready_count = counts.ready_count,
        error,
    );
}
