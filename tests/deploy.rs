//! One file to boot anywhere: `scripts/astrid pack` makes it, and these tests boot what it
//! made the way a user would.
//! - bare metal: the `.iso` under QEMU with SeaBIOS (`-cdrom`) and with OVMF (UEFI), the
//!   `.img` as a raw disk without a debug-exit port, and randomness from the CPU;
//! - uhyve: `uhyve -m 256MiB FILE.hermit`, the memory the file asks for by default, and
//!   refused by uhyve without it (the soft-float image checking the
//!   capsules on PVM hosts, the normal image running them where hardware KVM exists;
//!   skipped, with the reason printed, without /dev/kvm);
//! - refusals: a missing or bad capsule, a wrong extension, a baked-in seed: all before
//!   anything is written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use astrid_kernel::exit::GuestExit;
use common::{scratch, scratch_file};
use xtask::grub::{self, Firmware, ImageBoot, ImageOutcome, Medium};
use xtask::paths::Paths;
use xtask::uhyve::{self, Kvm};

/// A fixed audit key for the packed images, and its public half for `audit verify`.
const TEST_KEY: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

fn key_file() -> PathBuf {
    scratch_file("deploy-audit.key", TEST_KEY.as_bytes())
}

/// `scripts/astrid pack ARGS`: its exit status and what it printed. `XTASK_BIN` names a
/// copy of the binary to use instead (where several work trees share one target
/// directory and another build may replace it mid-run).
fn pack(args: &[&str]) -> (i32, String) {
    let bin = std::env::var_os("XTASK_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_xtask")), PathBuf::from);
    let out = Command::new(bin).arg("pack").args(args).output().expect("starting xtask pack");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn packed(args: &[&str]) -> PathBuf {
    let (status, text) = pack(args);
    assert_eq!(status, 0, "pack {args:?} failed:\n{text}");
    let out = args.iter().position(|a| *a == "-o").map(|i| PathBuf::from(args[i + 1])).expect("-o OUT");
    assert!(out.is_file(), "pack {args:?} wrote nothing:\n{text}");
    out
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 scratch paths")
}

fn boot(image: &Path, firmware: Firmware, medium: Medium) -> ImageOutcome {
    let mut b = ImageBoot::new(image.to_path_buf(), firmware, scratch());
    b.medium = medium;
    let out = grub::boot_image(&b).expect("starting QEMU");
    assert!(!out.timed_out, "{firmware:?} boot hung ({:?}); console:\n{}", out.elapsed, out.console);
    out
}

/// The audit records of `console` (or of a file, `framed: false`) verify, signed by the
/// test key.
fn verify_signed(text: &str, framed: bool) -> astrid_kernel::audit::Summary {
    use astrid_kernel::audit::{Options, SigningKey, verify_with};
    let secret: [u8; 32] = astrid_kernel::settings::hex_decode(TEST_KEY).unwrap().try_into().unwrap();
    let key = Some(SigningKey::from_bytes(&secret).verifying_key());
    let lines = if framed { astrid_kernel::audit::extract(text) } else { text.lines().collect() };
    verify_with(lines.iter().copied(), &Options { key, open: false }).unwrap_or_else(|b| panic!("audit log broken: {b}\n{text}"))
}

fn assert_verifies_with_the_test_key(console: &str) -> astrid_kernel::audit::Summary {
    verify_signed(console, true)
}

/// The test capsule, built from source and precompiled by `pack` itself: an SDK capsule
/// that logs and round-trips a kv value.
fn sdk_hello() -> String {
    Paths::discover().root.join("tests/capsules/sdk-hello").display().to_string()
}

#[test]
fn the_iso_boots_from_bios_and_from_uefi_and_reports_through_debug_exit() {
    let iso = scratch().join("deploy.iso");
    let key = key_file();
    packed(&["--precompile", "--debug-exit", "--audit-key", path(&key), "--config", "greeting=hi", "-o", path(&iso), &sdk_hello()]);
    for firmware in [Firmware::Bios, Firmware::Uefi] {
        let out = boot(&iso, firmware, Medium::Cdrom);
        let c = &out.console;
        assert_eq!(out.exit, GuestExit::App(0), "{firmware:?}: {:?}\n{c}", out.qemu_status);
        assert!(c.contains("astrid-boot: app astrid.img"), "{firmware:?}: the loader said nothing:\n{c}");
        assert!(c.contains("[sdk-hello.cwasm] info: sdk-hello: kv round trip: hello from the Astrid SDK"), "{firmware:?}:\n{c}");
        let summary = assert_verifies_with_the_test_key(c);
        assert_eq!(summary.capsules_loaded, 1, "{firmware:?}");
        if firmware == Firmware::Uefi {
            // UEFI firmware leaves the RSDP where only multiboot2 finds it.
            assert!(c.contains("ACPI RSDP from the boot loader"), "{c}");
        }
        eprintln!("{firmware:?} boot of the ISO: {:.1?}", out.elapsed);
    }
}

