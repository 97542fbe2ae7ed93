//! The application's start: take the parsed settings, find the capsules, load and
//! check each one, run them in the engine with the audit log on the console, and turn
//! every failure into a clear message and an exit status.

use crate::capsule::{self, CapsuleBytes, CapsuleSource, LoadError, SourceError};
use crate::exit::Status;
use crate::manifest::Manifest;
use crate::settings::{self, Settings, SettingsError};
use crate::wasm::{self, HeaderError};

/// Records the audit queue holds before writers wait for the sink.
#[cfg(feature = "engine")]
const AUDIT_QUEUE: usize = 4096;
/// Records the queue of a refusal's one-capsule audit log holds.
#[cfg(feature = "engine")]
const REJECTION_QUEUE: usize = 16;
/// Bytes in a MiB, the unit of the memory settings.
#[cfg(feature = "engine")]
const MIB: u64 = 1 << 20;
/// Kept out of each capsule's share of the engine's mapping budget.
#[cfg(feature = "engine")]
const SHARE_HEADROOM: usize = 2 << 20;
/// How long the image waits at exit for connections still sending what capsules wrote.
#[cfg(feature = "engine")]
const EXIT_LINGER: std::time::Duration = crate::net::DEFAULT_LINGER;

/// Runs the image's application with the settings the caller parsed (from the
/// environment, or injected by tests) and returns its exit status; messages go to stdout
/// (the console). The settings become this run's `settings::current()`; refused ones are
/// a usage error.
pub fn main(args: &[String], settings: Result<Settings, SettingsError>) -> Status {
    match settings {
        Ok(settings) => {
            settings::install(settings.clone());
            match run(args, &settings) {
                Ok(status) | Err(status) => status,
            }
        }
        Err(e) => {
            let status = fail(Status::Usage, &e);
            // The exit path still needs what did parse (the debug-exit port).
            settings::install(*e.parsed);
            status
        }
    }
}

