//! The capsule engine: wasmtime with the project's one `Config`, a linker holding the
//! host interfaces, and the run of one capsule in its own store on its own thread —
//! memory-capped, cancellable (deadline, host cancel, epoch interruption of pure
//! compute), every trap turned into an audited, clean outcome.

pub mod config;

use std::fmt;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Precompiled, Store, Trap, UpdateDeadline};

pub use config::{CodeTarget, engine_config, fingerprint};

use crate::audit::{AuditHandle, IoEvent, Outcome};
use crate::host::{CapsuleLimits, CapsuleState, Identity, Shared, Spec};
use crate::wait::{self, CancelToken};
use crate::wasm::artifact::{self, Fingerprint, KEY_BYTES};

/// How often the epoch advances: the latency with which a capsule in pure compute
/// notices its cancellation.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The epoch ticker's stack.
const TICKER_STACK: usize = 64 << 10;
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
    /// Of `elapsed`, what checking a precompiled artifact's seal took.
    pub verified_in: Option<Duration>,
    /// The BLAKE3 of the capsule's bytes (for a sealed artifact, from the pass that
    /// checked its seal): what the audit log's load record names.
    pub content: [u8; 32],
}

pub struct CapsuleEngine {
    /// Held for its drop, which stops the ticker thread (first: fields drop in order).
    _ticker: EpochTicker,
    engine: wasmtime::Engine,
    module_linker: wasmtime::Linker<CapsuleState>,
    /// What the capsules of this image share: the message bus and the network.
    shared: Shared,
    /// The deployment's artifact key (`ASTRID_ARTIFACT_KEY`): precompiled artifacts
    /// load only when their seal verifies under it.
    artifact_key: Option<[u8; KEY_BYTES]>,
    /// This engine's fingerprint, which a seal must cover.
    fingerprint: Fingerprint,
}

/// Which of the capsule's exports a run calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Entry {
    /// `run` (the SDK's background entry point; `_start` for plain modules).
    #[default]
    Run,
    /// `astrid-hook-trigger(action, payload)` (the SDK's interceptor entry point).
    Hook { action: String, payload: Vec<u8> },
}

/// How a capsule run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// `run` returned (or there was none to call) — after a cancellation too, if the
    /// capsule shut down within the grace period.
    Completed,
    /// `run` returned without a single host call: the SDK's empty stub (a capsule
    /// without `#[astrid::run]`), or a run that computes and never speaks.
    CompletedSilently,
    /// There is no `run` export at all.
    NoRun,
    /// `astrid-hook-trigger` answered with the SDK's `capsule-result`.
    Answered { action: String, data: Option<String> },
    /// The component exports no `astrid-hook-trigger`.
    NoHook,
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
    /// Topic patterns it may publish to / subscribe within (`None`: all).
    pub ipc_publish: Option<Vec<String>>,
    pub ipc_subscribe: Option<Vec<String>>,
    /// What `astrid:sys` capability queries answer.
    pub capabilities: Vec<String>,
    /// The export to call.
    pub entry: Entry,
    /// Where each capsule's kv store persists (`ASTRID_KV_DIR`), keyed by principal.
    pub kv_dir: Option<std::path::PathBuf>,
    /// What the testing package's `test-argument` answers (`ASTRID_TEST_ARG`).
    pub test_argument: String,
}