#[test]
fn the_disk_image_without_debug_exit_reports_on_serial_and_does_what_it_was_told() {
    let img = scratch().join("deploy.img");
    packed(&["--precompile", "--on-exit", "reboot", "-o", path(&img), &sdk_hello()]);
    // As on a machine: written raw to a disk, no isa-debug-exit device (QEMU's
    // -no-reboot turns the reset into QEMU's exit).
    let mut b = ImageBoot::new(img.clone(), Firmware::Bios, scratch());
    b.medium = Medium::Disk;
    b.debug_exit_device = false;
    let out = grub::boot_image(&b).expect("starting QEMU");
    let c = &out.console;
    assert!(!out.timed_out, "hung:\n{c}");
    assert!(c.contains("sdk-hello: kv round trip"), "{c}");
    assert!(c.contains("astrid: exit status 0; rebooting (ASTRID_ON_EXIT=reboot)"), "{c}");
    assert_eq!(out.qemu_status, Some(0), "a reset ends QEMU with 0 under -no-reboot:\n{c}");
    assert!(!c.contains("panicked"), "{c}");
}

#[test]
fn randomness_comes_from_the_cpu_where_no_host_seed_exists_and_is_refused_without() {
    let iso = scratch().join("random.iso");
    let probe = Paths::discover().root.join("tests/capsules/io-probe");
    packed(&["--testing", "--precompile", "--debug-exit", "--env", "ASTRID_TEST_ARG=random", "-o", path(&iso), path(&probe)]);
    let mut b = ImageBoot::new(iso.clone(), Firmware::Bios, scratch());
    let with = grub::boot_image(&b).expect("starting QEMU");
    assert_eq!(with.exit, GuestExit::App(0), "{}", with.console);
    let line = with.console.lines().find(|l| l.contains("random: ")).unwrap_or_else(|| panic!("no random line:\n{}", with.console));
    let hex = line.rsplit("random: ").next().unwrap().trim();
    assert!(hex.len() == 32 && hex != "0".repeat(32), "{line}");
    // The same file on a CPU with neither RDSEED nor RDRAND: refused, not zeros.
    b.cpu = "qemu64,apic,fsgsbase,fxsr,rdtscp,xsave,xsaveopt,-rdrand,-rdseed".into();
    let without = grub::boot_image(&b).expect("starting QEMU");
    assert_eq!(without.exit, GuestExit::App(1), "{}", without.console);
    assert!(without.console.contains("FAIL random"), "{}", without.console);
    assert!(without.console.contains("neither RDSEED nor RDRAND"), "{}", without.console);
}

#[test]
fn bad_inputs_are_refused_when_packing_with_the_documented_status() {
    let dir = scratch().join("refusals");
    std::fs::create_dir_all(&dir).unwrap();
    let iso = dir.join("never.iso");
    let empty = scratch_file("empty-deploy.wasm", b"");
    let text = scratch_file("notes.wasm", b"these are notes");
    // A component header over garbage: the image would fail it at load.
    let broken = scratch_file("broken.wasm", b"\0asm\x0d\0\x01\0\xff\xff\xff");
    let core = scratch_file("core-deploy.wasm", b"\0asm\x01\0\0\0");
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let twin = other_dir.join("core-deploy.wasm");
    std::fs::copy(&core, &twin).unwrap();
    let seed = format!("ASTRID_SEED={}", "ab".repeat(32));
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["-o", path(&iso), "/nonexistent/x.wasm"], 66, "no such file"),
        (vec!["-o", path(&iso), path(&empty)], 65, "the file is empty"),
        (vec!["-o", path(&iso), path(&text)], 65, "not a WebAssembly binary"),
        // Precompiled by default: the host's compile of it is the check.
        (vec!["-o", path(&iso), path(&broken)], 65, "does not compile"),
        (vec!["-o", path(&iso)], 64, "no capsule given"),
        (vec!["-o", "never.zip", path(&core)], 64, ".hermit (uhyve), .iso"),
        (vec!["--env", &seed, "-o", path(&iso), path(&core)], 64, "repeat on every boot"),
        (vec!["--memory", "128", "-o", path(&iso), path(&core)], 64, "--memory is for .hermit files"),
        (vec!["--debug-exit", "-o", "never.hermit", path(&core)], 64, "--debug-exit is for bare-metal images"),
        (vec!["-o", path(&iso), path(&core), path(&twin)], 64, "two capsules are named core-deploy."),
    ];
    for (args, status, says) in cases {
        let (got, text) = pack(&args);
        assert_eq!(got, status, "pack {args:?}:\n{text}");
        assert!(text.contains(says), "pack {args:?} does not say {says:?}:\n{text}");
    }
    assert!(!iso.exists() && !Path::new("never.zip").exists() && !Path::new("never.hermit").exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "a refused pack left files behind");
}