/// The steps: a benchmark instead of capsules, else find, check, and run them.
fn run(args: &[String], settings: &Settings) -> Result<Status, Status> {
    if let Some(bench) = settings.bench {
        return run_bench(bench, settings);
    }
    let sources = capsule::discover(args, settings).map_err(|e| match e {
        SourceError::NoCapsule => fail(Status::Usage, &e),
        _ => fail(Status::Software, &e),
    })?;
    let capsules = sources.iter().map(|s| check(s, settings)).collect::<Result<Vec<_>, _>>()?;
    let manifests = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            manifest_for(i, s, settings).map_err(|why| {
                audit_rejection(settings, &s.id(), &why);
                fail(Status::DataErr, &why)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    println!("astrid: {} capsule(s) ready", capsules.len());
    if settings.check_only.0 {
        println!("astrid: check only ({}=1): capsules checked, not run", settings::CHECK_ONLY);
        return Ok(Status::Ok);
    }
    run_capsules(&capsules, &manifests, settings)
}

/// Runs a native baseline benchmark and prints its line.
fn run_bench(bench: settings::Benchmark, settings: &Settings) -> Result<Status, Status> {
    let audit_file = settings.audit_file.as_ref().map(|p| p.0.as_path());
    let line = crate::bench::run(bench, audit_file).map_err(|e| fail(Status::Software, &format!("benchmark {bench}: {e}")))?;
    println!("{line}");
    Ok(Status::Ok)
}

/// The manifest of capsule `index`: the one the run command sent along
/// (`ASTRID_MANIFEST_<index>`, hex of the TOML text), else — for a capsule given as a
/// file — `<stem>.toml` beside it. The error names the capsule, the manifest and the fix.
fn manifest_for(index: usize, source: &CapsuleSource, settings: &Settings) -> Result<Option<Manifest>, String> {
    let (origin, text) = if let Some(hex) = settings.manifests.get(&index) {
        let var = settings::MANIFEST.name(index);
        let text = Manifest::decode(hex).map_err(|e| format!("capsule {}: {var} is corrupt ({e}): the run command writes it", source.name()))?;
        (var, text)
    } else if let CapsuleSource::File(path) = source {
        match crate::manifest::path_for(path) {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|e| format!("capsule {}: cannot read its manifest {}: {e}", source.name(), p.display()))?;
                (p.display().to_string(), text)
            }
            None => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    let manifest = Manifest::parse(&text).map_err(|e| format!("capsule {}: manifest {origin}: {e}", source.name()))?;
    let ignored = if manifest.ignored.is_empty() { String::new() } else { format!("; not enforced here: {}", manifest.ignored.join(", ")) };
    println!(
        "astrid: capsule {}: manifest {origin} ({} capabilities{ignored})",
        source.name(),
        manifest.capabilities().len()
    );
    Ok(Some(manifest))
}

#[cfg(not(feature = "engine"))]
fn run_capsules(_: &[CapsuleBytes], _: &[Option<Manifest>], _: &Settings) -> Result<Status, Status> {
    println!("astrid: this image is built without the engine (the soft-float smoke image): capsules checked, not run");
    Ok(Status::Ok)
}

/// Runs the checked capsules: the engine, the audit log, every capsule loaded, then all
/// run side by side, the network drained, the audit log closed.
#[cfg(feature = "engine")]
fn run_capsules(capsules: &[CapsuleBytes], manifests: &[Option<Manifest>], settings: &Settings) -> Result<Status, Status> {
    let mut options = run_options(settings);
    seed_randomness(settings)?;
    fit_memory(&mut options, settings, capsules.len());
    let engine = start_engine(settings)?;
    let log = start_audit(settings)?;
    let audit = log.as_ref().map(crate::audit::AuditLog::handle);
    let (ready, loading) = load_all(&engine, capsules, manifests, &options, audit.as_ref());
    let running = run_all(&engine, &ready, audit.as_ref());
    drain_network();
    let closing = close_audit(log);
    // A failed audit sink is the run's verdict: the capsules' own statuses (cancelled,
    // trapped on a refused record) follow from it.
    if closing == Status::AuditFailed {
        return Ok(closing);
    }
    Ok(worst(worst(loading, running), closing))
}

/// The options every capsule starts from (its manifest then narrows them).
#[cfg(feature = "engine")]
fn run_options(settings: &Settings) -> crate::engine::RunOptions {
    use crate::engine::{Entry, RunOptions};
    use crate::host::CapsuleLimits;
    RunOptions {
        limits: CapsuleLimits {
            memory_bytes: settings.memory_mib.0.saturating_mul(MIB) as usize,
            handles: settings.handle_quota.0 as usize,
            kv_bytes: settings.kv_quota_bytes.0 as usize,
        },
        config: settings.capsule_config.0.iter().cloned().collect(),
        kv_dir: settings.kv_dir.as_ref().map(|p| p.0.clone()),
        test_argument: settings.test_arg.clone(),
        entry: match &settings.hook {
            Some(action) => Entry::Hook { action: action.clone(), payload: settings.hook_payload.0.clone() },
            None => Entry::Run,
        },
        deadline: settings.deadline_ms.map(|ms| std::time::Duration::from_millis(ms.0)),
        ..RunOptions::default()
    }
}

/// Installs the host's seed, if it passed one (hosted mode seeds itself).
#[cfg(feature = "engine")]
fn seed_randomness(settings: &Settings) -> Result<(), Status> {
    if let Some(seed) = &settings.seed {
        let seed = crate::sys::Seed::from_hex(&seed.to_string()).map_err(|e| fail(Status::Usage, &e))?;
        crate::sys::random::seed(Ok(seed));
    }
    Ok(())
}

/// The guest's RAM (`ASTRID_RAM_MIB`) bounds what wasmtime may map, so capsule memory is
/// capped by that budget too. Capsules run side by side: each gets an equal share of the
/// mapping budget, and every runner thread's stack comes out of the same memory.
#[cfg(feature = "engine")]
fn fit_memory(options: &mut crate::engine::RunOptions, settings: &Settings, capsules: usize) {
    let n = capsules.max(1);
    let budget = crate::platform::set_memory_budget(settings.ram_mib.0.saturating_mul(MIB), n * crate::engine::config::RUNNER_STACK);
    let share = (budget / n).saturating_sub(SHARE_HEADROOM);
    options.limits.memory_bytes = options.limits.memory_bytes.min(share);
}

/// The engine, with the network the settings ask for.
#[cfg(feature = "engine")]
fn start_engine(settings: &Settings) -> Result<crate::engine::CapsuleEngine, Status> {
    let mut engine =
        crate::engine::CapsuleEngine::new().map_err(|e| fail(Status::Software, &format!("cannot start the engine: {e:#}")))?;
    let publish = &settings.publish.0;
    engine.set_network(settings.net.external(), publish).map_err(|e| {
        fail(Status::Software, &format!("cannot publish ports {publish:?} ({}): {e} — is the port free?", settings::PUBLISH))
    })?;
    Ok(engine)
}

/// The audit log, unless auditing is off.
#[cfg(feature = "engine")]
fn start_audit(settings: &Settings) -> Result<Option<crate::audit::AuditLog>, Status> {
    if !settings.audit.is_on() {
        return Ok(None);
    }
    let log = crate::audit::AuditLog::start_with(audit_chain(settings), audit_sink(settings)?, AUDIT_QUEUE);
    put_unwritten_records_on_panic(log.handle());
    Ok(Some(log))
}

/// A panic anywhere in the image would lose the records still queued for the sink: the
/// hook puts them on the serial console first (framed as the console sink frames them),
/// then lets the panic go on.
#[cfg(feature = "engine")]
fn put_unwritten_records_on_panic(audit: crate::audit::AuditHandle) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(lines) = audit.unwritten() {
            for line in lines {
                println!("{}", crate::audit::frame(&line));
            }
        }
        previous(info);
    }));
}

