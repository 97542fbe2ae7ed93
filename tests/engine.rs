//! The capsule engine end to end: the io-probe capsule's scenarios and WAT modules for
//! each trap kind, run hosted (a Linux process, fast) and in astrid.img under QEMU TCG
//! (the truth). Every run is bounded; every run's audit log must verify.

mod common;

use common::Run;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use astrid_kernel::audit;
use astrid_kernel::engine::CodeTarget;
use astrid_kernel::exit::GuestExit;
use common::scratch_file;
use xtask::paths::Paths;
use xtask::qemu::{self, Boot};
use xtask::{artifacts, capsule, compile};

struct Fixtures {
    hosted: PathBuf,
    image: PathBuf,
    probe: PathBuf,
    /// io-probe precompiled for astrid.img: guest runs skip the in-guest JIT.
    probe_cwasm: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let paths = Paths::discover();
        common::artifacts();
        let probe = capsule::build(&paths, &paths.root.join("tests/capsules/io-probe")).expect("building io-probe");
        let probe_cwasm = paths.out.join("precompiled/io-probe-test.cwasm");
        std::fs::create_dir_all(probe_cwasm.parent().unwrap()).unwrap();
        compile::compile(&probe, Some(&probe_cwasm), CodeTarget::HermitImage, xtask::prepare::session_key()).expect("precompiling io-probe");
        Fixtures {
            hosted: artifacts::ensure_hosted(&paths, true).expect("building hosted astrid"),
            image: artifacts::ensure_testing(&paths).expect("building astrid-testing.img"),
            probe,
            probe_cwasm,
        }
    })
}


fn hosted(capsule: &Path, env: &[(&str, &str)]) -> Run {
    hosted_many(&[capsule], env)
}

/// Several capsules side by side in one hosted process.
fn hosted_many(capsules: &[&Path], env: &[(&str, &str)]) -> Run {
    let out = Command::new("timeout")
        .arg("60")
        .arg(&fixtures().hosted)
        .args(capsules)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        status: out.status.code().unwrap_or(-1),
        console: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    }
}

fn in_image(capsule: &Path, env: &[(&str, &str)]) -> Run {
    in_image_many(&fixtures().image, &[capsule], env)
}

/// Several capsules side by side in one boot of `image`.
fn in_image_many(image: &Path, capsules: &[&Path], env: &[(&str, &str)]) -> Run {
    let art = common::artifacts();
    let mut boot = Boot::new(art.loader.clone(), image.to_path_buf());
    boot.capsules = capsules.iter().map(|c| c.to_path_buf()).collect();
    boot.kernel_args = env.iter().map(|(k, v)| format!("env={k}={v}")).collect();
    boot.kernel_args.push(common::artifact_key_arg());
    boot.timeout = Duration::from_secs(120);
    Run::boot(&boot)
}

/// Fail-closed: the file sink breaking mid-run (hosted: `/dev/full`, every write fails
/// with "no space left") stops the capsule instead of letting it go on unrecorded (at
/// the latest once its unwritten records fill its share of the queue: `audit-flood`
/// makes more calls than that); the serial console keeps every record sealed before
/// the failure and ends with one naming it; the image exits with the audit status (74).
#[test]
fn a_failing_audit_file_stops_the_capsules_and_the_console_names_the_failure() {
    let f = fixtures();
    let run = hosted(&f.probe, &[("ASTRID_TEST_ARG", "audit-flood"), ("ASTRID_AUDIT_FILE", "/dev/full")]);
    run.assert_status(74).assert_says("audit log failed");
    assert!(!run.console.contains("] ok audit-flood"), "the capsule went on unrecorded:\n{}", run.console);
    let lines = audit::extract(&run.console);
    let last = lines.last().expect("no audit line on the console");
    assert!(last.contains("\"fn\":\"astrid:audit/sink-failed\"") && last.contains("/dev/full"), "last record: {last}");
    match audit::verify(lines.iter().copied()) {
        Err(audit::Break { kind: audit::BreakKind::EndedBySinkFailure(why), .. }) => assert!(why.contains("/dev/full"), "{why}"),
        other => panic!("expected a log ended by the sink's failure, got {other:?}\n{}", run.console),
    }
}

/// A scenario of io-probe that must pass: hosted, then in the image.
fn scenario(name: &str) {
    let f = fixtures();
    for run in [hosted(&f.probe, &[("ASTRID_TEST_ARG", name)]), in_image(&f.probe_cwasm, &[("ASTRID_TEST_ARG", name)])] {
        run.assert_status(0).assert_says(&format!("] ok {name}"));
        let summary = run.assert_audit_verifies();
        assert!(summary.io_records > 0, "no io records:\n{}", run.console);
    }
}

