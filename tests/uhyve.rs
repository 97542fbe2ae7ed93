//! The uhyve smoke test: boots astrid.img under uhyve 0.10.0 with a mapped capsule file
//! and checks output, argument handling and the exit status. On a PVM host (this
//! project's build machines) the soft-float image on the xgetbv-free kernel is used;
//! with hardware KVM the normal image. Skipped, with the reason printed, only where no
//! KVM device exists at all.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::scratch_file;
use xtask::paths::Paths;
use xtask::uhyve::{self, Kvm, UhyveOutcome, UhyveRun};
use xtask::{artifacts, setup};

struct Setup {
    /// Guest environment: on PVM hosts the image only checks capsules, since the
    /// emulator cannot run JIT code (SSE).
    env: Vec<(String, String)>,
    uhyve: PathBuf,
    image: PathBuf,
    config: PathBuf,
    example: PathBuf,
}

fn setup() -> Option<Setup> {
    let kvm = uhyve::detect_kvm();
    if kvm == Kvm::Absent {
        eprintln!("SKIPPED: uhyve smoke test: this host has no /dev/kvm, so uhyve cannot run here");
        return None;
    }
    let paths = Paths::discover();
    let art = common::artifacts();
    let image = match kvm {
        Kvm::PvmEmulator => artifacts::ensure_softfloat(&paths).expect("building the soft-float image"),
        // The example goes as a plain .wasm: the image with Cranelift compiles it.
        _ => common::jit_img().clone(),
    };
    let env = if kvm == Kvm::PvmEmulator {
        vec![("ASTRID_CHECK_ONLY".to_string(), "1".to_string())]
    } else {
        Vec::new()
    };
    Some(Setup {
        env,
        uhyve: setup::ensure_uhyve(&paths).expect("installing uhyve"),
        image,
        config: paths.root.join("uhyve.toml"),
        example: art.example_capsule.clone(),
    })
}

fn boot(s: &Setup, capsules: &[PathBuf], extra: &[String]) -> UhyveOutcome {
    let run = UhyveRun {
        uhyve: &s.uhyve,
        image: &s.image,
        config: &s.config,
        capsules,
        extra_args: extra,
        env: &s.env,
        timeout: Duration::from_secs(300),
    };
    let out = uhyve::run(&run, false).expect("starting uhyve");
    assert!(!out.timed_out, "uhyve guest hung; output:\n{}", out.output);
    out
}

// One test function: uhyve boots on the PVM emulator take tens of seconds each, so
// they run one after another rather than competing for the two cores.
#[test]
fn uhyve_runs_a_mapped_capsule_and_propagates_statuses() {
    let Some(s) = setup() else { return };

    let ok = boot(&s, std::slice::from_ref(&s.example), &[]);
    assert_eq!(ok.status, Some(0), "output:\n{}", ok.output);
    assert!(
        ok.output.contains("astrid: capsule /root/hello.wasm: wasm component (binary version 0xd)"),
        "output:\n{}",
        ok.output
    );

    // argv: a second, unmapped path after the mapped one is seen by the application
    // and fails by name with the not-found status.
    let missing = boot(&s, std::slice::from_ref(&s.example), &["/root/unmapped.wasm".into()]);
    assert_eq!(missing.status, Some(66), "output:\n{}", missing.output);
    assert!(missing.output.contains("capsule /root/unmapped.wasm: cannot be opened"), "{}", missing.output);

    let empty = boot(&s, &[scratch_file("empty.wasm", b"")], &[]);
    assert_eq!(empty.status, Some(65), "output:\n{}", empty.output);
    assert!(empty.output.contains("the file is empty"), "{}", empty.output);
}

#[test]
fn the_run_command_maps_the_capsule_for_the_user() {
    if setup().is_none() {
        return;
    }
    let example = common::artifacts().example_capsule.clone();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["run", "--uhyve", "--timeout", "300"])
        .arg(&example)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // With hardware KVM the run command precompiles and seals the capsule; the PVM
    // check-only image runs nothing, so it gets the .wasm as it is.
    let expected = match uhyve::detect_kvm() {
        Kvm::PvmEmulator => "astrid: capsule /root/hello.wasm: wasm component",
        _ => "astrid: capsule /root/hello.cwasm: sealed precompiled artifact",
    };
    assert!(text.contains(expected), "{text}");
}