/// A fresh audit chain bound to this run: the host's nonce (`ASTRID_RUN_NONCE`; without
/// one, 32 bytes of the image's own randomness, else a process-unique value) and this
/// build, signed with the deployment's key when the host passed one (`ASTRID_AUDIT_KEY`).
#[cfg(feature = "engine")]
fn audit_chain(settings: &Settings) -> crate::audit::Chain {
    use crate::audit::{Chain, RunBinding, SigningKey};
    let build = crate::audit::build_identity();
    let nonce = settings.run_nonce.as_ref().map(|n| n.0).or_else(|| {
        crate::sys::random::bytes(32).ok().and_then(|b| <[u8; 32]>::try_from(b).ok())
    });
    let binding = match nonce {
        Some(nonce) => RunBinding { nonce, build },
        None => RunBinding::local(&build),
    };
    let chain = Chain::new().bind(binding);
    match &settings.audit_key {
        Some(key) => chain.sign_with(SigningKey::from_bytes(&key.0)),
        None => chain,
    }
}

/// A capsule the engine loaded, with the identity and options it runs under.
#[cfg(feature = "engine")]
struct Ready<'a> {
    capsule: &'a CapsuleBytes,
    report: crate::engine::LoadReport,
    id: String,
    options: crate::engine::RunOptions,
}