#[test]
fn poll_over_many_sources_returns_every_ready_index() {
    scenario("poll-many");
}

#[test]
fn block_is_woken_by_a_timer() {
    scenario("block-timer");
}

#[test]
fn block_is_woken_by_a_write_from_another_thread() {
    scenario("block-host-write");
}

#[test]
fn cancellation_wakes_a_block_in_progress() {
    scenario("cancel-block");
}

#[test]
fn cancellation_wakes_a_poll_in_progress() {
    scenario("cancel-poll");
}

#[test]
fn cancellation_wakes_a_blocking_read_in_progress() {
    scenario("cancel-blocking-read");
}

#[test]
fn cancellation_wakes_a_blocking_splice_in_progress() {
    scenario("cancel-blocking-splice");
}

#[test]
fn poll_rejects_empty_and_oversized_lists() {
    scenario("poll-errors");
}

#[test]
fn streams_keep_their_contract() {
    scenario("streams");
}

#[test]
fn blocking_writes_of_any_size_are_segmented() {
    scenario("big-writes");
}

#[test]
fn the_demo_waits_moves_bytes_and_is_cancelled_mid_wait() {
    scenario("demo");
}

#[test]
fn astrid_sys_clocks_sleep_config_random_and_log_work() {
    let f = fixtures();
    let env = [("ASTRID_TEST_ARG", "sys"), ("ASTRID_CAPSULE_CONFIG", "greeting=hello")];
    for run in [hosted(&f.probe, &env), in_image(&f.probe_cwasm, &env)] {
        run.assert_status(0).assert_says("] ok sys").assert_says(r"] info: hello from astrid:sys\n@@audit not an audit line");
        run.assert_audit_verifies();
        assert!(run.console.contains("\"fn\":\"astrid:sys/host.random-bytes\""), "random-bytes not audited");
    }
}

#[test]
fn astrid_kv_keeps_a_quota_bounded_store_per_capsule() {
    let f = fixtures();
    let env = [("ASTRID_TEST_ARG", "kv"), ("ASTRID_KV_QUOTA_BYTES", "65536")];
    for run in [hosted(&f.probe, &env), in_image(&f.probe_cwasm, &env)] {
        run.assert_status(0).assert_says("] ok kv");
        run.assert_audit_verifies();
        assert!(run.console.contains("\"fn\":\"astrid:kv/host.kv-cas\""), "kv not audited");
    }
}

#[test]
fn an_unmodified_astrid_sdk_capsule_runs_hosted_and_in_the_production_image() {
    let paths = Paths::discover();
    let sdk = capsule::build(&paths, &paths.root.join("tests/capsules/sdk-hello")).expect("building sdk-hello");
    let sdk_cwasm = paths.out.join("precompiled/sdk-hello-test.cwasm");
    compile::compile(&sdk, Some(&sdk_cwasm), CodeTarget::HermitImage, xtask::prepare::session_key()).expect("precompiling sdk-hello");
    let image = in_image_many(&common::artifacts().astrid_img, &[&sdk_cwasm], &[]);
    for run in [hosted(&sdk, &[]), image] {
        run.assert_status(0).assert_says("info: sdk-hello: kv round trip: hello from the Astrid SDK");
        run.assert_audit_verifies();
    }
}

#[test]
fn unserved_sdk_packages_answer_with_their_typed_refusals() {
    let f = fixtures();
    let env = [("ASTRID_TEST_ARG", "refusals")];
    for run in [hosted(&f.probe, &env), in_image(&f.probe_cwasm, &env)] {
        run.assert_status(0).assert_says("] ok refusals");
        run.assert_audit_verifies();
        assert!(
            run.console.lines().any(|l| l.contains("\"outcome\":\"refused\"") && l.contains("capability-denied")),
            "refusals not audited:\n{}",
            run.console
        );
    }
}

