//! The application's start: find the capsules, load and check each one, run them in the
//! engine with the audit log on the console, and turn every failure into a clear
//! message and an exit status.

use crate::capsule::{self, CapsuleBytes, CapsuleSource, LoadError, SourceError};
use crate::exit::Status;
use crate::manifest::Manifest;
use crate::wasm::{self, HeaderError};

/// Records the audit queue holds before writers wait for the sink.
#[cfg(feature = "engine")]
const AUDIT_QUEUE: usize = 4096;

/// Runs the image's application and returns its exit status. `var` reads environment
/// variables (injected for tests); messages go to stdout (the console).
pub fn main(args: &[String], var: impl Fn(&str) -> Option<String>) -> Status {
    match run(args, &var) {
        Ok(status) | Err(status) => status,
    }
}

fn run(args: &[String], var: &impl Fn(&str) -> Option<String>) -> Result<Status, Status> {
    if let Some(name) = var("ASTRID_BENCH") {
        return match crate::bench::run(&name, var) {
            Some(Ok(line)) => {
                println!("{line}");
                Ok(Status::Ok)
            }
            Some(Err(e)) => Err(fail(Status::Software, &format!("benchmark {name}: {e}"))),
            None => Err(fail(
                Status::Usage,
                &format!("ASTRID_BENCH={name:?}: no such benchmark (futex, futex-timed, wait, memcpy, sink-serial, sink-file)"),
            )),
        };
    }
    let sources = capsule::discover(args, var).map_err(|e| match e {
        SourceError::NoCapsule => fail(Status::Usage, &e),
        _ => fail(Status::Software, &e),
    })?;
    let max = setting(var, "ASTRID_MAX_CAPSULE_BYTES", capsule::DEFAULT_MAX_CAPSULE_BYTES)?;
    let capsules = sources.iter().map(|s| check(s, max, var)).collect::<Result<Vec<_>, _>>()?;
    let manifests = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            manifest_for(i, s, var).map_err(|why| {
                audit_rejection(var, &s.id(), &why);
                fail(Status::DataErr, &why)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    println!("astrid: {} capsule(s) ready", capsules.len());
    if var("ASTRID_CHECK_ONLY").is_some_and(|v| v == "1") {
        println!("astrid: check only (ASTRID_CHECK_ONLY=1): capsules checked, not run");
        return Ok(Status::Ok);
    }
    run_capsules(&capsules, &manifests, var)
}

/// The manifest of capsule `index`: the one the run command sent along
/// (`ASTRID_MANIFEST_<index>`, hex of the TOML text), else — for a capsule given as a
/// file — `<stem>.toml` beside it. The error names the capsule, the manifest and the fix.
fn manifest_for(index: usize, source: &CapsuleSource, var: &impl Fn(&str) -> Option<String>) -> Result<Option<Manifest>, String> {
    let (origin, text) = if let Some(hex) = var(&format!("ASTRID_MANIFEST_{index}")) {
        let text = Manifest::decode(&hex).map_err(|e| format!("capsule {}: ASTRID_MANIFEST_{index} is corrupt ({e}): the run command writes it", source.name()))?;
        (format!("ASTRID_MANIFEST_{index}"), text)
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
fn run_capsules(_: &[CapsuleBytes], _: &[Option<Manifest>], _: &impl Fn(&str) -> Option<String>) -> Result<Status, Status> {
    println!("astrid: this image is built without the engine (the soft-float smoke image): capsules checked, not run");
    Ok(Status::Ok)
}

#[cfg(feature = "engine")]
fn run_capsules(capsules: &[CapsuleBytes], manifests: &[Option<Manifest>], var: &impl Fn(&str) -> Option<String>) -> Result<Status, Status> {
    use std::time::Duration;

    use crate::audit::AuditLog;
    use crate::host::CapsuleLimits;
    use crate::engine::{CapsuleEngine, RunOptions, RunOutcome};
    use crate::wait::CancelToken;

    let mut options = RunOptions::default();
    options.limits = CapsuleLimits {
        memory_bytes: setting(var, "ASTRID_MEMORY_MIB", 64u64)? as usize * (1 << 20),
        handles: setting(var, "ASTRID_HANDLE_QUOTA", options.limits.handles as u64)? as usize,
        kv_bytes: setting(var, "ASTRID_KV_QUOTA_BYTES", options.limits.kv_bytes as u64)? as usize,
        ..options.limits
    };
    if let Some(pairs) = var("ASTRID_CAPSULE_CONFIG") {
        // `;` separates pairs where `,` cannot travel (QEMU's module list).
        for pair in pairs.split([',', ';']).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                fail(Status::Usage, &format!("ASTRID_CAPSULE_CONFIG: {pair:?} is not key=value"))
            })?;
            options.config.insert(k.to_string(), v.to_string());
        }
    }
    if let Some(hex) = var("ASTRID_SEED") {
        let seed = crate::sys::Seed::from_hex(&hex).map_err(|e| fail(Status::Usage, &e))?;
        crate::sys::random::seed(Ok(seed));
    }
    options.kv_dir = var("ASTRID_KV_DIR").map(std::path::PathBuf::from);
    options.test_argument = var("ASTRID_TEST_ARG").unwrap_or_default();
    if let Some(action) = var("ASTRID_HOOK") {
        let payload = match var("ASTRID_HOOK_PAYLOAD") {
            Some(hex) => crate::manifest::hex_decode(&hex)
                .map_err(|e| fail(Status::Usage, &format!("ASTRID_HOOK_PAYLOAD is not hex ({e}): the run command writes it")))?,
            None => Vec::new(),
        };
        options.entry = crate::engine::Entry::Hook { action, payload };
    }
    if let Some(ms) = var("ASTRID_DEADLINE_MS") {
        let ms = ms.parse::<u64>().map_err(|_| fail(Status::Usage, &format!("ASTRID_DEADLINE_MS={ms:?} is not a number of milliseconds")))?;
        options.deadline = Some(Duration::from_millis(ms));
    }

    // The guest's RAM (the run command passes it; unknown means a conservative 256 MiB)
    // bounds what wasmtime may map: capsule memory is capped by that budget too.
    // Capsules run side by side: each gets an equal share of the mapping budget, and
    // every runner thread's stack comes out of the same memory.
    let ram = setting(var, "ASTRID_RAM_MIB", 256)? << 20;
    let n = capsules.len().max(1);
    let budget = crate::platform::set_memory_budget(ram, n * crate::engine::config::RUNNER_STACK);
    let share = (budget / n).saturating_sub(2 << 20);
    if share < options.limits.memory_bytes {
        options.limits.memory_bytes = share;
    }

    let mut engine = CapsuleEngine::new().map_err(|e| fail(Status::Software, &format!("cannot start the engine: {e:#}")))?;
    let (external, publish) = network_settings(var)?;
    engine.set_network(external, &publish).map_err(|e| {
        fail(Status::Software, &format!("cannot publish ports {publish:?} (ASTRID_PUBLISH): {e} — is the port free?"))
    })?;
    let log = match var("ASTRID_AUDIT").as_deref() {
        Some("off") => None,
        _ => Some(AuditLog::start(audit_sink(var)?, AUDIT_QUEUE)),
    };
    let audit = log.as_ref().map(AuditLog::handle);
    // Load every capsule first (compilation is the slow part under TCG), then run them
    // all at once, each in its own store on its own thread: one trapping or being
    // cancelled leaves the others running.
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
                ready.push((capsule, report, id, options));
            }
            Err(e) => {
                let why = format!("capsule {}: cannot be loaded: {e:#}", capsule.name);
                if let Some(audit) = &audit {
                    let _ = audit.record(rejection_event(&capsule.id, &why));
                    let _ = audit.capsule_end(&capsule.id);
                }
                status = worst(status, fail(Status::DataErr, &why));
            }
        }
    }
    let statuses: Vec<Status> = std::thread::scope(|scope| {
        let runs: Vec<_> = ready
            .iter()
            .map(|(capsule, report, id, options)| {
                let (engine, audit) = (&engine, audit.as_ref());
                scope.spawn(move || {
                    let cancel = CancelToken::new();
                    let started = std::time::Instant::now();
                    let outcome = engine.run(id, &report.loaded, options, &cancel, audit);
                    let ran = started.elapsed();
                    match &outcome {
                        RunOutcome::Completed => {
                            let after = if cancel.is_cancelled() { " (shut down after its cancellation)" } else { "" };
                            println!("astrid: capsule {}: completed in {} us{after}", capsule.name, ran.as_micros());
                            Status::Ok
                        }
                        RunOutcome::CompletedSilently => {
                            println!(
                                "astrid: capsule {}: completed in {} us without calling the host — the SDK's empty `run` stub when the capsule has no #[astrid::run] (an interceptor needs --hook ACTION)",
                                capsule.name,
                                ran.as_micros()
                            );
                            Status::Ok
                        }
                        RunOutcome::NoRun => {
                            println!("astrid: capsule {}: exports no `run` (nor `_start`): nothing to run (an interceptor needs --hook ACTION)", capsule.name);
                            Status::Ok
                        }
                        RunOutcome::Answered { action, data } => {
                            let data = data.as_deref().unwrap_or("");
                            println!("astrid: capsule {}: hook answered {action:?} {data:?}", capsule.name);
                            // The SDK's stub answers every action it has no handler for so.
                            if action == "deny" && data.starts_with("unknown hook action") {
                                fail(Status::Usage, &format!("capsule {}: has no handler for that hook action (the SDK's stub answered): check the action name against its #[interceptor]/#[hook] methods", capsule.name))
                            } else {
                                Status::Ok
                            }
                        }
                        RunOutcome::NoHook => fail(
                            Status::Usage,
                            &format!("capsule {}: exports no astrid-hook-trigger: it is not an interceptor (run it without --hook)", capsule.name),
                        ),
                        RunOutcome::Trapped(t) => fail(Status::CapsuleFailed, &format!("capsule {}: trapped: {t}", capsule.name)),
                        RunOutcome::Cancelled => fail(Status::CapsuleCancelled, &format!("capsule {}: cancelled", capsule.name)),
                        RunOutcome::InstantiateFailed(t) => {
                            fail(Status::DataErr, &format!("capsule {}: cannot be instantiated: {t}", capsule.name))
                        }
                    }
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap_or(Status::Software)).collect()
    });
    for s in statuses {
        status = worst(status, s);
    }
    // Connections leaving the image may still be sending what capsules wrote.
    let open = crate::net::sending();
    if open > 0 {
        println!("astrid: waiting for {open} connection(s) to finish sending (at most {} s)", crate::net::DEFAULT_LINGER.as_secs());
        let left = crate::net::drain(crate::net::DEFAULT_LINGER);
        if left > 0 {
            println!("astrid: {left} connection(s) still open after {} s: closing them unsent", crate::net::DEFAULT_LINGER.as_secs());
        }
    }
    match log.map(AuditLog::close) {
        None => println!("astrid: audit off (ASTRID_AUDIT=off)"),
        Some(Ok(n)) => println!("astrid: audit log closed: {n} records"),
        Some(Err(e)) => status = worst(status, fail(Status::Software, &format!("audit log failed: {e}"))),
    }
    Ok(status)
}

/// `ASTRID_NET` (`none`, `restricted`, `outbound`; the run command sets it from
/// `--net`) and `ASTRID_PUBLISH` (loopback ports to accept outside connections for,
/// comma-separated). Hosted mode reaches outside only with `ASTRID_NET=outbound`.
#[cfg(feature = "engine")]
fn network_settings(var: &impl Fn(&str) -> Option<String>) -> Result<(bool, Vec<u16>), Status> {
    let external = match var("ASTRID_NET").as_deref() {
        None => cfg!(target_os = "hermit"),
        Some("none") => false,
        Some("restricted") => cfg!(target_os = "hermit"),
        Some("outbound") => true,
        Some(other) => return Err(fail(Status::Usage, &format!("ASTRID_NET={other:?}: expected none, restricted or outbound"))),
    };
    let mut publish = Vec::new();
    for p in var("ASTRID_PUBLISH").unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
        let port = p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| fail(Status::Usage, &format!("ASTRID_PUBLISH: {p:?} is not a port from 1 to 65535")))?;
        publish.push(port);
    }
    Ok((external, publish))
}