/// Loads every capsule first (compilation is the slow part under TCG); a capsule that
/// cannot be loaded is reported, audited and left out. Returns the loaded ones and the
/// status so far.
#[cfg(feature = "engine")]
fn load_all<'a>(
    engine: &crate::engine::CapsuleEngine,
    capsules: &'a [CapsuleBytes],
    manifests: &[Option<Manifest>],
    options: &crate::engine::RunOptions,
    audit: Option<&crate::audit::AuditHandle>,
) -> (Vec<Ready<'a>>, Status) {
    let mut status = Status::Ok;
    let mut ready = Vec::new();
    for (capsule, manifest) in capsules.iter().zip(manifests) {
        match engine.load(&capsule.bytes) {
            Ok(report) => {
                println!("astrid: capsule {}: {} in {} us", capsule.name, report.how, report.elapsed.as_micros());
                let (id, options) = match manifest {
                    Some(m) => (m.name.clone().unwrap_or_else(|| capsule.id.clone()), options.with_manifest(m)),
                    None => (capsule.id.clone(), options.clone()),
                };
                if let Some(audit) = audit {
                    let text = manifest.as_ref().map(|m| m.text.as_str());
                    let principal = options.principal.as_deref().unwrap_or(&id);
                    if let Err(e) = audit.capsule_load(&id, principal, &capsule.bytes, text) {
                        // Not run unaudited: the log's close reports the failure.
                        status = worst(status, fail(Status::Software, &format!("capsule {}: its load is not in the audit log: {e}", capsule.name)));
                        continue;
                    }
                }
                ready.push(Ready { capsule, report, id, options });
            }
            Err(e) => {
                let why = format!("capsule {}: cannot be loaded: {e:#}", capsule.name);
                if let Some(audit) = audit {
                    let recorded = audit.record(rejection_event(&capsule.id, &why)).and_then(|_| audit.capsule_end(&capsule.id));
                    if let Err(e) = recorded {
                        // The log's close reports the failure with its own status.
                        println!("astrid: capsule {}: its refusal is not in the audit log: {e}", capsule.name);
                    }
                }
                status = worst(status, fail(Status::DataErr, &why));
            }
        }
    }
    (ready, status)
}

/// Runs every loaded capsule at once, each in its own store on its own thread: one
/// trapping or being cancelled leaves the others running. The first failure's status.
#[cfg(feature = "engine")]
fn run_all(engine: &crate::engine::CapsuleEngine, ready: &[Ready], audit: Option<&crate::audit::AuditHandle>) -> Status {
    use crate::wait::CancelToken;
    let cancels: Vec<CancelToken> = ready.iter().map(|_| CancelToken::new()).collect();
    let all_ended = CancelToken::new();
    let statuses: Vec<Status> = std::thread::scope(|scope| {
        if let Some(audit) = audit {
            // Fail-closed: when the audit log's sink fails, no capsule goes on unrecorded.
            let (failure, cancels, all_ended) = (audit.failure(), &cancels, &all_ended);
            scope.spawn(move || {
                if crate::wait::wait_any(&[&failure as &dyn crate::wait::Readiness, all_ended], &CancelToken::new(), None).is_ok() && failure.is_cancelled() {
                    println!("astrid: the audit log's sink failed: every capsule is cancelled");
                    cancels.iter().for_each(CancelToken::cancel);
                }
            });
        }
        let runs: Vec<_> = ready
            .iter()
            .zip(&cancels)
            .map(|(r, cancel)| {
                scope.spawn(move || {
                    let started = std::time::Instant::now();
                    let outcome = engine.run(&r.id, &r.report.loaded, &r.options, cancel, audit);
                    report_outcome(&r.capsule.name, &outcome, started.elapsed(), cancel.is_cancelled())
                })
            })
            .collect();
        let statuses = runs.into_iter().map(|h| h.join().unwrap_or(Status::Software)).collect();
        all_ended.cancel();
        statuses
    });
    statuses.into_iter().fold(Status::Ok, worst)
}