impl RunOptions {
    /// These options with a capsule's manifest applied over them.
    pub fn with_manifest(&self, m: &crate::manifest::Manifest) -> RunOptions {
        use crate::net::addr::Pattern;
        let mut o = self.clone();
        let patterns = |list: &[String]| list.iter().filter_map(|p| Pattern::parse(p).ok()).collect::<Vec<_>>();
        if let Some(l) = &m.net_bind {
            o.net_policy.bind = patterns(l);
        }
        if let Some(l) = &m.net_connect {
            o.net_policy.connect = patterns(l);
        }
        if let Some(l) = &m.net_udp {
            let (binds, sends): (Vec<String>, Vec<String>) = l.iter().cloned().partition(|p| p.starts_with("bind:"));
            let binds: Vec<String> = binds.iter().map(|b| b["bind:".len()..].to_string()).collect();
            o.net_policy.udp_bind = patterns(&binds);
            o.net_policy.udp_send = patterns(&sends);
        }
        if let Some(ms) = m.connect_timeout_ms {
            o.net_policy.connect_timeout = o.net_policy.connect_timeout.min(Duration::from_millis(ms));
        }
        o.ipc_publish = m.ipc_publish.clone().or(o.ipc_publish);
        o.ipc_subscribe = m.ipc_subscribe.clone().or(o.ipc_subscribe);
        if let Some(mib) = m.memory_mib {
            o.limits.memory_bytes = o.limits.memory_bytes.min((mib as usize).saturating_mul(1 << 20));
        }
        // A manifest only lowers the image's limits: the operator's settings bound every
        // capsule, whatever its own file asks for.
        if let Some(b) = m.kv_bytes {
            o.limits.kv_bytes = o.limits.kv_bytes.min(usize::try_from(b).unwrap_or(usize::MAX));
        }
        if let Some(h) = m.handles {
            o.limits.handles = o.limits.handles.min(usize::try_from(h).unwrap_or(usize::MAX));
        }
        o.config.extend(m.config.clone());
        o.capabilities = m.capabilities();
        if let Some(name) = &m.name {
            o.principal = Some(name.clone());
        }
        o
    }
}

/// The `[limits]` of a manifest above what the image allows (`options`), each as
/// `key = asked (the image's limit applies: N)`: the console says so, since the
/// image's limit is what holds.
pub fn limits_above_image(options: &RunOptions, m: &crate::manifest::Manifest) -> Vec<String> {
    let mib = 1u64 << 20;
    let image = [
        ("memory_mib", m.memory_mib, options.limits.memory_bytes as u64 / mib),
        ("kv_bytes", m.kv_bytes, options.limits.kv_bytes as u64),
        ("handles", m.handles, options.limits.handles as u64),
        ("connect_timeout_ms", m.connect_timeout_ms, options.net_policy.connect_timeout.as_millis() as u64),
    ];
    image
        .into_iter()
        .filter_map(|(key, asked, limit)| asked.filter(|a| *a > limit).map(|a| format!("{key} = {a} (the image's {limit} applies)")))
        .collect()
}

impl CapsuleEngine {
    /// The engine for code running here. Each component gets a linker of the host
    /// interfaces it imports when it runs (`linker_for`).
    pub fn new() -> wasmtime::Result<Self> {
        let engine = wasmtime::Engine::new(&engine_config(CodeTarget::Native)?)?;
        crate::platform::phases::mark("wasmtime-engine");
        let module_linker = wasmtime::Linker::new(&engine);
        let ticker = EpochTicker::start(engine.weak())?;
        crate::platform::phases::mark("ticker-thread");
        Ok(CapsuleEngine {
            _ticker: ticker,
            engine,
            module_linker,
            shared: Shared::default(),
            artifact_key: None,
            fingerprint: fingerprint(CodeTarget::Native),
        })
    }

    /// The key that precompiled artifacts must be sealed with (`None`: every artifact
    /// is refused, `.wasm` still runs). Call before loading capsules.
    pub fn set_artifact_key(&mut self, key: Option<[u8; KEY_BYTES]>) {
        self.artifact_key = key;
    }