#[test]
fn capsules_run_side_by_side_and_one_trapping_leaves_the_other_running() {
    let f = fixtures();
    let trap = wat_module("side-trap", r#"(module (func (export "run") unreachable))"#);
    let env = [("ASTRID_TEST_ARG", "block-timer")];
    let hosted_run = hosted_many(&[&f.probe, &trap], &env);
    let image_run = in_image_many(&f.image, &[&f.probe_cwasm, &trap], &env);
    for run in [hosted_run, image_run] {
        run.assert_status(1).assert_says("] ok block-timer").assert_says("side-trap.wasm: trapped: unreachable executed");
        let summary = run.assert_audit_verifies();
        assert_eq!(summary.capsules_ended, 2, "{}", run.console);
    }
}

#[test]
fn astrid_ipc_delivers_by_pattern_with_limits() {
    scenario("ipc");
}

#[test]
fn two_capsules_ping_pong_over_ipc_waiting_through_poll() {
    let f = fixtures();
    let dir = common::scratch().join("ipc-pair");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = |from: &Path, name: &str| {
        let to = dir.join(name);
        std::fs::copy(from, &to).unwrap();
        to
    };
    let (ping, pong) = (copy(&f.probe, "ping.wasm"), copy(&f.probe, "pong.wasm"));
    let env = [("ASTRID_TEST_ARG", "ipc-pair")];
    let hosted_run = hosted_many(&[&ping, &pong], &env);
    let (ping_c, pong_c) = (copy(&f.probe_cwasm, "ping.cwasm"), copy(&f.probe_cwasm, "pong.cwasm"));
    let image_run = in_image_many(&f.image, &[&ping_c, &pong_c], &env);
    for run in [hosted_run, image_run] {
        run.assert_status(0).assert_says("] ok ping").assert_says("] ok pong");
        run.assert_audit_verifies();
    }
}

/// Regression: kernel 0.11 reprogrammed its one-shot timer for the latest blocked task,
/// so on one CPU with nothing else interrupting (auditing off) a 100 ms wait queued
/// behind a 30 s one slept 30 s and the pair stalled. Our kernel patch keeps the timer
/// on the earliest wakeup.
#[test]
fn ipc_ping_pong_on_one_cpu_with_auditing_off_does_not_stall() {
    let f = fixtures();
    let dir = common::scratch().join("ipc-one-cpu");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = |name: &str| {
        let to = dir.join(name);
        std::fs::copy(&f.probe_cwasm, &to).unwrap();
        to
    };
    let (ping, pong) = (copy("ping.cwasm"), copy("pong.cwasm"));
    let started = std::time::Instant::now();
    let run = in_image_many(&f.image, &[&ping, &pong], &[("ASTRID_TEST_ARG", "bench-ipc"), ("ASTRID_AUDIT", "off")]);
    run.assert_status(0).assert_says("ipc round trip: rtt_ns=");
    // Generous for TCG, far below the 30 s the stall took.
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}:\n{}", started.elapsed(), run.console);
}

#[test]
fn sleep_is_woken_by_cancellation() {
    scenario("cancel-sleep");
}

#[test]
fn random_bytes_differ_across_boots_and_are_never_zero() {
    let f = fixtures();
    let draw = || {
        let run = in_image(&f.probe_cwasm, &[("ASTRID_TEST_ARG", "random")]);
        run.assert_status(0);
        let at = run.console.find("] random: ").expect("no random line") + "] random: ".len();
        run.console[at..at + 32].to_string()
    };
    let (a, b) = (draw(), draw());
    assert_ne!(a, "0".repeat(32));
    assert_ne!(a, b, "two boots drew the same bytes");
}

/// A scenario that must end in a clean, audited trap with `why` on the console.
fn trapping_scenario(name: &str, why: &str, env: &[(&str, &str)]) {
    let f = fixtures();
    let mut env = env.to_vec();
    env.push(("ASTRID_TEST_ARG", name));
    for run in [hosted(&f.probe, &env), in_image(&f.probe_cwasm, &env)] {
        run.assert_status(1).assert_says(why).assert_says("trapped");
        run.assert_audit_verifies();
        assert!(run.console.contains("\"fn\":\"astrid:capsule/trap\""), "trap not audited:\n{}", run.console);
    }
}

#[test]
fn a_write_past_the_permit_traps() {
    trapping_scenario("write-past-permit", "exceeds the check-write permit", &[]);
}

#[test]
fn dropping_a_stream_while_its_pollable_lives_traps() {
    trapping_scenario("drop-parent", "resource has children", &[]);
}

#[test]
fn the_handle_quota_is_a_clean_trap() {
    trapping_scenario("quota", "resource handle quota exceeded (limit 64)", &[("ASTRID_HANDLE_QUOTA", "64")]);
}

// ---- trap kinds, as core modules written in WAT ----

fn wat_module(name: &str, body: &str) -> PathBuf {
    let bytes = wat::parse_str(body).unwrap_or_else(|e| panic!("{name}: {e}"));
    scratch_file(&format!("{name}.wasm"), &bytes)
}