/// Says how a capsule's run ended, and what status that is.
#[cfg(feature = "engine")]
fn report_outcome(name: &str, outcome: &crate::engine::RunOutcome, ran: std::time::Duration, cancelled: bool) -> Status {
    use crate::engine::RunOutcome;
    match outcome {
        RunOutcome::Completed => {
            let after = if cancelled { " (shut down after its cancellation)" } else { "" };
            println!("astrid: capsule {name}: completed in {} us{after}", ran.as_micros());
            Status::Ok
        }
        RunOutcome::CompletedSilently => {
            println!(
                "astrid: capsule {name}: completed in {} us without calling the host — the SDK's empty `run` stub when the capsule has no #[astrid::run] (an interceptor needs --hook ACTION)",
                ran.as_micros()
            );
            Status::Ok
        }
        RunOutcome::NoRun => {
            println!("astrid: capsule {name}: exports no `run` (nor `_start`): nothing to run (an interceptor needs --hook ACTION)");
            Status::Ok
        }
        RunOutcome::Answered { action, data } => {
            let data = data.as_deref().unwrap_or("");
            println!("astrid: capsule {name}: hook answered {action:?} {data:?}");
            // The SDK's stub answers every action it has no handler for so.
            if action == "deny" && data.starts_with("unknown hook action") {
                fail(Status::Usage, &format!("capsule {name}: has no handler for that hook action (the SDK's stub answered): check the action name against its #[interceptor]/#[hook] methods"))
            } else {
                Status::Ok
            }
        }
        RunOutcome::NoHook => fail(
            Status::Usage,
            &format!("capsule {name}: exports no astrid-hook-trigger: it is not an interceptor (run it without --hook)"),
        ),
        RunOutcome::Trapped(t) => fail(Status::CapsuleFailed, &format!("capsule {name}: trapped: {t}")),
        RunOutcome::Cancelled => fail(Status::CapsuleCancelled, &format!("capsule {name}: cancelled")),
        RunOutcome::InstantiateFailed(t) => fail(Status::DataErr, &format!("capsule {name}: cannot be instantiated: {t}")),
    }
}

/// Connections leaving the image may still be sending what capsules wrote: give them
/// [`EXIT_LINGER`].
#[cfg(feature = "engine")]
fn drain_network() {
    let open = crate::net::sending();
    if open == 0 {
        return;
    }
    println!("astrid: waiting for {open} connection(s) to finish sending (at most {} s)", EXIT_LINGER.as_secs());
    let left = crate::net::drain(EXIT_LINGER);
    if left > 0 {
        println!("astrid: {left} connection(s) still open after {} s: closing them unsent", EXIT_LINGER.as_secs());
    }
}

/// Closes the audit log (its close record is the last one).
#[cfg(feature = "engine")]
fn close_audit(log: Option<crate::audit::AuditLog>) -> Status {
    match log.map(crate::audit::AuditLog::close) {
        None => {
            println!("astrid: audit off ({}=off)", settings::AUDIT);
            Status::Ok
        }
        Some(Ok(n)) => {
            println!("astrid: audit log closed: {n} records");
            Status::Ok
        }
        Some(Err(e @ crate::audit::AuditError::SinkFailed(_))) => fail(Status::AuditFailed, &format!("audit log failed: {e}")),
        Some(Err(e)) => fail(Status::Software, &format!("audit log failed: {e}")),
    }
}

/// The audit sinks: the serial console (unless `ASTRID_AUDIT_SERIAL=off`) and, when
/// `ASTRID_AUDIT_FILE` names one, a file — on `/root`, that is virtio-fs under QEMU and
/// uhyve's file mapping under uhyve.
#[cfg(feature = "engine")]
fn audit_sink(settings: &Settings) -> Result<Box<dyn crate::audit::Sink>, Status> {
    use crate::audit::{ConsoleSink, LinesSink, Sink, TeeSink};
    let mut sinks: Vec<(String, Box<dyn Sink>)> = Vec::new();
    if settings.audit_serial.is_on() {
        sinks.push(("serial console".into(), Box::new(ConsoleSink::stdout())));
    }
    if let Some(path) = &settings.audit_file.clone().or_else(|| mapped_audit_dir(settings)) {
        let file = std::fs::File::create(&path.0).map_err(|e| {
            fail(
                Status::Software,
                &format!("cannot create the audit file {path}: {e} — under QEMU share a directory as /root (scripts/run --audit-dir DIR), under uhyve map one"),
            )
        })?;
        sinks.push((format!("file {path}"), Box::new(LinesSink::new(file))));
    }
    if sinks.is_empty() {
        return Err(fail(
            Status::Usage,
            &format!(
                "{}=off needs {}: audit records need a sink ({}=off turns auditing off)",
                settings::AUDIT_SERIAL,
                settings::AUDIT_FILE,
                settings::AUDIT
            ),
        ));
    }
    Ok(Box::new(TeeSink::new(sinks)))
}

