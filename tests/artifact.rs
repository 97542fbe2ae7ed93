//! Precompiled artifacts are authenticated before the image maps any of their code:
//! only an artifact sealed by this deployment's precompile step (keyed BLAKE3 under its
//! artifact key, over this engine's fingerprint and the hash of every byte) loads. Each forgery —
//! one byte changed anywhere, another key, another engine build, no seal, no key in the
//! image — is refused with status 65 and an audit record naming the capsule, and never
//! runs. And the run command precompiles by default, with a key it makes once.
//!
//! The image is astrid-testing.img under QEMU TCG; the capsule is io-probe, whose
//! `block-timer` scenario prints `] ok block-timer` when it runs.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use astrid_kernel::engine::CodeTarget;
use astrid_kernel::settings::ArtifactKey;
use astrid_kernel::wasm::artifact::{self, Fingerprint, TRAILER_BYTES};
use common::Run;
use xtask::paths::Paths;
use xtask::qemu::{self, Boot};
use xtask::{artifacts, capsule, compile, prepare};

struct Fixture {
    image: PathBuf,
    /// io-probe's wasmtime artifact for astrid.img, unsealed.
    payload: Vec<u8>,
    /// The same, sealed with this process's key.
    sealed: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let paths = Paths::discover();
        common::artifacts();
        let wasm = capsule::build(&paths, &paths.root.join("tests/capsules/io-probe")).expect("building io-probe");
        let bytes = std::fs::read(&wasm).unwrap();
        let payload = compile::precompile(&wasm, &bytes, CodeTarget::HermitImage).expect("precompiling io-probe");
        let sealed = compile::seal(&payload, CodeTarget::HermitImage, prepare::session_key());
        Fixture { image: artifacts::ensure_testing(&paths).expect("building astrid-testing.img"), payload, sealed }
    })
}