/// The audit sinks: the serial console (unless `ASTRID_AUDIT_SERIAL=off`) and, when
/// `ASTRID_AUDIT_FILE` names one, a file — on `/root`, that is virtio-fs under QEMU and
/// uhyve's file mapping under uhyve.
#[cfg(feature = "engine")]
fn audit_sink(var: &impl Fn(&str) -> Option<String>) -> Result<Box<dyn crate::audit::Sink>, Status> {
    use crate::audit::{ConsoleSink, LinesSink, Sink, TeeSink};
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if var("ASTRID_AUDIT_SERIAL").as_deref() != Some("off") {
        sinks.push(Box::new(ConsoleSink::stdout()));
    }
    if let Some(path) = var("ASTRID_AUDIT_FILE") {
        let file = std::fs::File::create(&path).map_err(|e| {
            fail(
                Status::Software,
                &format!("cannot create the audit file {path}: {e} — under QEMU share a directory as /root (scripts/run --audit-dir DIR), under uhyve map one"),
            )
        })?;
        sinks.push(Box::new(LinesSink::new(file)));
    }
    if sinks.is_empty() {
        return Err(fail(Status::Usage, &"ASTRID_AUDIT_SERIAL=off needs ASTRID_AUDIT_FILE: audit records need a sink (ASTRID_AUDIT=off turns auditing off)"));
    }
    Ok(Box::new(TeeSink::new(sinks)))
}