/// `ASTRID_AUDIT_DIR/audit.log` when that directory exists in the guest (uhyve answers an
/// unmapped path with an error here, but would create a file in its own temporary
/// directory for it, so existence is checked by opening the directory, not by creating).
#[cfg(feature = "engine")]
fn mapped_audit_dir(settings: &Settings) -> Option<settings::GuestPath> {
    let dir = &settings.audit_dir.as_ref()?.0;
    let exists = std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) || std::fs::File::open(dir).is_ok();
    if exists {
        println!("astrid: audit directory {} is there: the audit log goes to its audit.log too", dir.display());
    } else {
        println!("astrid: audit directory {} is not there (not mapped): the audit log goes to the console only", dir.display());
    }
    exists.then(|| settings::GuestPath(dir.join("audit.log")))
}

/// The first failure wins; success never hides one.
#[cfg(feature = "engine")]
fn worst(a: Status, b: Status) -> Status {
    if a == Status::Ok { b } else { a }
}

/// Loads and checks one capsule; a rejection is printed and audited.
fn check(source: &CapsuleSource, settings: &Settings) -> Result<CapsuleBytes, Status> {
    check_quietly(source, settings.max_capsule_bytes.0).map_err(|(status, why)| {
        audit_rejection(settings, &source.id(), &why);
        fail(status, &why)
    })
}

fn check_quietly(source: &CapsuleSource, max: u64) -> Result<CapsuleBytes, (Status, String)> {
    let loaded = capsule::load(source, max).map_err(|e| {
        let status = match e {
            LoadError::NotFound { .. } | LoadError::CannotOpen { .. } | LoadError::Unreadable { .. } => {
                Status::NoInput
            }
            LoadError::TooLarge { .. } => Status::DataErr,
            LoadError::NoBootModules { .. } => Status::Software,
        };
        (status, e.to_string())
    })?;
    let origin = match source {
        CapsuleSource::BootModule { addr, .. } => format!("boot module at {addr:#x}"),
        CapsuleSource::File(_) => "file".to_string(),
    };
    let kind = match precompiled_kind(&loaded.bytes) {
        Some(kind) => kind.to_string(),
        None => {
            let header = wasm::inspect(&loaded.bytes)
                .map_err(|e: HeaderError| (Status::DataErr, format!("capsule {}: {e}", loaded.name)))?;
            format!("wasm {} (binary version {:#x})", header.kind, header.version)
        }
    };
    println!("astrid: capsule {}: {kind}, {} bytes, from {origin}", loaded.name, loaded.bytes.len());
    Ok(loaded)
}

/// The audit record of a capsule the image refused before running it.
#[cfg(feature = "engine")]
fn rejection_event(capsule: &str, why: &str) -> crate::audit::IoEvent {
    let mut event = crate::audit::IoEvent::ok(capsule, capsule, "astrid:capsule/load", 0);
    event.outcome = crate::audit::Outcome::Error;
    event.error = Some(why.chars().take(crate::audit::MAX_FIELD_BYTES).collect());
    event
}

/// A capsule refused while checking (before any engine exists) still leaves an audit
/// trail: a one-capsule log with the refusal, its end, and the close record.
#[cfg(feature = "engine")]
fn audit_rejection(settings: &Settings, capsule: &str, why: &str) {
    if !settings.audit.is_on() {
        return;
    }
    let Ok(sink) = audit_sink(settings) else { return };
    let log = crate::audit::AuditLog::start_with(audit_chain(settings), sink, REJECTION_QUEUE);
    let handle = log.handle();
    let recorded = handle.record(rejection_event(capsule, why)).and_then(|_| handle.capsule_end(capsule)).and_then(|_| log.close());
    if let Err(e) = recorded {
        // The refusal's own status stands; the missing record is said, not hidden.
        println!("astrid: the refusal of {capsule:?} could not be audited: {e}");
    }
}

#[cfg(not(feature = "engine"))]
fn audit_rejection(_: &Settings, _: &str, _: &str) {}