fn unique_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = common::scratch().join(format!("artifact-{}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One boot with these capsules (name, bytes), with the image given `key` (or none).
fn boot(capsules: &[(&str, Vec<u8>)], key: Option<&ArtifactKey>) -> Run {
    let dir = unique_dir();
    let art = common::artifacts();
    let mut boot = Boot::new(art.loader.clone(), fixture().image.clone());
    boot.capsules = capsules
        .iter()
        .map(|(name, bytes)| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    boot.kernel_args = vec![qemu::env_arg("ASTRID_TEST_ARG", "block-timer")];
    if let Some(key) = key {
        boot.kernel_args.push(qemu::env_arg(astrid_kernel::settings::ARTIFACT_KEY, key));
    }
    boot.timeout = Duration::from_secs(120);
    Run::boot(&boot)
}

/// Every capsule of `names` refused with 65 for `why`, each with its audit record and
/// end, and none of them run (nothing loaded, no scenario output).
fn assert_refused(run: &Run, names: &[&str], why: &str) {
    run.assert_status(65);
    let summary = run.assert_audit_verifies();
    assert_eq!((summary.capsules_loaded, summary.capsules_ended), (0, names.len() as u64), "{}", run.console);
    assert!(!run.console.contains("] ok block-timer") && !run.console.contains("precompiled component in"), "a forged artifact ran:\n{}", run.console);
    let records: Vec<serde_json::Value> =
        astrid_kernel::audit::extract(&run.console).iter().map(|l| serde_json::from_str(l).expect("an audit line is JSON")).collect();
    for name in names {
        run.assert_says(&format!("capsule {name}: cannot be loaded: "));
        let record = records
            .iter()
            .find(|r| r["fn"] == "astrid:capsule/load" && r["capsule"] == *name)
            .unwrap_or_else(|| panic!("no audit record of {name}'s refusal:\n{}", run.console));
        assert_eq!(record["outcome"], "error", "{record}");
        let error = record["error"].as_str().unwrap_or_default();
        assert!(error.contains(name) && error.contains(why), "{name}: {error}");
    }
}

#[test]
fn a_sealed_artifact_runs_precompiled() {
    let f = fixture();
    let run = boot(&[("probe.cwasm", f.sealed.clone())], Some(prepare::session_key()));
    run.assert_status(0)
        .assert_says("capsule probe.cwasm: sealed precompiled artifact")
        .assert_says("precompiled component in")
        .assert_says("] ok block-timer");
    assert_eq!(run.assert_audit_verifies().capsules_loaded, 1);
}

#[test]
fn one_changed_byte_anywhere_in_an_artifact_is_refused_before_it_runs() {
    let f = fixture();
    let (n, payload) = (f.sealed.len(), f.payload.len());
    // The payload's ELF header, its middle (machine code and data), its last byte; the
    // trailer's fingerprint, MAC and magic.
    let positions = [
        ("elf-header", 5),
        ("payload-quarter", payload / 4),
        ("payload-middle", payload / 2),
        ("payload-last", payload - 1),
        ("fingerprint", n - TRAILER_BYTES + 3),
        ("mac-first", n - 48),
        ("mac-last", n - 17),
        ("magic", n - 1),
    ];
    let capsules: Vec<(String, Vec<u8>)> = positions
        .iter()
        .map(|(what, at)| {
            let mut bytes = f.sealed.clone();
            bytes[*at] ^= 0x20;
            (format!("{what}.cwasm"), bytes)
        })
        .collect();
    let named: Vec<(&str, Vec<u8>)> = capsules.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let run = boot(&named, Some(prepare::session_key()));
    // A changed magic leaves no seal to check; the fingerprint names another engine;
    // any other byte breaks the MAC.
    let names: Vec<&str> = named.iter().map(|(n, _)| *n).collect();
    assert_refused(&run, &names, "not loaded");
    run.assert_says("capsule magic.cwasm: cannot be loaded: a precompiled artifact without a seal");
    run.assert_says("capsule fingerprint.cwasm: cannot be loaded: a precompiled artifact made for another engine build");
    for name in ["elf-header", "payload-quarter", "payload-middle", "payload-last", "mac-first", "mac-last"] {
        run.assert_says(&format!("capsule {name}.cwasm: cannot be loaded: a precompiled artifact whose seal does not verify"));
    }
}

#[test]
fn an_artifact_sealed_with_another_key_is_refused() {
    let f = fixture();
    let other = ArtifactKey([0x5a; 32]);
    let run = boot(&[("other-key.cwasm", compile::seal(&f.payload, CodeTarget::HermitImage, &other))], Some(prepare::session_key()));
    assert_refused(&run, &["other-key.cwasm"], "seal does not verify");
}

#[test]
fn an_artifact_made_for_another_engine_build_is_refused() {
    let f = fixture();
    // The same machine code, honestly sealed with the right key, but for an engine whose
    // description differs (another wasmtime, settings or target): the image's own
    // fingerprint is what the MAC must cover.
    let description = astrid_kernel::engine::config::engine_description(CodeTarget::HermitImage).replace("50.0.1", "50.0.2");
    let sealed = artifact::seal(&f.payload, &Fingerprint::of(&description), &prepare::session_key().0);
    let run = boot(&[("other-engine.cwasm", sealed)], Some(prepare::session_key()));
    assert_refused(&run, &["other-engine.cwasm"], "made for another engine build");
}

#[test]
fn an_unsealed_artifact_and_an_image_without_a_key_are_refused() {
    let f = fixture();
    let run = boot(&[("unsealed.cwasm", f.payload.clone())], Some(prepare::session_key()));
    assert_refused(&run, &["unsealed.cwasm"], "without a seal");
    let run = boot(&[("no-key.cwasm", f.sealed.clone())], None);
    assert_refused(&run, &["no-key.cwasm"], "has no artifact key");
}

/// The run command with `state` as its state directory.
fn run_command(state: &Path, args: &[&str]) -> (i32, String) {
    common::run_command(180, &[(astrid_kernel::settings::STATE_DIR, state)], args)
}

#[test]
fn the_run_command_precompiles_by_default_with_a_key_it_makes_once() {
    use std::os::unix::fs::PermissionsExt;
    common::artifacts();
    let root = Paths::discover().root;
    let capsule = root.join("tests/capsules/sdk-hello");
    let capsule = capsule.to_str().unwrap();
    let state = unique_dir().join("state");
    let (code, text) = run_command(&state, &[capsule]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("made the artifact key"), "{text}");
    assert!(text.contains("capsule sdk-hello.cwasm: sealed precompiled artifact") && text.contains("precompiled component in"), "{text}");
    assert!(text.contains("kv round trip: hello from the Astrid SDK"), "{text}");
    let key_file = state.join("artifact.key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(!text.contains(key.trim()), "the key was echoed:\n{text}");

    // The same key again; the artifact from the cache (nothing compiled).
    let (code, text) = run_command(&state, &[capsule]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("made the artifact key") && !text.contains("==> compiled"), "{text}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);

    // --jit: the image compiles the .wasm itself (on one vCPU: README, known limits).
    let (code, text) = run_command(&state, &["--jit", "--cpus", "1", capsule]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("capsule sdk-hello.wasm: wasm component") && text.contains("compiled component in"), "{text}");
    assert!(text.contains("booting astrid-jit.img, the image with Cranelift"), "--jit did not say it boots the JIT image:\n{text}");

    // An artifact of this deployment, run by a deployment with another key: refused.
    let cwasm = unique_dir().join("sdk-hello.cwasm");
    let wasm = capsule::build(&Paths::discover(), Path::new(capsule)).unwrap();
    let ours = prepare::deployment_key(Some(&key_file)).unwrap();
    compile::compile(&wasm, Some(&cwasm), CodeTarget::HermitImage, &ours).unwrap();
    let other_key = unique_dir().join("other.key");
    std::fs::write(&other_key, format!("{}\n", ArtifactKey([0x33; 32]))).unwrap();
    let (code, text) = run_command(&state, &["--artifact-key", other_key.to_str().unwrap(), cwasm.to_str().unwrap()]);
    assert_eq!(code, 65, "{text}");
    assert!(text.contains("capsule sdk-hello.cwasm: cannot be loaded: a precompiled artifact whose seal does not verify"), "{text}");
}
