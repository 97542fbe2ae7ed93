//! The capsule engine: wasmtime with the project's one `Config`, a linker holding the
//! host interfaces, and the run of one capsule in its own store on its own thread —
//! memory-capped, cancellable (deadline, host cancel, epoch interruption of pure
//! compute), every trap turned into an audited, clean outcome.

pub mod config;
pub mod state;
#[cfg(any(test, feature = "testing"))]
mod testing;

use std::fmt;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Precompiled, Store, Trap, UpdateDeadline};

pub use config::{CodeTarget, engine_config};
use state::{CapsuleLimits, CapsuleState};

use crate::audit::AuditHandle;
use crate::wait::{self, CancelToken};

/// How often the epoch advances: the latency with which a capsule in pure compute
/// notices its cancellation.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How long a cancelled capsule may keep running to shut down gracefully (its waits
/// already return `cancelled` at once) before it is stopped with a trap.
pub const CANCEL_GRACE: Duration = Duration::from_millis(250);

/// A capsule ready to instantiate.
pub enum Loaded {
    Component(Component),
    Module(wasmtime::Module),
}

/// How loading went, with the step's duration (for the benchmarks and the console).
pub struct LoadReport {
    pub loaded: Loaded,
    pub how: &'static str,
    pub elapsed: Duration,
}

pub struct CapsuleEngine {
    engine: wasmtime::Engine,
    linker: Linker<CapsuleState>,
    module_linker: wasmtime::Linker<CapsuleState>,
    ticker_stop: CancelToken,
    /// The message bus the capsules of this image share.
    bus: std::sync::Arc<crate::ipc::bus::Bus>,
    /// The network the capsules of this image share.
    network: std::sync::Arc<crate::net::Network>,
}

/// How a capsule run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// `run` returned (or there was none to call) — after a cancellation too, if the
    /// capsule shut down within the grace period.
    Completed,
    /// The capsule trapped: unreachable, out of bounds, a quota, a host trap, …
    Trapped(String),
    /// The capsule was cancelled (deadline, host cancel) and stopped with a trap because
    /// it did not return within `CANCEL_GRACE`.
    Cancelled,
    /// The capsule could not be instantiated (missing imports, bad module).
    InstantiateFailed(String),
}

/// The trap a capsule in pure compute gets when its cancellation fires.
#[derive(Debug)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("capsule cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub limits: CapsuleLimits,
    /// Cancel the capsule this long after it starts.
    pub deadline: Option<Duration>,
    pub principal: Option<String>,
    /// What `astrid:sys` `get-config` returns.
    pub config: std::collections::BTreeMap<String, String>,
    /// What the capsule may do on the network.
    pub net_policy: crate::net::NetPolicy,
}