/// What a host-precompiled artifact holds, if `bytes` is one.
#[cfg(feature = "engine")]
fn precompiled_kind(bytes: &[u8]) -> Option<&'static str> {
    match wasmtime::Engine::detect_precompiled(bytes)? {
        wasmtime::Precompiled::Component => Some("precompiled component"),
        wasmtime::Precompiled::Module => Some("precompiled module"),
    }
}

#[cfg(not(feature = "engine"))]
fn precompiled_kind(bytes: &[u8]) -> Option<&'static str> {
    bytes.starts_with(b"\x7fELF").then_some("precompiled artifact")
}

fn fail(status: Status, what: &dyn std::fmt::Display) -> Status {
    println!("astrid: error: {what}");
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// `launch::main` with the settings a lookup function answers.
    fn main(args: &[String], var: impl Fn(&str) -> Option<String>) -> Status {
        super::main(args, Settings::from_vars(var))
    }

    fn temp_file(name: &str, bytes: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("astrid-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }

    /// The smallest component: no imports, no exports.
    const EMPTY_COMPONENT: &[u8] = &[0, 0x61, 0x73, 0x6d, 0x0d, 0, 1, 0];

    #[test]
    fn statuses_follow_the_kind_of_mistake() {
        assert_eq!(main(&[], no_env), Status::Usage);
        assert_eq!(main(&["/nonexistent/x.wasm".into()], no_env), Status::NoInput);
        assert_eq!(main(&[temp_file("empty.wasm", b"")], no_env), Status::DataErr);
        assert_eq!(main(&[temp_file("elf.wasm", b"\x7fELF\x02\x01\x01\0")], no_env), Status::DataErr);
        let component = temp_file("ok.wasm", EMPTY_COMPONENT);
        assert_eq!(main(std::slice::from_ref(&component), no_env), Status::Ok);
        let tiny_limit = |k: &str| (k == "ASTRID_MAX_CAPSULE_BYTES").then(|| "4".to_string());
        assert_eq!(main(std::slice::from_ref(&component), tiny_limit), Status::DataErr);
        let bad_limit = |k: &str| (k == "ASTRID_MAX_CAPSULE_BYTES").then(|| "lots".to_string());
        assert_eq!(main(std::slice::from_ref(&component), bad_limit), Status::Usage);
        // Settings of this milestone: each bad value is a usage error or a refused capsule.
        for (key, value, status) in [
            ("ASTRID_NET", "everywhere", Status::Usage),
            ("ASTRID_PUBLISH", "0", Status::Usage),
            ("ASTRID_PUBLISH", "http", Status::Usage),
            ("ASTRID_HOOK_PAYLOAD", "zz", Status::Usage),
            ("ASTRID_MANIFEST_0", "zz", Status::DataErr),
            ("ASTRID_MANIFEST_0", &crate::manifest::Manifest::encode("[limits]\nmemory_mib = 0\n"), Status::DataErr),
        ] {
            let vars = |k: &str| match k {
                "ASTRID_HOOK" => (key == "ASTRID_HOOK_PAYLOAD").then(|| "greet".to_string()),
                k if k == key => Some(value.to_string()),
                _ => None,
            };
            assert_eq!(main(std::slice::from_ref(&component), vars), status, "{key}={value}");
        }
    }

    #[test]
    fn a_boot_module_announcement_in_hosted_mode_is_an_internal_error() {
        let vars = |k: &str| match k {
            "ASTRID_CAPSULES" => Some("1".to_string()),
            "ASTRID_CAPSULE_0" => Some("0x100000,8,x.wasm".to_string()),
            _ => None,
        };
        assert_eq!(main(&[], vars), Status::Software);
    }

    #[test]
    fn an_unknown_setting_is_a_usage_error() {
        let component = temp_file("ok-unknown.wasm", EMPTY_COMPONENT);
        let pairs = [("ASTRID_AUDITING".to_string(), "off".to_string())];
        assert_eq!(super::main(&[component], Settings::from_env_pairs(pairs)), Status::Usage);
    }
}