fn trap_kind(name: &str, wat: &str, why: &str) {
    let module = wat_module(name, wat);
    for run in [hosted(&module, &[]), in_image(&module, &[])] {
        run.assert_status(1).assert_says(why);
        run.assert_audit_verifies();
    }
}

#[test]
fn unreachable_is_a_clean_trap() {
    trap_kind("unreachable", r#"(module (func (export "run") unreachable))"#, "trapped: unreachable executed");
}

#[test]
fn out_of_bounds_is_a_clean_trap() {
    trap_kind(
        "oob",
        r#"(module (memory 1) (func (export "run") (drop (i32.load (i32.const 70000)))))"#,
        "trapped: out-of-bounds memory access",
    );
}

#[test]
fn division_by_zero_is_a_clean_trap() {
    trap_kind(
        "div0",
        r#"(module (func (export "run") (drop (i32.div_s (i32.const 1) (i32.const 0)))))"#,
        "trapped: integer division by zero",
    );
}

#[test]
fn stack_exhaustion_is_a_clean_trap() {
    trap_kind(
        "recurse",
        r#"(module (func $f (export "run") (call $f)))"#,
        "trapped: wasm stack exhausted",
    );
}

#[test]
fn an_indirect_call_with_the_wrong_signature_is_a_clean_trap() {
    trap_kind(
        "indirect",
        r#"(module
             (type $none (func))
             (type $takes (func (param i32)))
             (func $target (type $takes))
             (table 1 funcref) (elem (i32.const 0) $target)
             (func (export "run") (call_indirect (type $none) (i32.const 0))))"#,
        "trapped: call_indirect signature mismatch",
    );
}

#[test]
fn growing_past_the_memory_cap_is_a_clean_trap() {
    // 64 MiB is 1024 pages: asking for 2000 more must trap, not exhaust the kernel.
    trap_kind(
        "grow",
        r#"(module (memory 1) (func (export "run") (drop (memory.grow (i32.const 2000)))))"#,
        "trapped: memory limit reached",
    );
}