    /// Sets up the image's network: whether connections may leave through a NIC (or
    /// the host's sockets in hosted mode), and which loopback ports to publish on it.
    /// Call before any capsule runs.
    pub fn set_network(&mut self, external: bool, publish: &[u16]) -> std::io::Result<()> {
        let loopback = std::sync::Arc::new(crate::net::local::Loopback::with_published(publish));
        for &port in publish {
            // In the image the NIC's address; in hosted mode the host's loopback.
            let ip = if cfg!(target_os = "hermit") { std::net::Ipv4Addr::UNSPECIFIED } else { std::net::Ipv4Addr::LOCALHOST };
            let lo = loopback.clone();
            crate::net::link::publish(port, ip.into(), move |conn| lo.hand_over(port, conn))?;
        }
        self.shared.network = std::sync::Arc::new(crate::net::Network { loopback, external });
        Ok(())
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// Compiles a `.wasm` (Cranelift, here), or deserializes an artifact precompiled for
    /// this engine by the host's capsule preparation — only once its seal verifies under
    /// the deployment's key (`wasm::artifact`): until then none of its bytes is parsed
    /// as an artifact, let alone mapped executable. A refused artifact's error is an
    /// [`artifact::ArtifactError`].
    pub fn load(&self, bytes: &[u8]) -> wasmtime::Result<LoadReport> {
        let started = Instant::now();
        let opened = artifact::verify(bytes, &self.fingerprint, self.artifact_key.as_ref())?;
        let verified_in = opened.is_some().then(|| started.elapsed());
        crate::platform::phases::mark("seal-checked");
        let content = opened.as_ref().map_or_else(|| *blake3::hash(bytes).as_bytes(), |o| o.content);
        let (loaded, how) = match opened.map(|o| o.payload) {
            Some(payload) => match wasmtime::Engine::detect_precompiled(payload) {
                Some(Precompiled::Component) => {
                    // SAFETY: deserializing maps the artifact's machine code executable,
                    // so it must be what our own precompiler made for this engine: the
                    // seal just verified (a keyed MAC under the deployment's key over this
                    // engine's fingerprint and every payload byte) proves that, and
                    // wasmtime checks the artifact's target, version and settings again.
                    let component = unsafe { Component::deserialize(&self.engine, payload)? };
                    (Loaded::Component(component), "precompiled component")
                }
                Some(Precompiled::Module) => {
                    // SAFETY: as for a component above: sealed by our precompiler for this
                    // engine (the seal verified), checked by wasmtime for target, version
                    // and settings.
                    let module = unsafe { wasmtime::Module::deserialize(&self.engine, payload)? };
                    (Loaded::Module(module), "precompiled module")
                }
                None => wasmtime::bail!("a sealed artifact that holds no wasmtime artifact (the precompiler sealed something else)"),
            },
            None => self.compile(bytes)?,
        };
        crate::platform::phases::mark("deserialized");
        Ok(LoadReport { loaded, how, elapsed: started.elapsed(), verified_in, content })
    }

    /// Compiles a `.wasm` with Cranelift, here.
    #[cfg(feature = "jit")]
    fn compile(&self, bytes: &[u8]) -> wasmtime::Result<(Loaded, &'static str)> {
        Ok(match crate::wasm::inspect(bytes) {
            Ok(h) if h.kind == crate::wasm::WasmKind::Component => (Loaded::Component(Component::new(&self.engine, bytes)?), "compiled component"),
            _ => (Loaded::Module(wasmtime::Module::new(&self.engine, bytes)?), "compiled module"),
        })
    }

    /// This build has no compiler: a `.wasm` must come precompiled.
    #[cfg(not(feature = "jit"))]
    fn compile(&self, _: &[u8]) -> wasmtime::Result<(Loaded, &'static str)> {
        wasmtime::bail!(
            "a .wasm, and astrid.img has no compiler (built without the `jit` feature): it runs only artifacts \
             precompiled and sealed on the host — run it with `scripts/run` (which precompiles it), or with \
             `scripts/run --jit` (which boots astrid-jit.img, the image with Cranelift)"
        )
    }

    /// Starts one capsule's run on a thread of its own in `scope` (the runner, with the
    /// stack a capsule needs), auditing through `audit`; without an audit handle nothing
    /// is recorded (the benchmarks' audit-off side). When the run ends, its lifecycle
    /// records are written and the same thread calls `finish` with the outcome and how
    /// long the run took; the thread's result is what `finish` returns. One thread per
    /// capsule: under TCG every thread's start costs milliseconds.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn_run<'scope, 'env, T: Send + 'scope>(
        &'env self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        name: &'env str,
        loaded: &'env Loaded,
        options: &'env RunOptions,
        cancel: &'env CancelToken,
        audit: Option<&'env AuditHandle>,
        finish: impl FnOnce(RunOutcome, Duration) -> T + Send + 'scope,
    ) -> std::io::Result<std::thread::ScopedJoinHandle<'scope, T>> {
        let principal = options.principal.clone().unwrap_or_else(|| name.to_string());
        let identity = Identity { capsule: name.into(), principal: principal.as_str().into() };
        let runner = identity.clone();
        let spawned = std::thread::Builder::new().name(format!("capsule {name}")).stack_size(config::RUNNER_STACK).spawn_scoped(scope, move || {
            crate::platform::phases::mark("runner-thread");
            let started = Instant::now();
            // A panic in the run is this capsule's trap: its end is still recorded.
            let run = std::panic::AssertUnwindSafe(|| self.run_here(&runner, loaded, options, cancel, audit));
            let outcome = std::panic::catch_unwind(run).unwrap_or_else(|_| RunOutcome::Trapped("the capsule thread panicked".into()));
            let ran = started.elapsed();
            record_end(&runner, &outcome, audit);
            finish(outcome, ran)
        });
        if let Err(e) = &spawned {
            record_end(&identity, &RunOutcome::InstantiateFailed(format!("cannot start the capsule thread: {e}")), audit);
        }
        spawned
    }

    /// One capsule's run on this thread (the runner): its state, its deadline, its store.
    fn run_here(&self, identity: &Identity, loaded: &Loaded, options: &RunOptions, cancel: &CancelToken, audit: Option<&AuditHandle>) -> RunOutcome {
        let spec = Spec {
            identity: identity.clone(),
            cancel: cancel.clone(),
            limits: &options.limits,
            audit: audit.cloned(),
            config: options.config.clone(),
            capabilities: options.capabilities.clone(),
            ipc_publish: options.ipc_publish.clone(),
            ipc_subscribe: options.ipc_subscribe.clone(),
            net_policy: options.net_policy.clone(),
            kv_dir: options.kv_dir.as_deref(),
            test_argument: options.test_argument.clone(),
        };
        match CapsuleState::new(spec, &self.shared) {
            Err(why) => RunOutcome::InstantiateFailed(why),
            Ok(state) => {
                crate::platform::phases::mark("capsule-state");
                let deadline = options.deadline.map(|d| Instant::now().checked_add(d).unwrap_or_else(far_future));
                match options.deadline.map(|d| wait::cancel_after(cancel, d)) {
                    Some(Err(e)) => RunOutcome::InstantiateFailed(format!("cannot start the deadline watchdog: {e}")),
                    _ => {
                        let outcome = self.run_in_store(state, loaded, &options.entry, deadline, audit);
                        crate::platform::phases::mark("store-dropped");
                        outcome
                    }
                }
            }
        }
    }

    /// A linker with the host interfaces `component` imports, and no others: building
    /// the linker is a boot cost under TCG (every interface: ~30 ms), so a capsule pays
    /// only for what it uses. An import the image does not serve stays missing, and
    /// instantiation names it.
    fn linker_for(&self, component: &Component) -> wasmtime::Result<Linker<CapsuleState>> {
        let imports: Vec<String> = component.component_type().imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let mut linker = Linker::new(&self.engine);
        crate::host::add_to_linker_for(&mut linker, |name| imports.iter().any(|i| i == name))?;
        Ok(linker)
    }

    /// Runs the capsule in a store of its own. `deadline` is when its deadline watchdog
    /// cancels it; the epoch callback checks it too, on the capsule's own thread, so a
    /// capsule in pure compute is cancelled on time even if the watchdog thread is slow
    /// to get the CPU from it. On each tick the capsule also lets the audit log's drainer
    /// catch up when its records have waited too long (`AuditHandle::keep_up`): in the
    /// image the drainer runs below the capsules and would otherwise wait for them.
    fn run_in_store(&self, state: CapsuleState, loaded: &Loaded, entry: &Entry, deadline: Option<Instant>, audit: Option<&AuditHandle>) -> RunOutcome {
        let cancel = state.core.cancel.clone();
        let mut store = Store::new(&self.engine, state);
        crate::platform::phases::mark("store");
        store.limiter(|s| s);
        store.set_epoch_deadline(1);
        let watched = cancel.clone();
        let mut cancel_seen: Option<Instant> = None;
        let audit = audit.cloned();
        store.epoch_deadline_callback(move |_| {
            if !watched.is_cancelled() && deadline.is_some_and(|d| Instant::now() >= d) {
                watched.cancel();
            }
            if let Some(audit) = &audit {
                audit.keep_up(&watched);
            }
            if watched.is_cancelled() && cancel_seen.get_or_insert_with(Instant::now).elapsed() >= CANCEL_GRACE {
                return Err(Cancelled.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });
        let result = match loaded {
            Loaded::Component(component) => {
                let linker = self.linker_for(component);
                crate::platform::phases::mark("linker");
                let instance = match linker.and_then(|linker| linker.instantiate(&mut store, component)) {
                    Ok(i) => i,
                    Err(e) => return instantiate_failure(e, &cancel),
                };
                crate::platform::phases::mark("instantiated");
                match entry {
                    Entry::Run => match instance.get_typed_func::<(), ()>(&mut store, "run") {
                        Ok(run) => run.call(&mut store, ()).map(|()| {
                            crate::platform::phases::mark("run-returned");
                            if store.data().core.calls() == 0 { RunOutcome::CompletedSilently } else { RunOutcome::Completed }
                        }),
                        Err(_) => Ok(RunOutcome::NoRun),
                    },
                    Entry::Hook { action, payload } => match instance.get_func(&mut store, "astrid-hook-trigger") {
                        Some(func) => call_hook(&mut store, func, action, payload),
                        None => Ok(RunOutcome::NoHook),
                    },
                }
            }
            Loaded::Module(module) => {
                let instance = match self.module_linker.instantiate(&mut store, module) {
                    Ok(i) => i,
                    Err(e) => return instantiate_failure(e, &cancel),
                };
                if matches!(entry, Entry::Hook { .. }) {
                    return RunOutcome::NoHook;
                }
                let start = ["run", "_start"].into_iter().find_map(|n| instance.get_typed_func::<(), ()>(&mut store, n).ok());
                match start {
                    Some(f) => f.call(&mut store, ()).map(|()| RunOutcome::Completed),
                    None => Ok(RunOutcome::NoRun),
                }
            }
        };
        match result {
            // A capsule that returns after its cancellation shut down gracefully.
            Ok(outcome) => outcome,
            Err(e) => classify(e, &cancel),
        }
    }
}

/// The thread that advances the engine's epoch every `EPOCH_TICK`: what lets a capsule
/// in pure compute notice its cancellation (and its deadline, see `run_in_store`).
///
/// It runs above every capsule thread's priority, so the kernel switches to it whenever
/// its timer fires, however many capsules compute on its CPU. A thread at that priority
/// must never spin on a lock a capsule-priority thread may hold (on one CPU it would
/// spin for ever: the holder never runs again), so it sleeps on a futex word of its own
/// instead of the wait primitive, whose notifier lists are guarded by yielding spin
/// locks, and otherwise touches only atomics.
struct EpochTicker {
    stop: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl EpochTicker {
    fn start(engine: wasmtime::EngineWeak) -> std::io::Result<Self> {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let word = stop.clone();
        // A few atomics and a futex wait: a small stack (thread creation under TCG costs
        // in proportion to it).
        std::thread::Builder::new().name("astrid-epoch".into()).stack_size(TICKER_STACK).spawn(move || {
            crate::platform::run_as_watchdog();
            loop {
                let next = Instant::now() + EPOCH_TICK;
                while let Some(left) = next.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                    if word.load(Ordering::SeqCst) != 0 {
                        return;
                    }
                    crate::platform::futex_wait(&word, 0, Some(left));
                }
                if word.load(Ordering::SeqCst) != 0 {
                    return;
                }
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(1, std::sync::atomic::Ordering::SeqCst);
        crate::platform::futex_wake(&self.stop, u32::MAX);
    }
}

/// An instant no deadline reaches (a century from now).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Calls `astrid-hook-trigger(action, payload)` and reads the `capsule-result` record
/// it returns (dynamically: the export is the SDK's, not in our host world).
fn call_hook(store: &mut Store<CapsuleState>, func: wasmtime::component::Func, action: &str, payload: &[u8]) -> wasmtime::Result<RunOutcome> {
    use wasmtime::component::Val;
    let args = [Val::String(action.to_string()), Val::List(payload.iter().map(|b| Val::U8(*b)).collect())];
    let mut results = [Val::Bool(false)];
    func.call(&mut *store, &args, &mut results)?;
    let Val::Record(fields) = &results[0] else {
        wasmtime::bail!("astrid-hook-trigger returned {:?}, not the SDK's capsule-result record", results[0]);
    };
    let mut answer = (None, None);
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("action", Val::String(a)) => answer.0 = Some(a.clone()),
            ("data", Val::Option(d)) => {
                answer.1 = d.as_deref().map(|v| match v {
                    Val::String(s) => s.clone(),
                    other => format!("{other:?}"),
                })
            }
            _ => {}
        }
    }
    let action = answer.0.ok_or_else(|| wasmtime::format_err!("astrid-hook-trigger's result has no `action` field"))?;
    Ok(RunOutcome::Answered { action, data: answer.1 })
}

fn instantiate_failure(e: wasmtime::Error, cancel: &CancelToken) -> RunOutcome {
    // The whole chain: a linker error says which import is missing at its top.
    let full = format!("{e:#}");
    match classify(e, cancel) {
        RunOutcome::Trapped(_) => RunOutcome::InstantiateFailed(full),
        other => other,
    }
}

/// Names a trap the way a capsule author can act on.
fn classify(e: wasmtime::Error, cancel: &CancelToken) -> RunOutcome {
    if e.downcast_ref::<Cancelled>().is_some() || cancel.is_cancelled() && e.downcast_ref::<Trap>().is_none() {
        return RunOutcome::Cancelled;
    }
    if let Some(m) = e.downcast_ref::<crate::host::MemoryCapReached>() {
        return RunOutcome::Trapped(m.to_string());
    }
    if let Some(q) = e.downcast_ref::<crate::host::QuotaExceeded>() {
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
        // A host-side error (a bad handle, a host function's failure): its root cause is
        // the part a capsule author can act on; the context above it is a wasm backtrace.
        None => e.root_cause().to_string(),
    };
    RunOutcome::Trapped(what)
}

/// Records how `id`'s run ended (where that says more than its calls did) and its end.
fn record_end(id: &Identity, outcome: &RunOutcome, audit: Option<&AuditHandle>) {
    let Some(audit) = audit else { return };
    let recorded = lifecycle_record(id, outcome).map_or(Ok(0), |event| audit.record(event)).and_then(|_| audit.capsule_end(&id.capsule));
    if let Err(e) = recorded {
        // The log's close reports the failure with its own status.
        say!("astrid: capsule {}: its end is not in the audit log: {e}", id.capsule);
    }
}

/// The record of how a capsule's run ended, where it says more than its calls did.
fn lifecycle_record(id: &Identity, outcome: &RunOutcome) -> Option<IoEvent> {
    let (function, outcome, error) = match outcome {
        RunOutcome::Completed | RunOutcome::CompletedSilently | RunOutcome::NoRun => return None,
        RunOutcome::NoHook => ("astrid:guest/astrid-hook-trigger", Outcome::Error, Some("the capsule exports no astrid-hook-trigger")),
        // The call itself is the record; the answer goes to the console.
        RunOutcome::Answered { .. } => ("astrid:guest/astrid-hook-trigger", Outcome::Ok, None),
        RunOutcome::Trapped(t) => ("astrid:capsule/trap", Outcome::Trap, Some(t.as_str())),
        RunOutcome::Cancelled => ("astrid:capsule/cancel", Outcome::Cancelled, Some("cancelled")),
        RunOutcome::InstantiateFailed(t) => ("astrid:capsule/instantiate", Outcome::Error, Some(t.as_str())),
    };
    let mut event = IoEvent::ok(id.capsule.clone(), id.principal.clone(), function, 0);
    event.op.outcome = outcome;
    event.op.error = error.map(|e| crate::host::envelope::clip(e.to_string(), crate::audit::MAX_FIELD_BYTES));
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    /// A capsule's linker holds what it imports, found by interface name: every name
    /// the image's worlds import is one `add_to_linker_for` asks about (a misspelt
    /// one would leave its interface out of every capsule's linker), and it asks
    /// about no other.
    #[test]
    fn the_linker_is_built_from_exactly_the_worlds_import_names() {
        let world = include_str!("../../../wit/world.wit");
        let mut imports: Vec<String> = world
            .lines()
            .filter_map(|l| l.trim().strip_prefix("import ")?.strip_suffix(';').map(str::to_string))
            .collect();
        imports.sort();
        imports.dedup();
        assert!(imports.len() > 10, "{imports:?}");
        let asked = std::cell::RefCell::new(Vec::new());
        let engine = wasmtime::Engine::new(&engine_config(CodeTarget::Native).unwrap()).unwrap();
        let mut linker = Linker::new(&engine);
        crate::host::add_to_linker_for(&mut linker, |name| {
            asked.borrow_mut().push(name.to_string());
            false
        })
        .unwrap();
        let mut asked = asked.into_inner();
        asked.sort();
        assert_eq!(asked, imports);
        // And all of them: the linker every capsule could need builds.
        crate::host::add_to_linker(&mut Linker::new(&engine)).unwrap();
    }

    #[test]
    fn a_manifest_only_lowers_the_images_limits() {
        let image = RunOptions::default();
        let (mem, kv, handles, connect) =
            (image.limits.memory_bytes, image.limits.kv_bytes, image.limits.handles, image.net_policy.connect_timeout);
        let above = Manifest::parse("[limits]\nmemory_mib = 100000\nkv_bytes = 99999999999\nhandles = 1000000\nconnect_timeout_ms = 3600000\n").unwrap();
        let o = image.with_manifest(&above);
        assert_eq!((o.limits.memory_bytes, o.limits.kv_bytes, o.limits.handles, o.net_policy.connect_timeout), (mem, kv, handles, connect));
        let said = limits_above_image(&image, &above);
        assert_eq!(said.len(), 4, "{said:?}");
        assert!(said[2].starts_with("handles = 1000000 (the image's 1024 applies)"), "{said:?}");
        let below = Manifest::parse("[limits]\nmemory_mib = 8\nkv_bytes = 100\nhandles = 7\nconnect_timeout_ms = 50\n").unwrap();
        let o = image.with_manifest(&below);
        assert_eq!((o.limits.memory_bytes, o.limits.kv_bytes, o.limits.handles), (8 << 20, 100, 7));
        assert_eq!(o.net_policy.connect_timeout, Duration::from_millis(50));
        assert!(limits_above_image(&image, &below).is_empty());
    }
}
