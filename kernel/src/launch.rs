//! The application's start: take the parsed settings, find the capsules, load and
//! check each one, run them in the engine with the audit log on the console, and turn
//! every failure into a clear message and an exit status.

use crate::capsule::{self, CapsuleBytes, CapsuleSource, LoadError, SourceError};
use crate::exit::Status;
use crate::manifest::{BootCapsule, Manifest, PublishError};
use crate::settings::{self, Settings, SettingsError};
use crate::wasm::{self, HeaderError};

/// Records the audit queue holds unwritten before writers wait for the sink; a
/// capsule's own records may take half (`audit::queue`'s share): 4,096, so a burst of
/// that many host calls never waits for the log (the drainer seals it behind the
/// capsule).
#[cfg(feature = "engine")]
const AUDIT_QUEUE: usize = 8192;
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
/// Stack of the thread that only waits (on the audit sink's failure): under TCG a
/// thread's creation costs in proportion to its stack (the kernel maps and clears it
/// page by page).
#[cfg(feature = "engine")]
const WAITER_STACK: usize = 256 << 10;

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
    crate::platform::phases::mark("discovered");
    let capsules = sources.iter().map(|s| check(s, settings)).collect::<Result<Vec<_>, _>>()?;
    crate::platform::phases::mark("checked");
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
    let foreign_ports = check_identities(&sources, &manifests, settings)?;
    say!("astrid: {} capsule(s) ready", capsules.len());
    crate::platform::phases::mark("ready");
    if settings.check_only.0 {
        say!("astrid: check only ({}=1): capsules checked, not run", settings::CHECK_ONLY);
        return Ok(Status::Ok);
    }
    run_capsules(&capsules, &manifests, &foreign_ports, settings)
}

/// What holds between the capsules of one boot: each acts for its own principal (a
/// duplicate is refused, 65, naming both), and each published port goes to the one
/// capsule whose manifest binds it. Returns the published ports each capsule must not
/// bind.
fn check_identities(sources: &[CapsuleSource], manifests: &[Option<Manifest>], settings: &Settings) -> Result<Vec<Vec<u16>>, Status> {
    let (names, ids): (Vec<String>, Vec<String>) = sources.iter().map(|s| (s.name(), s.id())).unzip();
    let boot: Vec<BootCapsule<'_>> =
        (0..sources.len()).map(|i| BootCapsule { name: &names[i], id: &ids[i], manifest: manifests[i].as_ref() }).collect();
    crate::manifest::unique_principals(&boot).map_err(|(i, why)| {
        audit_rejection(settings, boot[i].principal(), &why);
        fail(Status::DataErr, &why)
    })?;
    crate::manifest::published_port_owners(&settings.publish.0, &boot).map_err(|e| match e {
        PublishError::Contested { capsule, why } => {
            audit_rejection(settings, boot[capsule].principal(), &why);
            fail(Status::DataErr, &why)
        }
        PublishError::Unclaimed(why) => fail(Status::Usage, &format!("{}: {why}", settings::PUBLISH)),
    })
}

/// Runs a native baseline benchmark and prints its line.
fn run_bench(bench: settings::Benchmark, settings: &Settings) -> Result<Status, Status> {
    let audit_file = settings.audit_file.as_ref().map(|p| p.0.as_path());
    // The sink benchmarks seal into the chain the image's own log starts with: bound to
    // the run, and signed when the host passed a key (as the run command always does).
    #[cfg(feature = "engine")]
    let chain = audit_chain(settings);
    #[cfg(not(feature = "engine"))]
    let chain = crate::audit::Chain::new();
    let line = crate::bench::run(bench, audit_file, chain).map_err(|e| fail(Status::Software, &format!("benchmark {bench}: {e}")))?;
    say!("{line}");
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
    let ignored = if manifest.ignored.is_empty() {
        String::new()
    } else {
        // Keys are the manifest's text: labelled, each one.
        let keys: Vec<String> = manifest.ignored.iter().map(|k| crate::audit::Untrusted(k).to_string()).collect();
        format!("; not enforced here: {}", keys.join(", "))
    };
    say!(
        "astrid: capsule {}: manifest {origin} ({} capabilities{ignored})",
        source.name(),
        manifest.capabilities().len()
    );
    Ok(Some(manifest))
}