/// A core module whose import name carries a newline and an audit frame: the linker's
/// error names the import, and the console shows it escaped on the image's own line.
#[test]
fn an_import_name_cannot_forge_an_audit_line() {
    let module = wat_module(
        "forge-import",
        r#"(module (import "env" "x\n@@audit {\"seq\":0,\"forged\":true}\r\n@@audit \e2\80\a8@@audit" (func)) (func (export "run")))"#,
    );
    for run in [hosted(&module, &[]), in_image(&module, &[])] {
        run.assert_status(65).assert_says("cannot be instantiated");
        run.assert_says(r#"x\n@@audit {"seq":0,"forged":true}\r\n@@audit \u{2028}@@audit"#);
        run.assert_audit_verifies();
        for line in run.console.split(['\n', '\r', '\u{2028}']) {
            assert!(!line.starts_with("@@audit") || line.starts_with("@@audit {\"seq\":") && !line.contains("forged\":true}"), "forged: {line:?}\n{}", run.console);
        }
        // The record of the failure carries the name as JSON, escaped and ASCII.
        assert!(run.console.contains(r#"x\n@@audit {\"seq\":0,\"forged\":true}\r\n@@audit \u2028@@audit"#), "{}", run.console);
    }
}

/// A capsule in an endless loop is stopped by its deadline: hosted, and on one vCPU in
/// `GUESTS` guests at once on a host of two cores (so every guest's vCPU also keeps
/// losing its host CPU). Regression: kernel 0.11 could leave the epoch ticker ready
/// behind the spinning task with its one-shot timer disarmed, and a 300 ms deadline ran
/// to the run's timeout in about half of such guests (README, the kernel's fixes). Each
/// run must end cancelled (status 2) with its cancel audited and its log intact, the
/// cancel recorded within the deadline, the capsule's shutdown grace (`CANCEL_GRACE`)
/// and `SLACK` of its load record, on the guest's own clock.
#[test]
fn an_infinite_loop_is_stopped_by_its_deadline_on_one_cpu() {
    const DEADLINE: Duration = Duration::from_millis(300);
    const GUESTS: usize = 10;
    /// What ten guests sharing two host cores add: the guest clock runs on while the
    /// host runs the others (measured: at most 2.6 s, at a host load average of 13).
    const SLACK: Duration = Duration::from_secs(4);
    let module = wat_module("spin", r#"(module (func (export "run") (loop $l (br $l))))"#);
    let deadline_ms = DEADLINE.as_millis().to_string();
    let boot = || {
        let mut boot = Boot::new(common::artifacts().loader.clone(), fixtures().image.clone());
        boot.capsules = vec![module.clone()];
        boot.kernel_args = vec![format!("env=ASTRID_DEADLINE_MS={deadline_ms}")];
        boot.cpus = 1;
        boot.timeout = Duration::from_secs(90);
        let out = qemu::run(&boot).expect("starting QEMU");
        assert!(!out.timed_out, "guest hung (the spinning capsule outlived its deadline); console:\n{}", out.console);
        Run::of_guest(out)
    };
    let mut runs = vec![hosted(&module, &[("ASTRID_DEADLINE_MS", &deadline_ms)])];
    runs.extend(std::thread::scope(|s| {
        let guests: Vec<_> = (0..GUESTS).map(|_| s.spawn(boot)).collect();
        guests.into_iter().map(|g| g.join().expect("a guest's thread panicked")).collect::<Vec<_>>()
    }));
    let bound = DEADLINE + astrid_kernel::engine::CANCEL_GRACE + SLACK;
    for run in &runs {
        run.assert_status(2).assert_says("cancelled");
        run.assert_audit_verifies();
        let loaded = record_time(run, "astrid:audit/capsule-load").expect("no capsule-load record");
        let cancelled = record_time(run, "astrid:capsule/cancel").expect("cancel not audited");
        let took = cancelled.saturating_sub(loaded);
        assert!(took <= bound, "cancelled {took:?} after loading, over {bound:?}:\n{}", run.console);
    }
}

/// The guest-clock time of the first audit record of function `function`.
fn record_time(run: &Run, function: &str) -> Option<Duration> {
    audit::extract(&run.console).into_iter().find_map(|line| {
        let record: serde_json::Value = serde_json::from_str(line).ok()?;
        (record["fn"] == function).then(|| Duration::from_nanos(record["t_ns"].as_u64().unwrap_or(u64::MAX)))
    })
}

// ---- loading paths and the audit log ----

#[test]
fn the_virtio_sink_receives_the_same_verified_log_as_the_serial_sink() {
    let paths = Paths::discover();
    let dir = common::scratch().join("virtio-share");
    let _ = std::fs::remove_dir_all(&dir);
    let art = common::artifacts();
    let mut boot = Boot::new(art.loader.clone(), fixtures().image.clone());
    boot.capsules = vec![fixtures().probe_cwasm.clone()];
    boot.kernel_args = vec!["env=ASTRID_TEST_ARG=demo".into(), "env=ASTRID_AUDIT_FILE=/root/audit.log".into(), common::artifact_key_arg()];
    boot.shared_dir = Some((dir.clone(), xtask::setup::ensure_virtiofsd(&paths).expect("installing virtiofsd")));
    boot.timeout = Duration::from_secs(120);
    let out = qemu::run(&boot).expect("starting QEMU");
    assert_eq!(out.exit, GuestExit::App(0), "console:\n{}", out.console);
    let serial = audit::extract(&out.console);
    let file = std::fs::read_to_string(dir.join("audit.log")).expect("the guest wrote no /root/audit.log");
    let file: Vec<&str> = file.lines().collect();
    let summary = audit::verify(file.iter().copied()).unwrap_or_else(|b| panic!("virtio log broken: {b}"));
    assert!(summary.io_records > 10, "{summary:?}");
    assert_eq!(file, serial, "the two sinks disagree");
}

#[test]
fn a_plain_wasm_component_is_compiled_in_the_guest() {
    let run = in_image(&fixtures().probe, &[("ASTRID_TEST_ARG", "block-timer")]);
    run.assert_status(0).assert_says("compiled component in").assert_says("] ok block-timer");
}

#[test]
fn a_precompiled_component_is_only_deserialized_in_the_guest() {
    let run = in_image(&fixtures().probe_cwasm, &[("ASTRID_TEST_ARG", "block-timer")]);
    run.assert_status(0).assert_says("precompiled component in").assert_says("] ok block-timer");
}

#[test]
fn an_artifact_for_another_target_is_refused_cleanly() {
    // Precompiled for Linux, offered to the image: a clear load error, no crash.
    let paths = Paths::discover();
    let native = paths.out.join("precompiled/io-probe-native.cwasm");
    compile::compile(&fixtures().probe, Some(&native), CodeTarget::Native, xtask::prepare::session_key()).unwrap();
    let run = in_image(&native, &[]);
    run.assert_status(65).assert_says("cannot be loaded").assert_says("made for another engine build");
    let summary = run.assert_audit_verifies();
    assert_eq!(summary.capsules_ended, 1, "{}", run.console);
    run.assert_says("\"fn\":\"astrid:capsule/load\"");
}

#[test]
fn the_audit_log_fails_verification_after_one_byte_changes() {
    let run = hosted(&fixtures().probe, &[("ASTRID_TEST_ARG", "block-timer")]);
    run.assert_status(0);
    let lines: Vec<String> = audit::extract(&run.console).into_iter().map(str::to_owned).collect();
    assert!(audit::verify(lines.iter().map(String::as_str)).is_ok());
    for (i, line) in lines.iter().enumerate() {
        // Change one digit of each record in turn: always caught.
        let pos = line.find(|c: char| c.is_ascii_digit()).unwrap();
        let mut bytes = line.clone().into_bytes();
        bytes[pos] = if bytes[pos] == b'9' { b'8' } else { bytes[pos] + 1 };
        let mut tampered = lines.clone();
        tampered[i] = String::from_utf8(bytes).unwrap();
        assert!(audit::verify(tampered.iter().map(String::as_str)).is_err(), "record {i} changed unnoticed");
    }
}

/// A hostile capsule (`attacker`) beside an ordinary one (`victim`), both io-probe with
/// the scenario `scenario`, hosted and in the image: the attacker's host-side resources
/// stay within its bounds, the image survives, and the victim finishes its work.
fn attacked(scenario: &str, attacker: Option<&Path>) -> Vec<Run> {
    let f = fixtures();
    let dir = common::scratch().join(scenario);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = |from: &Path, name: &str| {
        let to = dir.join(name);
        std::fs::copy(from, &to).unwrap();
        to
    };
    let env = [("ASTRID_TEST_ARG", scenario)];
    let (victim, victim_c) = (copy(&f.probe, "victim.wasm"), copy(&f.probe_cwasm, "victim.cwasm"));
    let (attacker, attacker_c) = match attacker {
        Some(module) => (module.to_path_buf(), module.to_path_buf()),
        None => (copy(&f.probe, "attacker.wasm"), copy(&f.probe_cwasm, "attacker.cwasm")),
    };
    let runs = vec![hosted_many(&[&victim, &attacker], &env), in_image_many(&f.image, &[&victim_c, &attacker_c], &env)];
    for run in &runs {
        run.assert_says("ok victim");
        assert!(!run.console.contains("memory allocation of"), "the heap ran out:\n{}", run.console);
        let summary = run.assert_audit_verifies();
        assert_eq!(summary.capsules_ended, 2, "{}", run.console);
    }
    runs
}

/// 128 subscriptions to `**` and 1 MiB payloads: each message is stored once and each
/// queued copy charged to the subscriber, so the flood is bounded and counted as loss.
#[test]
fn an_ipc_fan_out_flood_cannot_exhaust_the_image() {
    for run in attacked("hostile-ipc", None) {
        run.assert_status(0).assert_says("ok hostile-ipc: held ");
    }
}

/// Connections churned with their halves kept and dropped: a connection counts until
/// its last half or pollable is gone, and nothing leaks across 200 connections.
#[test]
fn connection_churn_stays_within_the_capsules_quota() {
    for run in attacked("hostile-net", None) {
        run.assert_status(0).assert_says("ok hostile-net");
    }
}

/// A table grown without end is charged against the capsule's memory cap and trapped
/// cleanly; the capsule beside it finishes.
#[test]
fn endless_table_growth_is_a_clean_trap_beside_a_working_capsule() {
    let grow = wat_module(
        "table-grow",
        r#"(module (table $t 0 funcref)
             (func (export "run") (loop $l (drop (table.grow $t (ref.null func) (i32.const 100000))) (br $l))))"#,
    );
    for run in attacked("hostile-table", Some(&grow)) {
        run.assert_status(1).assert_says("table-grow.wasm: trapped: memory limit reached");
    }
}

/// Three capsules pushing every host-side budget at once (kv to `quota`, a flood of
/// 1 MiB payloads into their subscriptions, four 10 MB frames being assembled) beside
/// a well-behaved one, in a 256 MiB guest whose heap cannot hold every capsule's worst
/// case: the image scales their budgets to fit and says so, every attacker stops at its
/// share, the victim finishes, and nothing runs the heap out. Hosted (no heap of ours)
/// the same capsules run unscaled.
#[test]
fn hostile_capsules_together_cannot_run_the_image_out_of_heap() {
    let f = fixtures();
    let dir = common::scratch().join("hostile-heap");
    std::fs::create_dir_all(&dir).unwrap();
    let copies = |from: &Path, ext: &str| -> Vec<PathBuf> {
        ["victim", "heap-a", "heap-b", "heap-c"]
            .iter()
            .map(|name| {
                let to = dir.join(format!("{name}.{ext}"));
                std::fs::copy(from, &to).unwrap();
                to
            })
            .collect()
    };
    let env = [("ASTRID_TEST_ARG", "hostile-heap")];
    let (plain, sealed) = (copies(&f.probe, "wasm"), copies(&f.probe_cwasm, "cwasm"));
    let hosted = hosted_many(&plain.iter().map(PathBuf::as_path).collect::<Vec<_>>(), &env);
    hosted.assert_status(0);
    assert!(!hosted.console.contains("scaled to fit"), "hosted mode has no heap of ours to fit:\n{}", hosted.console);

    let art = common::artifacts();
    let mut boot = Boot::new(art.loader.clone(), f.image.clone());
    boot.capsules = sealed;
    boot.kernel_args = env.iter().map(|(k, v)| format!("env={k}={v}")).collect();
    boot.kernel_args.push(common::artifact_key_arg());
    boot.memory_mib = 256;
    boot.timeout = Duration::from_secs(180);
    let image = Run::boot(&boot);
    image.assert_status(0).assert_says("host-side budgets scaled to fit the image's heap");
    for run in [&hosted, &image] {
        run.assert_says("ok victim");
        assert_eq!(run.console.matches("ok hostile-heap: kv").count(), 3, "{}", run.console);
        assert!(!run.console.contains("memory allocation of"), "the heap ran out:\n{}", run.console);
        let summary = run.assert_audit_verifies();
        assert_eq!(summary.capsules_ended, 4, "{}", run.console);
    }
}

/// virtiofsd for the guest's `/root`, started through a wrapper that first runs `setup`
/// (shell lines: resource limits, signal dispositions) and writes its process id to
/// `pid` (the wrapper `exec`s, so it is virtiofsd's).
fn virtiofsd_wrapped(dir: &Path, setup: &str) -> (PathBuf, PathBuf) {
    let real = xtask::setup::ensure_virtiofsd(&Paths::discover()).expect("installing virtiofsd");
    let (wrapper, pid) = (dir.join("virtiofsd-wrapper.sh"), dir.join("virtiofsd.pid"));
    let script = format!("#!/bin/bash\necho $$ > '{}'\n{setup}\nexec '{}' \"$@\"\n", pid.display(), real.display());
    std::fs::write(&wrapper, script).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&wrapper).status().unwrap();
    (wrapper, pid)
}

/// Fail-closed in the image: the shared directory's file system "fills up" mid-run
/// (virtiofsd under a 64 KiB file size limit, SIGXFSZ ignored, so writes past it fail
/// with EFBIG). The kernel's virtio-fs driver used to panic on that error reply; now
/// the write fails, the image cancels the capsule, the serial console keeps every
/// record sealed before the failure and ends with one naming it, and the image exits
/// with the audit status (74).
#[test]
fn a_full_file_system_under_the_virtio_audit_sink_fails_closed_in_the_image() {
    let dir = common::scratch().join("virtio-full");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (wrapper, _) = virtiofsd_wrapped(&dir, "ulimit -f 64\ntrap '' XFSZ");
    let share = dir.join("share");
    let boot = probe_auditing_to_a_share("audit-flood", &share, wrapper, Duration::from_secs(120));
    let run = Run::boot(&boot);
    run.assert_status(74).assert_says("audit log failed");
    assert!(!run.console.contains("] ok audit-flood"), "the capsule went on unrecorded:\n{}", run.console);
    let written = std::fs::metadata(share.join("audit.log")).expect("no audit.log in the share").len();
    assert!(written > 0 && written <= 64 << 10, "the file holds {written} bytes");
    assert_ended_by_the_file_sink_failing(&run);
}

/// io-probe running `scenario` in the testing image, auditing to `/root/audit.log` on a
/// virtio-fs share of `share` served through `wrapper` (a virtiofsd under test control).
fn probe_auditing_to_a_share(scenario: &str, share: &Path, wrapper: PathBuf, timeout: Duration) -> Boot {
    let art = common::artifacts();
    let mut boot = Boot::new(art.loader.clone(), fixtures().image.clone());
    boot.capsules = vec![fixtures().probe_cwasm.clone()];
    boot.kernel_args = vec![format!("env=ASTRID_TEST_ARG={scenario}"), "env=ASTRID_AUDIT_FILE=/root/audit.log".into(), common::artifact_key_arg()];
    boot.shared_dir = Some((share.to_path_buf(), wrapper));
    boot.timeout = timeout;
    boot
}

/// The serial log of a run whose file sink failed: it ends with the `sink-failed` record
/// naming `/root/audit.log`, and the verifier says the log ended there.
fn assert_ended_by_the_file_sink_failing(run: &Run) {
    let lines = audit::extract(&run.console);
    let last = lines.last().expect("no audit line on the console");
    assert!(last.contains("\"fn\":\"astrid:audit/sink-failed\"") && last.contains("/root/audit.log"), "last record: {last}");
    match audit::verify(lines.iter().copied()) {
        Err(audit::Break { kind: audit::BreakKind::EndedBySinkFailure(why), .. }) => assert!(why.contains("/root/audit.log"), "{why}"),
        other => panic!("expected a log ended by the sink's failure, got {other:?}\n{}", run.console),
    }
}

/// A stalled sink in the image: virtiofsd is stopped (SIGSTOP) while a capsule's calls
/// are being audited to the shared directory. The kernel's virtio-fs driver waited for
/// the reply spinning with interrupts off, for ever, which froze the guest; now it waits
/// at most 5 s, fails the device, and the audit log fails closed: the capsule is
/// stopped, the serial console ends with the failure, the image exits with 74 while
/// virtiofsd is still stopped (it is killed at the end).
#[test]
fn a_stalled_virtio_audit_sink_ends_the_run_fail_closed_in_the_image() {
    let dir = common::scratch().join("virtio-stall");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (wrapper, pid_file) = virtiofsd_wrapped(&dir, "");
    let share = dir.join("share");
    let boot = probe_auditing_to_a_share("tick", &share, wrapper, Duration::from_secs(150));
    let log = share.join("audit.log");
    let (out, stopped) = std::thread::scope(|s| {
        let stopper = s.spawn(|| {
            // Once the capsule's calls reach the file, stop the daemon mid-run.
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while std::fs::metadata(&log).map(|m| m.len() < 4096).unwrap_or(true) {
                assert!(std::time::Instant::now() < deadline, "the guest never wrote 4 KiB of audit log");
                std::thread::sleep(Duration::from_millis(20));
            }
            let pid = std::fs::read_to_string(&pid_file).expect("virtiofsd's pid").trim().to_string();
            assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success(), "SIGSTOP {pid}");
            std::time::Instant::now()
        });
        let out = qemu::run(&boot).expect("starting QEMU");
        (out, stopper.join().expect("the stopper panicked"))
    });
    let ended_after = stopped.elapsed();
    assert!(!out.timed_out, "guest hung behind the stalled sink; console:\n{}", out.console);
    let run = Run::of_guest(out);
    run.assert_status(74).assert_says("audit log failed");
    assert!(!run.console.contains("] ok tick"), "the capsule went on unrecorded:\n{}", run.console);
    // The reply timeout (5 s), the capsule's cancellation and the close, under TCG on a
    // loaded machine.
    assert!(ended_after < Duration::from_secs(40), "the image ended {ended_after:?} after the sink stalled");
    assert_ended_by_the_file_sink_failing(&run);
}

/// Capsules whose host-side budgets do not fit the guest's heap even at their floors
/// (two in 128 MiB) are refused before anything runs: status 64, a message naming each
/// capsule's least need and the fix, and the refusal in the audit log.
#[test]
fn capsules_that_cannot_fit_the_heap_are_refused_naming_the_fix() {
    let f = fixtures();
    let dir = common::scratch().join("heap-refused");
    std::fs::create_dir_all(&dir).unwrap();
    let capsules: Vec<PathBuf> = ["one", "two"]
        .iter()
        .map(|name| {
            let to = dir.join(format!("{name}.cwasm"));
            std::fs::copy(&f.probe_cwasm, &to).unwrap();
            to
        })
        .collect();
    let art = common::artifacts();
    let mut boot = Boot::new(art.loader.clone(), f.image.clone());
    boot.capsules = capsules;
    boot.kernel_args = vec!["env=ASTRID_TEST_ARG=block-timer".into(), common::artifact_key_arg()];
    boot.memory_mib = 128;
    boot.timeout = Duration::from_secs(90);
    let out = qemu::run(&boot).expect("starting QEMU");
    assert_eq!(out.exit, GuestExit::App(64), "console:\n{}", out.console);
    let run = Run { status: 64, console: out.console };
    run.assert_says("the capsules do not fit the image's heap").assert_says("one.cwasm").assert_says("two.cwasm").assert_says("--memory");
    assert!(!run.console.contains("] ok block-timer"), "a capsule ran:\n{}", run.console);
    run.assert_says("\"fn\":\"astrid:capsule/load\"");
    run.assert_audit_verifies();
}