/// The first failure wins; success never hides one.
#[cfg(feature = "engine")]
fn worst(a: Status, b: Status) -> Status {
    if a == Status::Ok { b } else { a }
}

fn setting(var: &impl Fn(&str) -> Option<String>, name: &str, default: u64) -> Result<u64, Status> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().map_err(|_| fail(Status::Usage, &format!("{name}={v:?} is not a number"))),
    }
}

/// Loads and checks one capsule; a rejection is printed and audited.
fn check(source: &CapsuleSource, max: u64, var: &impl Fn(&str) -> Option<String>) -> Result<CapsuleBytes, Status> {
    check_quietly(source, max).map_err(|(status, why)| {
        audit_rejection(var, &source.id(), &why);
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
fn audit_rejection(var: &impl Fn(&str) -> Option<String>, capsule: &str, why: &str) {
    if var("ASTRID_AUDIT").as_deref() == Some("off") {
        return;
    }
    let Ok(sink) = audit_sink(var) else { return };
    let log = crate::audit::AuditLog::start(sink, 16);
    let handle = log.handle();
    let _ = handle.record(rejection_event(capsule, why));
    let _ = handle.capsule_end(capsule);
    let _ = log.close();
}

#[cfg(not(feature = "engine"))]
fn audit_rejection(_: &impl Fn(&str) -> Option<String>, _: &str, _: &str) {}

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
        assert_eq!(main(&[component.clone()], no_env), Status::Ok);
        let tiny_limit = |k: &str| (k == "ASTRID_MAX_CAPSULE_BYTES").then(|| "4".to_string());
        assert_eq!(main(&[component.clone()], tiny_limit), Status::DataErr);
        let bad_limit = |k: &str| (k == "ASTRID_MAX_CAPSULE_BYTES").then(|| "lots".to_string());
        assert_eq!(main(&[component.clone()], bad_limit), Status::Usage);
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
            assert_eq!(main(&[component.clone()], vars), status, "{key}={value}");
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
}
