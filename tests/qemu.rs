//! Boots the real astrid.img under QEMU TCG (through our multiboot loader) and asserts
//! on what the guest prints and how it exits. Every boot is bounded by a timeout.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use astrid_kernel::exit::GuestExit;
use common::{artifacts, jit_img, scratch_file};
use xtask::qemu::{self, Boot, Firmware, Outcome};

/// astrid.img, the production image (no compiler: precompiled capsules only).
fn boot_astrid(capsules: Vec<PathBuf>) -> Boot {
    let art = artifacts();
    let mut boot = Boot::new(art.loader.clone(), art.astrid_img.clone());
    boot.capsules = capsules;
    boot.timeout = Duration::from_secs(60);
    boot
}

/// astrid-jit.img, which compiles a plain `.wasm` in the guest.
fn boot_jit(capsules: Vec<PathBuf>) -> Boot {
    Boot { app: jit_img().clone(), ..boot_astrid(capsules) }
}

fn run(boot: &Boot) -> Outcome {
    let out = qemu::run(boot).expect("QEMU could not be started");
    assert!(!out.timed_out, "guest hung (killed after {:?}); console:\n{}", boot.timeout, out.console);
    out
}

fn assert_app(out: &Outcome, status: u8, needle: &str) {
    assert_eq!(out.exit, GuestExit::App(status), "{}\nconsole:\n{}", out.describe(), out.console);
    assert!(out.console.contains(needle), "console lacks {needle:?}:\n{}", out.console);
    assert!(!out.console.contains("panicked"), "guest panicked:\n{}", out.console);
}

#[test]
fn example_capsule_boots_and_is_recognised_as_a_component() {
    let art = artifacts();
    let out = run(&boot_jit(vec![art.example_capsule.clone()]));
    assert_app(&out, 0, "astrid: capsule hello.wasm: wasm component (binary version 0xd)");
    assert!(out.console.contains("capsule hello.wasm: compiled component in"), "{}", out.console);
    assert!(out.console.contains("astrid-boot: "), "loader said nothing:\n{}", out.console);
    assert!(out.console.contains("astrid: 1 capsule(s) ready"), "{}", out.console);
}

