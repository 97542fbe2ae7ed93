//! The host layer: where a capsule's calls are answered. One shape for every package:
//!
//! ```text
//! guest call ─► bindings (generated, `bindings.rs`)
//!            ─► host file of the package (`io.rs`, `sys.rs`, `kv.rs`, `ipc.rs`,
//!               `net.rs`, `refusals.rs`, `testing.rs`), over a view of the core and
//!               that package's context only (`context.rs`)
//!            ─► the envelope (`envelope.rs`): timing, cancellation outcome, call
//!               count, exactly one audit record, fail-closed on a refused record
//!            ─► a WIT-free provider (`sources`, `kv`, `ipc`, `net`, `sys`)
//!            ─► the wait primitive (`wait`) ─► the audit sink (`audit`)
//! ```
//!
//! Providers never import this layer; the engine builds a `CapsuleState` and links
//! everything with `add_to_linker`.

pub mod bindings;
pub mod context;
pub mod envelope;
mod io;
mod ipc;
mod kv;
mod net;
mod refusals;
mod sys;
#[cfg(any(test, feature = "testing"))]
mod testing;

use std::marker::PhantomData;

use wasmtime::component::{HasData, Linker};

pub use context::{CapsuleLimits, CapsuleState, Identity, MAX_TABLE_BYTES, MemoryCapReached, QuotaExceeded, Shared, Spec};
pub use envelope::AuditUnavailable;
pub use io::MAX_POLL_LIST;

use bindings::astrid;
use context::View;
use envelope::WitError;

/// The `HasData` of a package whose view borrows context `P`.
struct Package<P>(PhantomData<P>);

impl<P: 'static> HasData for Package<P> {
    type Data<'a> = View<'a, P>;
}

/// Every generated error type is named the same way in the audit log.
macro_rules! wit_errors {
    ($($ty:ty),* $(,)?) => { $(impl WitError for $ty {})* };
}

wit_errors!(
    astrid::io::poll::ErrorCode,
    astrid::sys::host::ErrorCode,
    astrid::kv::host::ErrorCode,
    astrid::ipc::host::ErrorCode,
    astrid::net::host::ErrorCode,
    astrid::fs::host::ErrorCode,
    astrid::http1_1_0::host::ErrorCode,
    astrid::process1_1_0::host::ErrorCode,
    astrid::uplink::host::ErrorCode,
    astrid::identity::host::ErrorCode,
    astrid::approval::host::ErrorCode,
    astrid::elicit::host::ErrorCode,
);

impl WitError for astrid::io::streams::StreamError {
    fn code(&self) -> String {
        match self {
            astrid::io::streams::StreamError::Closed => "closed".into(),
            astrid::io::streams::StreamError::LastOperationFailed(_) => "last-operation-failed".into(),
        }
    }
}

/// Links every package the image serves into a capsule's linker.
pub fn add_to_linker(linker: &mut Linker<CapsuleState>) -> wasmtime::Result<()> {
    add_to_linker_for(linker, |_| true)
}

/// Adds the host interfaces whose names (`astrid:io/poll@1.0.0`) `wanted` accepts: a
/// component needs only those it imports, and under TCG each interface added costs
/// milliseconds at boot (all of them: ~30 ms).
pub fn add_to_linker_for(linker: &mut Linker<CapsuleState>, wanted: impl Fn(&str) -> bool) -> wasmtime::Result<()> {
    fn io(s: &mut CapsuleState) -> View<'_, context::NoContext> {
        View { core: &mut s.core, pkg: &mut s.io }
    }
    type Io = Package<context::NoContext>;
    if wanted("astrid:io/error@1.0.0") {
        astrid::io::error::add_to_linker::<_, Io>(linker, io)?;
    }
    if wanted("astrid:io/poll@1.0.0") {
        astrid::io::poll::add_to_linker::<_, Io>(linker, io)?;
    }
    if wanted("astrid:io/streams@1.0.0") {
        astrid::io::streams::add_to_linker::<_, Io>(linker, io)?;
    }
    if wanted("astrid:sys/host@1.0.0") {
        astrid::sys::host::add_to_linker::<_, Package<context::SysCtx>>(linker, |s| View { core: &mut s.core, pkg: &mut s.sys })?;
    }
    if wanted("astrid:kv/host@1.0.0") {
        astrid::kv::host::add_to_linker::<_, Package<crate::kv::Kv>>(linker, |s| View { core: &mut s.core, pkg: &mut s.kv })?;
    }
    if wanted("astrid:ipc/host@1.0.0") {
        astrid::ipc::host::add_to_linker::<_, Package<context::IpcCtx>>(linker, |s| View { core: &mut s.core, pkg: &mut s.ipc })?;
    }
    // Net and request-context share their state: added together.
    if wanted("astrid:net/host@1.0.0") || wanted("astrid:request-context/host@1.0.0") {
        net::add_to_linker(linker)?;
    }
    if wanted("astrid:uplink/host@1.0.0") {
        astrid::uplink::host::add_to_linker::<_, Io>(linker, io)?;
    }
    if wanted("astrid:identity/host@1.0.0") {
        astrid::identity::host::add_to_linker::<_, Io>(linker, io)?;
    }
    if wanted("astrid:approval/host@1.0.0") {
        astrid::approval::host::add_to_linker::<_, Io>(linker, io)?;
    }
    if wanted("astrid:elicit/host@1.0.0") {
        astrid::elicit::host::add_to_linker::<_, Io>(linker, io)?;
    }
    if wanted("astrid:fs/host@1.0.0") {
        astrid::fs::host::add_to_linker::<_, Io>(linker, io)?;
    }
    if wanted("astrid:http/host@1.1.0") {
        astrid::http1_1_0::host::add_to_linker::<_, Io>(linker, io)?;
    }
    if wanted("astrid:process/host@1.1.0") {
        astrid::process1_1_0::host::add_to_linker::<_, Io>(linker, io)?;
    }
    #[cfg(any(test, feature = "testing"))]
    if wanted("astrid-unikernel:testing/sources@0.1.0") {
        bindings::astrid_unikernel::testing::sources::add_to_linker::<_, Package<context::TestingCtx>>(linker, |s| View {
            core: &mut s.core,
            pkg: &mut s.testing,
        })?;
    }
    Ok(())
}