#[test]
fn a_hermit_file_runs_under_uhyve_with_the_memory_it_asks_for() {
    let kvm = uhyve::detect_kvm();
    if kvm == Kvm::Absent {
        eprintln!("SKIPPED: .hermit under uhyve: this host has no /dev/kvm, so uhyve cannot run here");
        return;
    }
    let paths = Paths::discover();
    let uhyve_bin = xtask::setup::ensure_uhyve(&paths).expect("installing uhyve");
    let file = scratch().join("deploy.hermit");
    let key = key_file();
    let mut args = vec!["--audit-key", path(&key), "-o", path(&file)];
    if kvm == Kvm::PvmEmulator {
        // The emulator runs no SSE: the soft-float image, which checks the capsules.
        eprintln!("NOTE: /dev/kvm is the PVM emulator: the .hermit test uses the soft-float image (checks capsules); the normal image needs hardware KVM");
        args.push("--softfloat");
    } else {
        args.push("--precompile");
    }
    let hello = sdk_hello();
    args.push(&hello);
    packed(&args);
    let (config, entries) = xtask::pack::read_hermit(&file).unwrap();
    assert!(config.contains("app_args = [\"/root/sdk-hello"), "{config}");
    assert!(entries.iter().any(|(n, _)| n == "astrid.img"), "{entries:?}");

    let run = |flags: &[String]| uhyve::run_hermit_file(&uhyve_bin, &file, flags, Duration::from_secs(300)).expect("starting uhyve");
    let audit_dir = scratch().join("hermit-audit");
    std::fs::create_dir_all(&audit_dir).unwrap();
    // What pack printed: the file asks for 256 MiB, more than uhyve's default.
    let mut flags = vec!["-m".to_string(), "256MiB".to_string()];
    if kvm == Kvm::Hardware {
        flags.extend(["--file-mapping".to_string(), format!("{}:/root/audit", audit_dir.display())]);
    }
    let out = run(&flags);
    assert!(!out.timed_out, "{}", out.output);
    assert_eq!(out.status, Some(0), "{}", out.output);
    if kvm == Kvm::PvmEmulator {
        assert!(out.output.contains("astrid: capsule /root/sdk-hello.wasm: wasm component"), "{}", out.output);
        assert!(out.output.contains("capsules checked, not run"), "{}", out.output);
    } else {
        assert!(out.output.contains("sdk-hello: kv round trip"), "{}", out.output);
        assert_verifies_with_the_test_key(&out.output);
        let file_log = std::fs::read_to_string(audit_dir.join("audit.log")).expect("the mapped audit directory has audit.log");
        verify_signed(&file_log, false);
    }

    // Without `-m`, uhyve refuses the file: it asks for more than uhyve's default.
    let refused = run(&[]);
    assert_ne!(refused.status, Some(0), "{}", refused.output);
    assert!(refused.output.to_lowercase().contains("memory"), "{}", refused.output);
}

/// `ASTRID_AUDIT_DIR` (what a `.hermit` file sets): the log goes to `audit.log` in the
/// directory when it is there, and to the console only when it is not; hosted, where the
/// same code decides.
#[test]
fn the_audit_log_goes_into_the_audit_directory_only_when_it_exists() {
    let paths = Paths::discover();
    let bin = xtask::artifacts::ensure_hosted(&paths, false).expect("building the hosted binary");
    let capsule = common::artifacts().example_capsule.clone();
    let there = scratch().join("audit-there");
    std::fs::create_dir_all(&there).unwrap();
    let missing = scratch().join("audit-missing");
    for (dir, exists) in [(&there, true), (&missing, false)] {
        let out = Command::new(&bin).arg(&capsule).env("ASTRID_AUDIT_DIR", dir).output().unwrap();
        let console = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{console}{}", String::from_utf8_lossy(&out.stderr));
        let says = if exists { "is there: the audit log goes to its audit.log too" } else { "is not there (not mapped)" };
        assert!(console.contains(says), "{console}");
        let on_console = astrid_kernel::audit::verify(astrid_kernel::audit::extract(&console)).expect("console log verifies");
        if exists {
            let file = std::fs::read_to_string(dir.join("audit.log")).unwrap();
            let in_file = astrid_kernel::audit::verify(file.lines()).expect("file log verifies");
            assert_eq!(in_file.records, on_console.records);
        } else {
            assert!(!dir.exists(), "the image created {}", dir.display());
        }
    }
}