#[test]
fn a_core_module_is_recognised_too_and_seabios_boots_the_same_image() {
    let module = scratch_file("core.wasm", &[0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
    let mut boot = boot_jit(vec![module]);
    boot.firmware = Firmware::SeaBios;
    assert_app(&run(&boot), 0, "capsule core.wasm: wasm core module");
}

#[test]
fn several_capsules_arrive_in_order() {
    let art = artifacts();
    let second = scratch_file("second.wasm", &[0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
    let out = run(&boot_jit(vec![art.example_capsule.clone(), second]));
    assert_app(&out, 0, "astrid: 2 capsule(s) ready");
    let first = out.console.find("capsule hello.wasm").expect("first capsule missing");
    let second = out.console.find("capsule second.wasm").expect("second capsule missing");
    assert!(first < second, "{}", out.console);
}

#[test]
fn the_production_image_has_no_compiler_and_says_how_to_run_a_plain_wasm() {
    let art = artifacts();
    let out = run(&boot_astrid(vec![art.example_capsule.clone()]));
    assert_app(&out, 65, "capsule hello.wasm: cannot be loaded: a .wasm, and astrid.img has no compiler");
    assert!(out.console.contains("scripts/run --jit"), "{}", out.console);
    assert_refusal_audited(&out);
    // A third of the JIT image: no Cranelift in it.
    let (small, big) = (std::fs::metadata(&art.astrid_img).unwrap().len(), std::fs::metadata(jit_img()).unwrap().len());
    assert!(small * 2 < big, "astrid.img ({small} bytes) is not much smaller than astrid-jit.img ({big} bytes): is Cranelift back in it?");
}

#[test]
fn no_capsule_is_a_usage_error() {
    let out = run(&boot_astrid(vec![]));
    assert_app(&out, 64, "astrid: error: no capsule given");
}

#[test]
fn a_missing_capsule_path_is_reported_by_name() {
    let mut boot = boot_astrid(vec![]);
    boot.app_args = vec!["/root/missing.wasm".into()];
    let out = run(&boot);
    assert_app(&out, 66, "capsule /root/missing.wasm: ");
    assert_refusal_audited(&out);
}

#[test]
fn an_empty_capsule_is_rejected() {
    let out = run(&boot_astrid(vec![scratch_file("empty.wasm", b"")]));
    assert_app(&out, 65, "capsule empty.wasm: the file is empty");
    assert_refusal_audited(&out);
}

#[test]
fn a_file_that_is_not_wasm_is_rejected() {
    let out = run(&boot_astrid(vec![scratch_file("script.wasm", b"#!/bin/sh\necho hi\n")]));
    assert_app(&out, 65, "capsule script.wasm: not a WebAssembly binary (starts with 23 21 2f 62");
    assert_refusal_audited(&out);
}

#[test]
fn a_capsule_over_the_image_limit_is_rejected_before_use() {
    let art = artifacts();
    let mut boot = boot_astrid(vec![art.example_capsule.clone()]);
    boot.kernel_args = vec!["env=ASTRID_MAX_CAPSULE_BYTES=16".into()];
    assert_app(&run(&boot), 65, "over the 16-byte limit");
}

#[test]
fn app_arguments_after_the_separator_reach_the_application() {
    // App arguments follow `--` on the module line; the first one is tried first.
    let mut boot = boot_astrid(vec![]);
    boot.app_args = vec!["/root/a.wasm".into(), "/root/b.wasm".into()];
    let out = run(&boot);
    assert_app(&out, 66, "capsule /root/a.wasm");
}

#[test]
fn the_bare_hello_baseline_boots_through_the_same_pipeline() {
    let art = artifacts();
    let out = run(&Boot { timeout: Duration::from_secs(60), ..Boot::new(art.loader.clone(), art.hello_img.clone()) });
    assert_app(&out, 0, "hello from Hermit");
}

/// A refused capsule leaves an audit trail that verifies.
fn assert_refusal_audited(out: &Outcome) {
    let lines = astrid_kernel::audit::extract(&out.console);
    assert!(
        lines.iter().any(|l| l.contains("\"fn\":\"astrid:capsule/load\"") && l.contains("\"outcome\":\"error\"")),
        "no audit record of the refusal:\n{}",
        out.console
    );
    if let Err(b) = astrid_kernel::audit::verify(lines.iter().copied()) {
        panic!("refusal audit log broken: {b}\n{}", out.console);
    }
}

// ---- loader failures: a clear message and a failing QEMU exit, never a hang ----

fn assert_loader_failure(out: &Outcome, code: u32, needle: &str) {
    assert_eq!(out.exit, GuestExit::Loader(code), "{}\nconsole:\n{}", out.describe(), out.console);
    assert!(out.console.contains("astrid-boot: error:"), "{}", out.console);
    assert!(out.console.to_lowercase().contains(needle), "console lacks {needle:?}:\n{}", out.console);
}

#[test]
fn loader_without_the_app_module_fails_cleanly() {
    let art = artifacts();
    let qemu = qemu::qemu_binary().unwrap();
    let mut cmd = Command::new(qemu);
    cmd.args(["-machine", "q35", "-accel", "tcg", "-cpu", "qemu64,apic,fsgsbase,fxsr,rdrand,rdtscp,xsave,xsaveopt"])
        .args(["-m", "256M", "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"])
        .args(["-bios", "/usr/share/qemu/qboot.rom"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(&art.loader)
        .args(["-append", "debug-exit=0xf4"]);
    let out = std::process::Command::new("timeout").arg("60").arg(cmd.get_program()).args(cmd.get_args()).output().unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    let exit = astrid_kernel::exit::decode_qemu_status(out.status.code().unwrap_or(-1));
    assert_eq!(exit, GuestExit::Loader(8), "console:\n{console}");
    assert!(console.contains("astrid-boot: error:"), "{console}");
    assert!(console.to_lowercase().contains("module"), "{console}");
}

#[test]
fn an_app_module_that_is_not_an_elf_is_refused() {
    let art = artifacts();
    let boot = Boot { timeout: Duration::from_secs(60), ..Boot::new(art.loader.clone(), art.example_capsule.clone()) };
    assert_loader_failure(&run(&boot), 9, "elf");
}

#[test]
fn an_elf_that_is_not_a_hermit_application_is_refused() {
    // A Linux executable is a well-formed ELF without the HERMIT note.
    let art = artifacts();
    let linux_elf = PathBuf::from(env!("CARGO_BIN_EXE_xtask"));
    let boot = Boot { timeout: Duration::from_secs(60), ..Boot::new(art.loader.clone(), linux_elf) };
    assert_loader_failure(&run(&boot), 10, "hermit");
}

#[test]
fn an_app_with_a_foreign_hermit_entry_version_is_refused() {
    let art = artifacts();
    let mut elf = std::fs::read(&art.astrid_img).unwrap();
    let note = hermit_note_version_offset(&elf).expect("astrid.img has no HERMIT note");
    assert_eq!(elf[note], 4, "astrid.img should carry entry version 4");
    elf[note] = 99;
    let patched = scratch_file("astrid-v99.img", &elf);
    let boot = Boot { timeout: Duration::from_secs(60), ..Boot::new(art.loader.clone(), patched) };
    assert_loader_failure(&run(&boot), 10, "version");
}

#[test]
fn too_little_memory_is_reported_not_crashed_on() {
    let art = artifacts();
    // A 40 MiB module in a 64 MiB guest leaves no room for the kernel's heap.
    let big = scratch_file("big.wasm", &vec![0u8; 40 << 20]);
    let mut boot = boot_astrid(vec![big]);
    boot.memory_mib = 64;
    let out = run(&boot);
    assert!(
        matches!(out.exit, GuestExit::Loader(11)),
        "{}\nconsole:\n{}",
        out.describe(),
        out.console.chars().take(4000).collect::<String>()
    );
    assert!(out.console.contains("give the machine more RAM"), "{}", out.console);
    let _ = art;
}

/// Offset of the entry-version byte in the ELF's `HERMIT` note (name "HERMIT\0",
/// padded to 8 bytes, then the descriptor).
fn hermit_note_version_offset(elf: &[u8]) -> Option<usize> {
    let pattern = [7u8, 0, 0, 0];
    (0..elf.len().saturating_sub(24)).find_map(|i| {
        (elf[i..i + 4] == pattern && &elf[i + 12..i + 19] == b"HERMIT\0").then_some(i + 20)
    })
}

// ---- the run command (first README command) ----

fn run_command(args: &[&str]) -> (i32, String) {
    common::run_command(120, &[], args)
}

#[test]
fn run_command_runs_the_example_from_source_and_returns_its_status() {
    artifacts();
    let root = xtask::paths::Paths::discover().root;
    let (code, text) = run_command(&["--env", "ASTRID_BOOT_PHASES=1", root.join("capsules/hello").to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    // Precompiled on the host by default, sealed, and only deserialized in the guest.
    assert!(text.contains("capsule hello.cwasm: sealed precompiled artifact"), "{text}");
    // The example shows the product: randomness, kv, ipc through a pollable, a sleep.
    for line in ["hello: 8 random bytes: ", "hello: kv says this is visit 1", "hello: ipc hello.greeting -> \"hi from the bus\"", "hello: slept ", "hello: done"] {
        assert!(text.contains(line), "the example did not say {line:?}:\n{text}");
    }
    // Asked for, the image says when each start-up phase ended (the boot benchmark's
    // breakdown), in the order the boot goes through them.
    let phases = text.lines().find_map(astrid_kernel::platform::phases::parse).unwrap_or_else(|| panic!("no boot phases line:\n{text}"));
    let at = |label: &str| phases.iter().find(|(l, _)| l == label).map(|(_, t)| *t).unwrap_or_else(|| panic!("no {label} phase in {phases:?}"));
    let order = ["main", "settings", "checked", "audit-started", "seal-checked", "deserialized", "runner-thread", "linker", "instantiated", "run-returned", "audit-closed", "returned"];
    for pair in order.windows(2) {
        assert!(at(pair[0]) <= at(pair[1]), "{} after {}: {phases:?}", pair[0], pair[1]);
    }
}

#[test]
fn run_command_passes_the_guest_status_through() {
    artifacts();
    let (code, text) = run_command(&[scratch_file("bad.wasm", b"nope").to_str().unwrap()]);
    assert_eq!(code, 65, "{text}");
    assert!(text.contains("not a WebAssembly binary"), "{text}");
}

#[test]
fn run_command_refuses_bad_input_before_booting() {
    let (code, text) = run_command(&[]);
    assert_eq!(code, 64, "{text}");
    assert!(text.contains("no capsule given") && text.contains("scripts/run capsules/hello"), "{text}");

    let (code, text) = run_command(&["/nonexistent/capsule.wasm"]);
    assert_eq!(code, 66, "{text}");
    assert!(text.contains("/nonexistent/capsule.wasm"), "{text}");

    let big = scratch_file("huge.wasm", &vec![0u8; 100 << 20]);
    let (code, text) = run_command(&["--memory", "128", big.to_str().unwrap()]);
    assert_eq!(code, 65, "{text}");
    assert!(text.contains("--memory 256"), "{text}");
}

// ---- guest exports: the SDK's interceptor entry point and its stubs ----

#[test]
fn run_command_triggers_an_sdk_interceptor_with_a_payload_file_and_detects_stubs() {
    artifacts();
    let root = xtask::paths::Paths::discover().root;
    let hook = root.join("tests/capsules/sdk-hook");
    let hook = hook.to_str().unwrap();
    let payload = scratch_file("greet.json", br#"{"name": "astrid"}"#);
    let payload = format!("@{}", payload.display());
    for under in ["--hosted", "--precompile"] {
        let (code, text) = run_command(&[under, "--hook", "greet", "--payload", &payload, hook]);
        assert_eq!(code, 0, "{under}: {text}");
        assert!(text.contains("info: sdk-hook: greeting astrid"), "{under}: {text}");
        assert!(text.contains(r#"hook answered "continue" "{\"greeting\":\"hello, astrid\"}""#), "{under}: {text}");
        assert!(text.contains("astrid:guest/astrid-hook-trigger"), "{under}: the hook call is not audited: {text}");

        // An action the capsule has no handler for: the SDK's stub answers, we say so.
        let (code, text) = run_command(&[under, "--hook", "grete", hook]);
        assert_eq!(code, 64, "{under}: {text}");
        assert!(text.contains("has no handler for that hook action (the SDK's stub answered)"), "{under}: {text}");

        // Without --hook the SDK's empty `run` stub runs, and we say that is what it was.
        let (code, text) = run_command(&[under, hook]);
        assert_eq!(code, 0, "{under}: {text}");
        assert!(text.contains("without calling the host — the SDK's empty `run` stub"), "{under}: {text}");
    }
    let (code, text) = run_command(&["--hosted", "--hook", "greet", "--payload", "@/nonexistent/payload.json", hook]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("/nonexistent/payload.json"), "{text}");
}