impl CapsuleEngine {
    /// The engine for code running here, with astrid:io (and, in test images, the
    /// testing sources) in its linker.
    pub fn new() -> wasmtime::Result<Self> {
        let engine = wasmtime::Engine::new(&engine_config(CodeTarget::Native)?)?;
        let mut linker = Linker::new(&engine);
        crate::io::add_to_linker(&mut linker)?;
        crate::io::astrid::sys::host::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
        crate::io::astrid::kv::host::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
        crate::refusals::add_to_linker(&mut linker)?;
        crate::io::astrid::ipc::host::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
        crate::net::add_to_linker(&mut linker)?;
        #[cfg(any(test, feature = "testing"))]
        crate::io::astrid_unikernel::testing::sources::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        let module_linker = wasmtime::Linker::new(&engine);
        let ticker_stop = CancelToken::new();
        let weak = engine.weak();
        let stop = ticker_stop.clone();
        std::thread::Builder::new().name("astrid-epoch".into()).spawn(move || {
            loop {
                let next = Instant::now() + EPOCH_TICK;
                if wait::wait_any(&[], &stop, Some(next)) != Err(wait::WaitError::TimedOut) {
                    return;
                }
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })?;
        Ok(CapsuleEngine { engine, linker, module_linker, ticker_stop, bus: Default::default(), network: Default::default() })
    }

    /// Sets up the image's network: whether connections may leave through a NIC (or
    /// the host's sockets in hosted mode), and which loopback ports to publish on it.
    /// Call before any capsule runs.
    pub fn set_network(&mut self, external: bool, publish: &[u16]) -> std::io::Result<()> {
        let loopback = std::sync::Arc::new(crate::net::local::Loopback::default());
        for &port in publish {
            // In the image the NIC's address; in hosted mode the host's loopback.
            let ip = if cfg!(target_os = "hermit") { std::net::Ipv4Addr::UNSPECIFIED } else { std::net::Ipv4Addr::LOCALHOST };
            crate::net::kernel::publish(port, ip.into(), loopback.clone())?;
        }
        self.network = std::sync::Arc::new(crate::net::Network { loopback, external });
        Ok(())
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// Compiles a `.wasm` (Cranelift, here) or deserializes an artifact precompiled
    /// for this target by `xtask compile` with the same `Config`.
    pub fn load(&self, bytes: &[u8]) -> wasmtime::Result<LoadReport> {
        let started = Instant::now();
        let (loaded, how) = match wasmtime::Engine::detect_precompiled(bytes) {
            // SAFETY: an artifact is trusted code: it is produced by our own precompiler
            // and the engine checks its target, version and settings match.
            Some(Precompiled::Component) => {
                (Loaded::Component(unsafe { Component::deserialize(&self.engine, bytes)? }), "precompiled component")
            }
            Some(Precompiled::Module) => {
                (Loaded::Module(unsafe { wasmtime::Module::deserialize(&self.engine, bytes)? }), "precompiled module")
            }
            None => match crate::wasm::inspect(bytes) {
                Ok(h) if h.kind == crate::wasm::WasmKind::Component => {
                    (Loaded::Component(Component::new(&self.engine, bytes)?), "compiled component")
                }
                _ => (Loaded::Module(wasmtime::Module::new(&self.engine, bytes)?), "compiled module"),
            },
        };
        Ok(LoadReport { loaded, how, elapsed: started.elapsed() })
    }

    /// Runs one capsule to its end on a thread of its own, auditing through `audit`.
    /// Without an audit handle nothing is recorded (the benchmarks' audit-off side).
    pub fn run(&self, name: &str, loaded: &Loaded, options: &RunOptions, cancel: &CancelToken, audit: Option<&AuditHandle>) -> RunOutcome {
        let layer = audit.map(|a| crate::audit::AuditLayer::new(a.clone()));
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), layer);
        let principal = options.principal.clone().unwrap_or_else(|| name.to_string());
        let outcome = std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(format!("capsule {name}"))
                .stack_size(config::RUNNER_STACK)
                .spawn_scoped(scope, || {
                    tracing::subscriber::with_default(subscriber, || {
                        let mut state = CapsuleState::new(name, &principal, cancel.clone(), options.limits.clone());
                        state.config = options.config.clone();
                        state.bus = self.bus.clone();
                        state.network = self.network.clone();
                        state.net_policy = options.net_policy.clone();
                        if let Some(d) = options.deadline {
                            if let Err(e) = cancel_after(cancel, d) {
                                return RunOutcome::InstantiateFailed(format!("cannot start the deadline watchdog: {e}"));
                            }
                        }
                        let outcome = self.run_in_store(state, loaded);
                        lifecycle_audit(name, &principal, &outcome);
                        outcome
                    })
                });
            match handle {
                Ok(h) => h.join().unwrap_or_else(|_| RunOutcome::Trapped("the capsule thread panicked".into())),
                Err(e) => RunOutcome::InstantiateFailed(format!("cannot start the capsule thread: {e}")),
            }
        });
        if let Some(audit) = audit {
            let _ = audit.capsule_end(name);
        }
        outcome
    }

    fn run_in_store(&self, state: CapsuleState, loaded: &Loaded) -> RunOutcome {
        let cancel = state.cancel.clone();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        store.set_epoch_deadline(1);
        let watched = cancel.clone();
        let mut cancel_seen: Option<Instant> = None;
        store.epoch_deadline_callback(move |_| {
            if watched.is_cancelled() && cancel_seen.get_or_insert_with(Instant::now).elapsed() >= CANCEL_GRACE {
                return Err(Cancelled.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });
        let result = match loaded {
            Loaded::Component(component) => {
                let instance = match self.linker.instantiate(&mut store, component) {
                    Ok(i) => i,
                    Err(e) => return instantiate_failure(e, &cancel),
                };
                match instance.get_typed_func::<(), ()>(&mut store, "run") {
                    Ok(run) => run.call(&mut store, ()),
                    Err(_) => Ok(()),
                }
            }
            Loaded::Module(module) => {
                let instance = match self.module_linker.instantiate(&mut store, module) {
                    Ok(i) => i,
                    Err(e) => return instantiate_failure(e, &cancel),
                };
                let entry = ["run", "_start"].into_iter().find_map(|n| instance.get_typed_func::<(), ()>(&mut store, n).ok());
                match entry {
                    Some(f) => f.call(&mut store, ()),
                    None => Ok(()),
                }
            }
        };
        match result {
            // A capsule that returns after its cancellation shut down gracefully.
            Ok(()) => RunOutcome::Completed,
            Err(e) => classify(e, &cancel),
        }
    }
}

impl Drop for CapsuleEngine {
    fn drop(&mut self) {
        self.ticker_stop.cancel();
    }
}

fn instantiate_failure(e: wasmtime::Error, cancel: &CancelToken) -> RunOutcome {
    match classify(e, cancel) {
        RunOutcome::Trapped(t) => RunOutcome::InstantiateFailed(t),
        other => other,
    }
}

/// Names a trap the way a capsule author can act on.
fn classify(e: wasmtime::Error, cancel: &CancelToken) -> RunOutcome {
    if e.downcast_ref::<Cancelled>().is_some() || cancel.is_cancelled() && e.downcast_ref::<Trap>().is_none() {
        return RunOutcome::Cancelled;
    }
    if let Some(m) = e.downcast_ref::<state::MemoryCapReached>() {
        return RunOutcome::Trapped(m.to_string());
    }
    if let Some(q) = e.downcast_ref::<state::QuotaExceeded>() {
        return RunOutcome::Trapped(q.to_string());
    }
    let what = match e.downcast_ref::<Trap>() {
        Some(Trap::UnreachableCodeReached) => "unreachable executed".to_string(),
        Some(Trap::MemoryOutOfBounds) => "out-of-bounds memory access".to_string(),
        Some(Trap::IntegerDivisionByZero) => "integer division by zero".to_string(),
        Some(Trap::StackOverflow) => "wasm stack exhausted".to_string(),
        Some(Trap::BadSignature) => "call_indirect signature mismatch".to_string(),
        Some(Trap::IndirectCallToNull) => "call_indirect to a null table entry".to_string(),
        Some(Trap::TableOutOfBounds) => "table index out of bounds".to_string(),
        Some(Trap::IntegerOverflow) => "integer overflow".to_string(),
        Some(Trap::BadConversionToInteger) => "invalid float to integer conversion".to_string(),
        Some(Trap::AllocationTooLarge) => "memory limit reached".to_string(),
        Some(Trap::Interrupt) => "interrupted".to_string(),
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    };
    RunOutcome::Trapped(what)
}

fn lifecycle_audit(capsule: &str, principal: &str, outcome: &RunOutcome) {
    let (function, error) = match outcome {
        RunOutcome::Completed => return,
        RunOutcome::Trapped(t) => ("astrid:capsule/trap", t.as_str()),
        RunOutcome::Cancelled => ("astrid:capsule/cancel", "cancelled"),
        RunOutcome::InstantiateFailed(t) => ("astrid:capsule/instantiate", t.as_str()),
    };
    tracing::event!(
        target: "astrid.audit.io",
        tracing::Level::INFO,
        capsule_id = capsule,
        principal,
        function,
        outcome = "error",
        elapsed_ns = 0u64,
        error,
    );
}

/// Cancels `token` after `delay`, from a host thread: the `--deadline` watchdog, and
/// the testing package's cancel from the host side.
pub fn cancel_after(token: &CancelToken, delay: Duration) -> wasmtime::Result<()> {
    let token = token.clone();
    let deadline = Instant::now() + delay;
    std::thread::Builder::new().name("astrid-canceller".into()).spawn(move || {
        if wait::wait_any(&[], &token, Some(deadline)) == Err(wait::WaitError::TimedOut) {
            token.cancel();
        }
    })?;
    Ok(())
}