#[cfg(not(feature = "engine"))]
fn run_capsules(_: &[CapsuleBytes], _: &[Option<Manifest>], _: &[Vec<u16>], _: &Settings) -> Result<Status, Status> {
    say!("astrid: this image is built without the engine (the soft-float smoke image): capsules checked, not run");
    Ok(Status::Ok)
}

/// Runs the checked capsules: the engine, the audit log, every capsule loaded, then all
/// run side by side, the network drained, the audit log closed.
#[cfg(feature = "engine")]
fn run_capsules(capsules: &[CapsuleBytes], manifests: &[Option<Manifest>], foreign_ports: &[Vec<u16>], settings: &Settings) -> Result<Status, Status> {
    let mut options = run_options(settings);
    seed_randomness(settings)?;
    let mapping_budget = fit_memory(&mut options, settings, capsules.len());
    let mut each: Vec<crate::engine::RunOptions> = manifests
        .iter()
        .zip(foreign_ports)
        .map(|(manifest, foreign)| {
            let mut o = manifest.as_ref().map_or_else(|| options.clone(), |m| options.with_manifest(m));
            o.net_policy.foreign_published = foreign.clone();
            o
        })
        .collect();
    // Where the platform bounds what may be mapped, it bounds the heap too (hosted: the
    // host's own memory, no budget of ours).
    if mapping_budget != usize::MAX {
        fit_heap(&mut each, capsules, settings)?;
    }
    crate::platform::phases::mark("fitted");
    let engine = start_engine(settings)?;
    crate::platform::phases::mark("network");
    let log = start_audit(settings)?;
    crate::platform::phases::mark("audit-started");
    let audit = log.as_ref().map(crate::audit::AuditLog::handle);
    report_panics(audit.clone());
    let (ready, loading) = load_all(&engine, capsules, manifests, each, &options, audit.as_ref());
    crate::platform::phases::mark("loaded-all");
    let running = run_all(&engine, &ready, audit.as_ref());
    crate::platform::phases::mark("ran-all");
    drain_network();
    let closing = close_audit(log);
    crate::platform::phases::mark("audit-closed");
    if cfg!(target_os = "hermit") {
        // The image exits next: unmapping the capsules' code and the engine would be
        // work the exit throws away (~4 ms under TCG). Hosted mode, where tests boot
        // many times in one process, drops them.
        std::mem::forget(ready);
        std::mem::forget(engine);
    }
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
            ..CapsuleLimits::default()
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
fn fit_memory(options: &mut crate::engine::RunOptions, settings: &Settings, capsules: usize) -> usize {
    let n = capsules.max(1);
    let budget = crate::platform::set_memory_budget(settings.ram_mib.0.saturating_mul(MIB), n * crate::engine::config::RUNNER_STACK);
    let share = (budget / n).saturating_sub(SHARE_HEADROOM);
    options.limits.memory_bytes = options.limits.memory_bytes.min(share);
    budget
}

/// Where the kernel's image ends in guest RAM, at most: the loaded application (about
/// 20 MiB) with its data and the loader's structures. Kernel 0.11 (feature `mmap`) makes
/// 75% of the RAM above it its heap; the capsules' boot modules lie below it.
#[cfg(feature = "engine")]
const IMAGE_ALLOWANCE: u64 = 32 << 20;
/// Heap the image needs for itself before any capsule causes anything: the kernel's own
/// structures (tasks, virtio queues, sockets), the engine with its linker, and a capsule
/// compiled and run in it. Measured: a hosted run of the io-probe victim scenario
/// (Cranelift compiling it, audit on) peaked at 17.1 MiB of heap under heaptrack; 24
/// MiB leaves the kernel's own part and fragments room.
#[cfg(feature = "engine")]
const HEAP_RESERVE: usize = 24 << 20;
/// One audit record waiting in the queue, at most: its slot in each of the queue's two
/// rings (32 bytes each, ~160 allowed) and an error text of up to `MAX_FIELD_BYTES`.
#[cfg(feature = "engine")]
const AUDIT_RECORD_BYTES: usize = 2 * 160 + crate::audit::MAX_FIELD_BYTES;
/// What one network thread holds on the heap: its copy buffer (64 KiB) and the kernel
/// socket's buffers it pumps.
#[cfg(feature = "engine")]
const NET_THREAD_BYTES: usize = 128 << 10;
/// What one live resource handle holds: its table slot and the small object behind it.
#[cfg(feature = "engine")]
const HANDLE_BYTES: usize = 256;
/// The least each capsule's scalable budgets are scaled down to: a kv store of 1 MiB
/// (its largest value), an ipc queue that holds one largest message, 1 MiB of frames.
#[cfg(feature = "engine")]
const HEAP_FLOOR: crate::quota::HeapAsk = crate::quota::HeapAsk {
    fixed: 0,
    kv: crate::kv::store::MAX_VALUE,
    ipc: 2 * crate::ipc::bus::MAX_PAYLOAD,
    frames: 1 << 20,
};

/// What a capsule with `limits` can make the image hold on its heap at most: its
/// tables (within its memory cap and `MAX_TABLE_BYTES`; linear memory is mapped outside
/// the heap), the pipes of its streams, its UDP queues, its handles, one call's copies
/// (the largest list a call lowers: a 10 MB frame), and its kv, ipc queue and frame
/// budgets.
#[cfg(feature = "engine")]
fn heap_ask(limits: &crate::host::CapsuleLimits) -> crate::quota::HeapAsk {
    use crate::net::{MAX_FRAME, MAX_STREAMS, MAX_UDP};
    let pipes = MAX_STREAMS * 2 * crate::net::conn::PIPE_BYTES;
    let udp = MAX_UDP * crate::net::conn::UDP_QUEUE_BYTES;
    let call = MAX_FRAME.max(crate::ipc::BATCH_BYTES) + (1 << 20);
    let tables = limits.memory_bytes.min(crate::host::MAX_TABLE_BYTES);
    // Its audit lane: records past the queue's capacity until the lock's next holder
    // numbers them (`audit::Lane`).
    let lane = crate::audit::LANE_SLOTS * AUDIT_RECORD_BYTES;
    let fixed = [tables, pipes, udp, limits.handles.saturating_mul(HANDLE_BYTES), call, lane].iter().fold(0usize, |a, b| a.saturating_add(*b));
    crate::quota::HeapAsk { fixed, kv: limits.kv_bytes, ipc: limits.ipc_queue_bytes, frames: limits.frame_bytes }
}

/// The heap the capsules may have, in bytes: the kernel's heap for `ram_mib` of RAM,
/// less what the image needs for itself (its reserve, the audit queue, the network
/// threads, the capsules' code and metadata).
#[cfg(feature = "engine")]
fn heap_available(ram_mib: u64, capsule_bytes: &[usize]) -> (usize, usize) {
    let modules: u64 = capsule_bytes.iter().map(|&b| b as u64).sum();
    let above_image = ram_mib.saturating_mul(MIB).saturating_sub(IMAGE_ALLOWANCE).saturating_sub(modules);
    let heap = usize::try_from(above_image / 4 * 3).unwrap_or(usize::MAX);
    let reserve = HEAP_RESERVE
        + AUDIT_QUEUE * AUDIT_RECORD_BYTES
        + crate::net::link::MAX_THREADS * NET_THREAD_BYTES
        + capsule_bytes.iter().sum::<usize>();
    (heap, reserve)
}

/// Makes every capsule's host-side budgets fit the image's heap together, so no capsule
/// input can run it out: as asked when they fit; otherwise each capsule's kv, ipc queue
/// and frame budgets are scaled down by one common factor, none below `HEAP_FLOOR`
/// (said on the console, per capsule); refused (64, audited) when even the floors do not
/// fit, naming the capsules and the fix.
#[cfg(feature = "engine")]
fn fit_heap(each: &mut [crate::engine::RunOptions], capsules: &[CapsuleBytes], settings: &Settings) -> Result<(), Status> {
    let sizes: Vec<usize> = capsules.iter().map(|c| c.bytes.len()).collect();
    let (heap, reserve) = heap_available(settings.ram_mib.0, &sizes);
    let asks: Vec<_> = each.iter().map(|o| heap_ask(&o.limits)).collect();
    let mib = |b: usize| b.div_ceil(1 << 20);
    match crate::quota::fit_heap(heap.saturating_sub(reserve), &asks, &HEAP_FLOOR) {
        Ok(fitted) => {
            for ((o, (asked, got)), capsule) in each.iter_mut().zip(asks.iter().zip(&fitted)).zip(capsules) {
                if got != asked {
                    say!(
                        "astrid: capsule {}: host-side budgets scaled to fit the image's heap ({} MiB for {} capsules): kv {} KiB, ipc queue {} KiB, frames {} KiB (asked {}, {}, {} KiB)",
                        capsule.name,
                        mib(heap),
                        capsules.len(),
                        got.kv >> 10,
                        got.ipc >> 10,
                        got.frames >> 10,
                        asked.kv >> 10,
                        asked.ipc >> 10,
                        asked.frames >> 10
                    );
                }
                o.limits.kv_bytes = got.kv;
                o.limits.ipc_queue_bytes = got.ipc;
                o.limits.frame_bytes = got.frames;
            }
            Ok(())
        }
        Err(e) => {
            let names: Vec<String> =
                capsules.iter().zip(&asks).map(|(c, a)| format!("{} {} MiB", c.name, mib(a.fixed) + mib(HEAP_FLOOR.kv.min(a.kv) + HEAP_FLOOR.ipc.min(a.ipc) + HEAP_FLOOR.frames.min(a.frames)))).collect();
            let why = format!(
                "the capsules do not fit the image's heap: {} MiB of guest RAM gives {} MiB of heap, {} MiB of it the image's own, which leaves {} MiB; at the least they need {} MiB ({}) — give the guest more memory (scripts/run --memory MIB, {}), run fewer capsules, or lower their [limits] memory_mib",
                settings.ram_mib.0,
                mib(heap),
                mib(reserve),
                e.available >> 20,
                mib(e.needed),
                names.join(", "),
                settings::RAM_MIB
            );
            // The refusal concerns every capsule: it is audited for the one that asks most.
            if let Some((capsule, _)) = capsules.iter().zip(&asks).max_by_key(|(_, a)| a.total()) {
                audit_rejection(settings, &capsule.id, &why);
            }
            Err(fail(Status::Usage, &why))
        }
    }
}

/// The engine, with the network the settings ask for.
#[cfg(feature = "engine")]
fn start_engine(settings: &Settings) -> Result<crate::engine::CapsuleEngine, Status> {
    let mut engine =
        crate::engine::CapsuleEngine::new().map_err(|e| fail(Status::Software, &format!("cannot start the engine: {e:#}")))?;
    crate::platform::phases::mark("engine-struct");
    // Precompiled artifacts run only when sealed with the deployment's key.
    engine.set_artifact_key(settings.artifact_key.as_ref().map(|k| k.0));
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
    Ok(Some(log))
}

/// A panic anywhere in the image is reported through the console's one escaping path
/// (the default hook would print its message, which can carry a capsule's text, as it
/// is). With an audit log, the records still queued for the sink would be lost: the
/// hook puts them on the serial console first, framed as the console sink frames them.
#[cfg(feature = "engine")]
fn report_panics(audit: Option<crate::audit::AuditHandle>) {
    std::panic::set_hook(Box::new(move |info| {
        if let Some(lines) = audit.as_ref().and_then(crate::audit::AuditHandle::unwritten) {
            let _ = crate::audit::Sink::write_batch(&mut crate::audit::ConsoleSink::stdout(), &lines);
        }
        say!("{}", crate::audit::panic_line(info));
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
    each: Vec<crate::engine::RunOptions>,
    base: &crate::engine::RunOptions,
    audit: Option<&crate::audit::AuditHandle>,
) -> (Vec<Ready<'a>>, Status) {
    let mut status = Status::Ok;
    let mut ready = Vec::new();
    for ((capsule, manifest), options_here) in capsules.iter().zip(manifests).zip(each) {
        match engine.load(&capsule.bytes) {
            Ok(report) => {
                let seal = report.verified_in.map(|t| format!(" (seal verified in {} us)", t.as_micros())).unwrap_or_default();
                say!("astrid: capsule {}: {} in {} us{seal}", capsule.name, report.how, report.elapsed.as_micros());
                crate::platform::phases::mark("load-said");
                let options = options_here;
                let id = match manifest {
                    Some(m) => {
                        let above = crate::engine::limits_above_image(base, m);
                        if !above.is_empty() {
                            say!("astrid: capsule {}: its manifest asks for more than the image allows: {}", capsule.name, above.join(", "));
                        }
                        m.name.clone().unwrap_or_else(|| capsule.id.clone())
                    }
                    None => capsule.id.clone(),
                };
                if let Some(audit) = audit {
                    let text = manifest.as_ref().map(|m| m.text.as_str());
                    let principal = options.principal.as_deref().unwrap_or(&id);
                    let recorded = audit.capsule_load(&id, principal, &report.content, text);
                    crate::platform::phases::mark("load-audited");
                    if let Err(e) = recorded {
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
                        say!("astrid: capsule {}: its refusal is not in the audit log: {e}", capsule.name);
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
            let watcher = std::thread::Builder::new().stack_size(WAITER_STACK).spawn_scoped(scope, move || {
                if crate::wait::wait_any(&[&failure as &dyn crate::wait::Readiness, all_ended], &CancelToken::new(), None).is_ok() && failure.is_cancelled() {
                    say!("astrid: the audit log's sink failed: every capsule is cancelled");
                    cancels.iter().for_each(CancelToken::cancel);
                }
            });
            crate::platform::phases::mark("watcher-thread");
            if let Err(e) = watcher {
                // Not run without the watch that stops capsules when the log fails.
                say!("astrid: cannot watch the audit log's sink ({e}): no capsule runs");
                return ready.iter().map(|_| Status::Software).collect();
            }
        }
        let runs: Vec<_> = ready
            .iter()
            .zip(&cancels)
            .map(|(r, cancel)| {
                // The capsule's runner thread says how it ended as soon as it has.
                engine.spawn_run(scope, &r.id, &r.report.loaded, &r.options, cancel, audit, move |outcome, ran| {
                    report_outcome(&r.capsule.name, &outcome, ran, cancel.is_cancelled())
                })
            })
            .collect();
        let statuses = runs
            .into_iter()
            .zip(ready)
            .map(|(h, r)| match h {
                Ok(h) => h.join().unwrap_or(Status::Software),
                Err(e) => fail(Status::Software, &format!("capsule {}: cannot start its thread: {e}", r.capsule.name)),
            })
            .collect();
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
            say!("astrid: capsule {name}: completed in {} us{after}", ran.as_micros());
            Status::Ok
        }
        RunOutcome::CompletedSilently => {
            say!(
                "astrid: capsule {name}: completed in {} us without calling the host — the SDK's empty `run` stub when the capsule has no #[astrid::run] (an interceptor needs --hook ACTION)",
                ran.as_micros()
            );
            Status::Ok
        }
        RunOutcome::NoRun => {
            say!("astrid: capsule {name}: exports no `run` (nor `_start`): nothing to run (an interceptor needs --hook ACTION)");
            Status::Ok
        }
        RunOutcome::Answered { action, data } => {
            let data = data.as_deref().unwrap_or("");
            say!("astrid: capsule {name}: hook answered {action:?} {data:?}");
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
    say!("astrid: waiting for {open} connection(s) to finish sending (at most {} s)", EXIT_LINGER.as_secs());
    let left = crate::net::drain(EXIT_LINGER);
    if left > 0 {
        say!("astrid: {left} connection(s) still open after {} s: closing them unsent", EXIT_LINGER.as_secs());
    }
}

/// Closes the audit log (its close record is the last one).
#[cfg(feature = "engine")]
fn close_audit(log: Option<crate::audit::AuditLog>) -> Status {
    match log.map(crate::audit::AuditLog::close) {
        None => {
            say!("astrid: audit off ({}=off)", settings::AUDIT);
            Status::Ok
        }
        Some(Ok(n)) => {
            say!("astrid: audit log closed: {n} records");
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
        say!("astrid: audit directory {} is there: the audit log goes to its audit.log too", dir.display());
    } else {
        say!("astrid: audit directory {} is not there (not mapped): the audit log goes to the console only", dir.display());
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
    say!("astrid: capsule {}: {kind}, {} bytes, from {origin}", loaded.name, loaded.bytes.len());
    Ok(loaded)
}

/// The audit record of a capsule the image refused before running it.
#[cfg(feature = "engine")]
fn rejection_event(capsule: &str, why: &str) -> crate::audit::IoEvent {
    let mut event = crate::audit::IoEvent::ok(capsule, capsule, "astrid:capsule/load", 0);
    event.op.outcome = crate::audit::Outcome::Error;
    event.op.error = Some(why.chars().take(crate::audit::MAX_FIELD_BYTES).collect());
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
        say!("astrid: the refusal of {capsule:?} could not be audited: {e}");
    }
}

#[cfg(not(feature = "engine"))]
fn audit_rejection(_: &Settings, _: &str, _: &str) {}

/// What kind of precompiled artifact `bytes` is, if it is one: read from its ends only
/// (the engine verifies the seal before anything else of it is looked at).
fn precompiled_kind(bytes: &[u8]) -> Option<&'static str> {
    match wasm::artifact::form(bytes) {
        wasm::artifact::Form::Sealed(_) => Some("sealed precompiled artifact"),
        wasm::artifact::Form::Unsealed => Some("precompiled artifact without a seal"),
        wasm::artifact::Form::OlderSeal => Some("precompiled artifact sealed in an older format"),
        wasm::artifact::Form::NotAnArtifact => None,
    }
}

fn fail(status: Status, what: &dyn std::fmt::Display) -> Status {
    say!("astrid: error: {what}");
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
    fn each_principal_acts_once_in_a_boot_and_a_published_port_has_one_server() {
        let one = temp_file("dup-a.wasm", EMPTY_COMPONENT);
        let dir = std::env::temp_dir().join(format!("astrid-launch-{}-other", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let same_name = dir.join("dup-a.wasm");
        std::fs::write(&same_name, EMPTY_COMPONENT).unwrap();
        let other = temp_file("dup-b.wasm", EMPTY_COMPONENT);
        let named = |n: &str| crate::manifest::Manifest::encode(&format!("[package]\nname = \"{n}\"\n"));
        let serves = crate::manifest::Manifest::encode("[capabilities]\nnet_bind = [\"127.0.0.1:47700\"]\n");
        let two = [one.clone(), other.clone()];
        type Case = (Vec<String>, Vec<(&'static str, String)>, Status);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (two.to_vec(), vec![], Status::Ok),
            // One file name in two directories: one principal.
            (vec![one.clone(), same_name.display().to_string()], vec![], Status::DataErr),
            // Two manifests with one name.
            (two.to_vec(), vec![("ASTRID_MANIFEST_0", named("p")), ("ASTRID_MANIFEST_1", named("p"))], Status::DataErr),
            (two.to_vec(), vec![("ASTRID_MANIFEST_0", named("p")), ("ASTRID_MANIFEST_1", named("q"))], Status::Ok),
            // A published port among several capsules needs the manifest that binds it.
            (two.to_vec(), vec![("ASTRID_PUBLISH", "47700".into())], Status::Usage),
            (two.to_vec(), vec![("ASTRID_PUBLISH", "47700".into()), ("ASTRID_MANIFEST_0", serves.clone()), ("ASTRID_MANIFEST_1", serves.clone())], Status::DataErr),
            (two.to_vec(), vec![("ASTRID_PUBLISH", "47700".into()), ("ASTRID_MANIFEST_1", serves.clone())], Status::Ok),
        ];
        for (args, vars, want) in cases {
            let lookup = |k: &str| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone());
            assert_eq!(main(&args, lookup), want, "{args:?} {vars:?}");
        }
    }

    /// What the heap policy makes of guests and capsule counts: the default limits, with
    /// the memory share `fit_memory` gives (1 MiB capsules).
    #[cfg(feature = "engine")]
    #[test]
    fn host_budgets_fit_the_guests_heap_as_asked_scaled_or_refused() {
        use crate::quota::{HeapAsk, fit_heap};
        const M: usize = 1 << 20;
        // (guest RAM MiB, capsules, Some(scaled?) or None: refused)
        let cases = [(512, 1, Some(false)), (512, 4, Some(false)), (512, 8, Some(true)), (256, 4, Some(true)), (128, 1, Some(true)), (128, 2, None), (1024, 8, Some(false)), (1024, 16, Some(true))];
        for (ram, n, want) in cases {
            // The image's mapping budget (`wasmtime_glue::budget_for_guest_ram`): RAM/4 less the runners' stacks.
            let share = ((ram as usize * M / 4).saturating_sub(n * crate::engine::config::RUNNER_STACK) / n).saturating_sub(SHARE_HEADROOM);
            let limits = crate::host::CapsuleLimits { memory_bytes: share.min(64 * M), ..Default::default() };
            let asks = vec![heap_ask(&limits); n];
            let (heap, reserve) = heap_available(ram, &vec![M; n]);
            let got = fit_heap(heap - reserve, &asks, &HEAP_FLOOR);
            match (&got, want) {
                (Ok(fitted), Some(scaled)) => {
                    assert_eq!(fitted != &asks, scaled, "{ram} MiB, {n} capsules: {fitted:?}");
                    assert!(fitted.iter().map(HeapAsk::total).sum::<usize>() + reserve <= heap, "{ram} MiB, {n} capsules: over the heap");
                }
                (Err(_), None) => {}
                _ => panic!("{ram} MiB, {n} capsules: {got:?}, want {want:?}"),
            }
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
