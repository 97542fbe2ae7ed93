//! `xtask fuzz [--seconds N] [TARGET]`: the libFuzzer targets of `fuzz/`, built and run
//! without the cargo-fuzz binary. The build passes the sanitizer-coverage flags cargo-fuzz
//! passes (less AddressSanitizer: the code fuzzed is safe Rust, and the one crate that
//! casts bytes in place, hermit-entry, is exercised on buffers we own) and `--cfg
//! fuzzing`, with the application toolchain; each target then runs for a bounded time
//! from its committed seeds (`fuzz/seeds/<target>`) and the corpus kept in the build
//! output (`<out>/fuzz/corpus/<target>`), so later runs start where earlier ones ended.
//!
//! A failing input is saved as `<out>/fuzz/artifacts/<target>-crash-…` (or `-timeout-`,
//! `-oom-`); the report names it and the command that replays it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use wait_timeout::ChildExt;

use crate::paths::Paths;
use crate::{process, toolchain};

/// A fuzz target: `fuzz/fuzz_targets/<name>.rs`, and what it covers.
#[derive(Debug)]
pub struct Target {
    pub name: &'static str,
    pub covers: &'static str,
}

pub const TARGETS: &[Target] = &[
    Target { name: "capsule", covers: "boot settings → capsule discovery → manifest decoding; the wasm preamble check" },
    Target { name: "manifest", covers: "Capsule.toml parsing with its net and ipc pattern checks" },
    Target { name: "net_addr", covers: "address classification and the airlock, differential against std's Ipv4Addr/Ipv6Addr" },
    Target { name: "kv_journal", covers: "kv journal replay from arbitrary .kv0/.kv1 bytes, reopen and append" },
    Target { name: "audit_verify", covers: "the audit verifier on arbitrary logs and console captures" },
    Target { name: "boot_multiboot", covers: "multiboot information → module checks → placement → memory nodes → device tree" },
    Target { name: "boot_elf", covers: "the loader's ELF check, differential against hermit-entry's parse and load" },
    Target { name: "boot_cmdline", covers: "the kernel command line, read back as Hermit's env parser and the image read it" },
];

/// How long `scripts/test` runs each target.
pub const TEST_SECONDS: u64 = 10;
/// One input running this long is a hang (a failure).
const INPUT_TIMEOUT_S: u64 = 10;
/// A kept corpus past this many inputs is minimised after a run (libFuzzer's `-merge=1`:
/// the fewest inputs that cover what they all cover), so it does not grow without bound
/// in a persistent build-output directory.
const CORPUS_FILES: usize = 2000;
/// libFuzzer's memory limit for the whole process.
const RSS_LIMIT_MB: u64 = 2048;
const HOST: &str = "x86_64-unknown-linux-gnu";

/// cargo-fuzz's instrumentation: edge coverage with inline 8-bit counters and a PC table
/// (what libFuzzer reads), comparison tracing (so it learns magic numbers and lengths),
/// and `--cfg fuzzing`. Frame pointers keep the crash backtraces readable.
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    "-Cforce-frame-pointers",
];

/// Where the fuzz build, corpora, artifacts and logs go.
fn out_dir(paths: &Paths) -> PathBuf {
    paths.out.join("fuzz")
}

/// Checks `only` names a target; the targets to run.
pub fn select(only: Option<&str>) -> Result<Vec<&'static Target>> {
    match only {
        None => Ok(TARGETS.iter().collect()),
        Some(name) => match TARGETS.iter().find(|t| t.name == name) {
            Some(t) => Ok(vec![t]),
            None => bail!(
                "no fuzz target {name:?}: the targets are {}",
                TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
            ),
        },
    }
}

/// `cargo <verb>` over the fuzz crate as its build sees it: the application toolchain, the
/// host target, the instrumentation flags (with an explicit `--target` they reach the
/// targets' crates only, not build scripts or proc macros).
fn cargo(paths: &Paths, verb: &str) -> Command {
    let mut cmd = process::cargo(toolchain::APP);
    cmd.current_dir(paths.root.join("fuzz"))
        .args([verb, "--release", "--locked", "--bins", "--target", HOST, "--target-dir"])
        .arg(out_dir(paths).join("target"))
        .env("RUSTFLAGS", RUSTFLAGS.join(" "));
    cmd
}

/// Builds every target (one cargo build) and returns the directory of the binaries.
pub fn build(paths: &Paths) -> Result<PathBuf> {
    toolchain::require_ensured("the fuzz build")?;
    ensure_cxx()?;
    process::run(&mut cargo(paths, "build")).context("building the fuzz targets")?;
    Ok(out_dir(paths).join("target").join(HOST).join("release"))
}

/// Clippy over the fuzz crate, warnings as errors (the kernel and the loader it uses are
/// linted in their own builds).
pub fn clippy(paths: &Paths) -> Result<()> {
    toolchain::require_ensured("clippy on the fuzz targets")?;
    process::run(cargo(paths, "clippy").args(["--", "-D", "warnings"]))
}

/// libFuzzer is C++, built by libfuzzer-sys's build script.
fn ensure_cxx() -> Result<()> {
    let found = |name: &str| Command::new(name).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if found("c++") || found("g++") || found("clang++") {
        return Ok(());
    }
    // A fresh CI machine may have none: install Debian's, as setup installs QEMU.
    if crate::setup::is_root() {
        crate::step("installing g++ (Debian package: libFuzzer is C++)");
        process::run(Command::new("apt-get").args(["update", "-qq"]))?;
        process::run(
            Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y", "-qq", "--no-install-recommends", "g++"]),
        )?;
        if found("g++") {
            return Ok(());
        }
    }
    bail!("the fuzz targets link libFuzzer, which needs a C++ compiler: install one (`apt-get install g++`)")
}

/// What one target's run came to.
pub struct Outcome {
    pub target: &'static str,
    pub passed: bool,
    /// Inputs run, and coverage (edges) at the end, when libFuzzer said.
    pub runs: Option<u64>,
    pub edges: Option<u64>,
    pub elapsed: Duration,
    /// The input that failed, and the log of the run.
    pub artifact: Option<PathBuf>,
    pub log: PathBuf,
}

/// Builds the targets and runs each of `targets` for `seconds`; prints one line per
/// target and, for a failure, what failed and how to replay it. True when all passed.
pub fn run(paths: &Paths, seconds: u64, targets: &[&'static Target]) -> Result<bool> {
    let bins = build(paths)?;
    let mut passed = true;
    for target in targets {
        let outcome = run_one(paths, &bins, target, seconds)?;
        report(&outcome, &bins);
        passed &= outcome.passed;
    }
    Ok(passed)
}

fn run_one(paths: &Paths, bins: &Path, target: &'static Target, seconds: u64) -> Result<Outcome> {
    let out = out_dir(paths);
    let corpus = out.join("corpus").join(target.name);
    let artifacts = out.join("artifacts");
    let logs = out.join("logs");
    // The kv journal target writes its store files under the temporary directory: in
    // memory where there is a tmpfs (on a disk shared with builds it ran 100 times slower).
    let shm = Path::new("/dev/shm");
    let scratch_root = if shm.is_dir() { shm.join(format!("astrid-fuzz-{}", std::process::id())) } else { out.join("tmp") };
    let scratch = scratch_root.join(target.name);
    for dir in [&corpus, &artifacts, &logs, &scratch] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let seeds = paths.root.join("fuzz/seeds").join(target.name);
    let log = logs.join(format!("{}.log", target.name));
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(bins.join(target.name));
    cmd.arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/{}-", artifacts.display(), target.name))
        .arg("-print_final_stats=1")
        .env("TMPDIR", &scratch)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let dict = paths.root.join("fuzz/dicts").join(format!("{}.dict", target.name));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", process::show(&cmd)))?;
    // libFuzzer stops itself; this only guards against a run that never ends (loading a
    // huge corpus, a hang libFuzzer's own timer misses).
    let limit = Duration::from_secs(seconds + 120 + INPUT_TIMEOUT_S);
    let status = match child.wait_timeout(limit)? {
        Some(status) => Some(status),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    };
    let elapsed = started.elapsed();
    if status.is_some_and(|s| s.success()) {
        minimise(&bins.join(target.name), &corpus, &scratch)?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = std::fs::remove_dir(&scratch_root);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    Ok(Outcome {
        target: target.name,
        passed: status.is_some_and(|s| s.success()),
        runs: stat(&text, "stat::number_of_executed_units:"),
        edges: text.lines().rev().find_map(|l| field(l, "cov:")),
        elapsed,
        artifact: text.lines().find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| PathBuf::from(p.trim()))),
        log,
    })
}

/// Replaces a corpus of more than [`CORPUS_FILES`] inputs by its minimal subset.
fn minimise(bin: &Path, corpus: &Path, scratch: &Path) -> Result<()> {
    if std::fs::read_dir(corpus)?.count() <= CORPUS_FILES {
        return Ok(());
    }
    let merged = corpus.with_extension("merged");
    let _ = std::fs::remove_dir_all(&merged);
    std::fs::create_dir_all(&merged)?;
    let status = Command::new(bin)
        .arg("-merge=1")
        .arg(&merged)
        .arg(corpus)
        .env("TMPDIR", scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("minimising {}", corpus.display()))?;
    if status.success() {
        std::fs::remove_dir_all(corpus)?;
        std::fs::rename(&merged, corpus)?;
    } else {
        let _ = std::fs::remove_dir_all(&merged);
    }
    Ok(())
}

/// The number after `name` on a line of its own.
fn stat(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.trim().strip_prefix(name)?.trim().parse().ok())
}

/// The number after `name` within a line (`cov: 445 ft: …`).
fn field(line: &str, name: &str) -> Option<u64> {
    let (_, rest) = line.split_once(name)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn report(o: &Outcome, bins: &Path) {
    let figures = match (o.runs, o.edges) {
        (Some(runs), Some(edges)) => format!("{runs} inputs, {edges} edges covered"),
        (Some(runs), None) => format!("{runs} inputs"),
        _ => "no statistics".to_string(),
    };
    if o.passed {
        eprintln!("    fuzz {:<15} ok     {figures} in {:.0?}", o.target, o.elapsed);
        return;
    }
    eprintln!("    fuzz {:<15} FAILED {figures} in {:.0?}", o.target, o.elapsed);
    let text = std::fs::read_to_string(&o.log).unwrap_or_default();
    // What went wrong: the panic message (or libFuzzer's own verdict) and a few lines on.
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("panicked at") || l.starts_with("==") && l.contains("ERROR: libFuzzer"))
        .unwrap_or(lines.len().saturating_sub(12));
    for l in lines[start..].iter().take(12) {
        eprintln!("      | {l}");
    }
    match &o.artifact {
        Some(a) => eprintln!(
            "      the input: {}\n      replay it:  {} {}",
            a.display(),
            bins.join(o.target).display(),
            a.display()
        ),
        None => eprintln!("      no input was saved (the run was stopped?)"),
    }
    eprintln!("      full log:   {}", o.log.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_source_and_seeds() {
        let root = Paths::discover().root;
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
        for t in TARGETS {
            assert!(root.join(format!("fuzz/fuzz_targets/{}.rs", t.name)).is_file(), "{}", t.name);
            assert!(manifest.contains(&format!("name = \"{}\"", t.name)), "{} is not a [[bin]] of fuzz/Cargo.toml", t.name);
            let seeds = std::fs::read_dir(root.join("fuzz/seeds").join(t.name)).map(|d| d.count()).unwrap_or(0);
            assert!(seeds > 0, "fuzz/seeds/{} holds no seed", t.name);
        }
        let sources = std::fs::read_dir(root.join("fuzz/fuzz_targets")).unwrap().count();
        assert_eq!(sources, TARGETS.len(), "a fuzz target that TARGETS does not list");
        assert!(select(Some("nope")).unwrap_err().to_string().contains("boot_elf"));
    }

    #[test]
    fn reads_libfuzzers_figures() {
        let text = "#1024\tDONE   cov: 445 ft: 1547 corp: 279/33Kb\nstat::number_of_executed_units: 339194\n";
        assert_eq!(stat(text, "stat::number_of_executed_units:"), Some(339194));
        assert_eq!(text.lines().rev().find_map(|l| field(l, "cov:")), Some(445));
    }

    /// The seeds made from the kernel's own writers (journals, audit logs) and sample
    /// inputs: written with `ASTRID_WRITE_SEEDS=1 cargo test -p xtask --lib fuzz`, else each
    /// committed seed must still be what its target's parser accepts (a seed the parser
    /// refuses would start the fuzzer at the first error path).
    mod seeds {
        use std::collections::BTreeMap;

        use astrid_kernel::audit::{self, Chain, IoEvent, Options, Outcome, RunBinding, SigningKey};
        use astrid_kernel::capsule::{self, CapsuleSource};
        use astrid_kernel::kv::journal::{Change, Journal};
        use astrid_kernel::manifest::Manifest;
        use astrid_kernel::net::addr::Pattern;
        use astrid_kernel::settings::Settings;

        use super::*;

        fn seed_dir(target: &str) -> PathBuf {
            Paths::discover().root.join("fuzz/seeds").join(target)
        }

        /// Writes the seed when asked to; returns the committed bytes to check.
        fn seed(target: &str, name: &str, made: &[u8]) -> Vec<u8> {
            let path = seed_dir(target).join(name);
            if std::env::var_os("ASTRID_WRITE_SEEDS").is_some() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, made).unwrap();
            }
            std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e} — write the seeds with `ASTRID_WRITE_SEEDS=1 cargo test -p xtask --lib fuzz`", path.display())
            })
        }

        const MANIFEST: &str = r#"# A capsule's manifest, every section the image reads.
[package]
name = "echo"
version = "1.0.0"

[capabilities]
net_bind = ["127.0.0.1:7700", "localhost:*"]
net_connect = ["10.0.2.2:8080", "example.org:*", "[2001:db8::1]:443", "*:80"]
net_udp = ["bind:127.0.0.1:*", "127.0.0.1:5353"]
ipc_publish = ["chat.**", "status.*.up"]
ipc_subscribe = ["chat.**"]

[limits]
memory_mib = 32
kv_bytes = 65536
handles = 512
connect_timeout_ms = 5000

[config]
greeting = "hello"
port = 8080
ratio = 0.5
verbose = true
"#;

        #[test]
        fn manifest_and_capsule_seeds_parse() {
            let m = Manifest::parse(&String::from_utf8(seed("manifest", "full.toml", MANIFEST.as_bytes())).unwrap()).unwrap();
            assert_eq!(m.capabilities().len(), 11);
            let small = "[package]\nname = \"hello\"\n[limits]\nmemory_mib = 8\n";
            Manifest::parse(&String::from_utf8(seed("manifest", "small.toml", small.as_bytes())).unwrap()).unwrap();

            // Settings as the boot path writes them, then the capsule's first bytes.
            let settings = format!(
                "ASTRID_BOOT=multiboot\nASTRID_CAPSULES=2\nASTRID_CAPSULE_0=0x523000,4660,echo.wasm\n\
                 ASTRID_CAPSULE_1=0x600000,8,it's #odd,name.wasm\nASTRID_MANIFEST_0={}\nASTRID_MEMORY_MIB=32\n\
                 ASTRID_DEBUG_EXIT=0xf4\nASTRID_AUDIT=off\n",
                Manifest::encode(MANIFEST)
            );
            let component = b"\0asm\x0d\0\x01\0";
            let core = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0";
            for (name, bytes) in [("component.txt", &component[..]), ("core-module.txt", &core[..])] {
                let made = [settings.as_bytes(), b"\0", bytes].concat();
                let committed = seed("capsule", name, &made);
                let at = committed.iter().position(|&b| b == 0).unwrap();
                let text = std::str::from_utf8(&committed[..at]).unwrap();
                let pairs = text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string()));
                let settings = Settings::from_env_pairs(pairs).unwrap();
                let found = capsule::discover(&[], &settings).unwrap();
                assert!(matches!(&found[1], CapsuleSource::BootModule { name, .. } if name == "it's #odd,name.wasm"));
                Manifest::parse(&Manifest::decode(&settings.manifests[&0]).unwrap()).unwrap();
                astrid_kernel::wasm::inspect(&committed[at + 1..]).unwrap();
            }
        }

        #[test]
        fn net_addr_seeds_parse() {
            let texts = ["127.0.0.1:7700", "[::1]:*", "localhost:8080", "example.org:443", "*:*", "[64:ff9b::7f00:1]:80", "::ffff:10.0.0.1"];
            for (i, text) in texts.iter().enumerate() {
                let v4 = [198u8, 18, 0, i as u8];
                let v6 = u128::from_be_bytes([0x20, 0x02, 0x7f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, i as u8]).to_le_bytes();
                let made = [&v4[..], &v6, &80u16.to_le_bytes(), text.as_bytes()].concat();
                let committed = seed("net_addr", &format!("address-{i}.bin"), &made);
                let text = std::str::from_utf8(&committed[22..]).unwrap();
                assert!(Pattern::parse(text).is_ok() || astrid_kernel::net::addr::classify(text).is_some(), "{text}");
            }
        }

        /// The kv_journal target's input: flags (bit 0: the large quota), the split, both files.
        fn journal_input(dir: &Path) -> Vec<u8> {
            let kv0 = std::fs::read(dir.join("cap.kv0")).unwrap_or_default();
            let kv1 = std::fs::read(dir.join("cap.kv1")).unwrap_or_default();
            [&[1u8][..], &(kv0.len() as u16).to_le_bytes(), &kv0, &kv1].concat()
        }

        #[test]
        fn kv_journal_seed_replays() {
            let dir = std::env::temp_dir().join(format!("astrid-fuzz-seed-kv-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let (mut j, mut s) = Journal::open(&dir, "cap", 16 << 20).unwrap();
            for (k, v) in [("a", &b"1"[..]), ("app.x", b"22"), ("app.y", b"333"), ("b", b"")] {
                s.set(k, v.to_vec()).unwrap();
                j.append(Change::Set(k, v), &s).unwrap();
            }
            s.delete("a").unwrap();
            j.append(Change::Delete("a"), &s).unwrap();
            s.clear_prefix("app.y");
            j.append(Change::ClearPrefix("app.y"), &s).unwrap();
            drop(j);
            // Opened again: a snapshot in the other file, then one more change.
            let (mut j, mut s) = Journal::open(&dir, "cap", 16 << 20).unwrap();
            s.set("c", b"4".to_vec()).unwrap();
            j.append(Change::Set("c", b"4"), &s).unwrap();
            drop(j);
            let committed = seed("kv_journal", "two-generations.bin", &journal_input(&dir));
            std::fs::remove_dir_all(&dir).unwrap();

            let split = usize::from(u16::from_le_bytes([committed[1], committed[2]]));
            let (kv0, kv1) = committed[3..].split_at(split);
            let dir = std::env::temp_dir().join(format!("astrid-fuzz-seed-kv-check-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cap.kv0"), kv0).unwrap();
            std::fs::write(dir.join("cap.kv1"), kv1).unwrap();
            let (_, s) = Journal::open(&dir, "cap", 16 << 20).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            let entries: BTreeMap<String, Vec<u8>> = s.list("").into_iter().map(|k| (k.clone(), s.get(&k).unwrap().unwrap())).collect();
            let expected: BTreeMap<String, Vec<u8>> =
                [("app.x", &b"22"[..]), ("b", b""), ("c", b"4")].into_iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
            assert_eq!(entries, expected);
        }

        /// A closed log of two capsules, bytes fixed by a fixed clock, nonce and key; only
        /// ASCII in its strings, so its canonical form is the same however non-ASCII is
        /// escaped.
        fn audit_log(signed: bool) -> Vec<String> {
            let mut t = 1_000u64;
            let clock = Box::new(move || {
                t += 250;
                t
            });
            let chain = Chain::with_clock(clock).bind(RunBinding { nonce: [7; 32], build: "astrid-kernel fuzz-seed".into() });
            let mut chain = if signed { chain.sign_with(SigningKey::from_bytes(&[1; 32])) } else { chain };
            let mut lines = Vec::new();
            lines.extend(chain.capsule_load("alpha", "alice", blake3::hash(b"alpha wasm").as_bytes(), Some("[package]\nname = \"alpha\"\n")).unwrap());
            lines.extend(chain.capsule_load("beta", "bob", blake3::hash(b"beta wasm").as_bytes(), None).unwrap());
            for i in 0..3 {
                let mut e = IoEvent::ok("alpha", "alice", "astrid:io/streams.input-stream.read", 10 + i);
                e.op.bytes = Some(100 * i);
                lines.extend(chain.append(e).unwrap());
                let mut p = IoEvent::ok("beta", "bob", "astrid:io/poll.poll", 7);
                p.op.pollable_count = Some(3);
                p.op.ready_count = Some(1);
                lines.extend(chain.append(p).unwrap());
            }
            let mut failed = IoEvent::ok("alpha", "alice", "astrid:kv/store.set", 5);
            failed.op.outcome = Outcome::Error;
            failed.op.error = Some("quota".into());
            lines.extend(chain.append(failed).unwrap());
            lines.extend(chain.capsule_end("alpha").unwrap().0);
            lines.extend(chain.capsule_end("beta").unwrap().0);
            lines.extend(chain.close().unwrap());
            lines
        }

        #[test]
        fn audit_seeds_verify() {
            // Flags 0: closed, no pinned key; flags 2: the seed key pinned.
            let unsigned = [&[0u8][..], audit_log(false).join("\n").as_bytes(), b"\n"].concat();
            let console: String = audit_log(true).iter().map(|l| format!("astrid: a console line\n{}\r\n", audit::frame(l))).collect();
            let signed = [&[2u8][..], console.as_bytes()].concat();
            for (name, made, key) in [("unsigned.log", unsigned, None), ("signed-console.txt", signed, Some(SigningKey::from_bytes(&[1; 32])))] {
                let committed = seed("audit_verify", name, &made);
                let text = std::str::from_utf8(&committed[1..]).unwrap();
                let lines: Vec<&str> = if text.contains(audit::FRAME_PREFIX) { audit::extract(text) } else { text.lines().collect() };
                let options = Options { key: key.map(|k| k.verifying_key()), open: false };
                let summary = audit::verify_with(lines.iter().copied(), &options).unwrap_or_else(|b| panic!("{name}: {b}"));
                assert_eq!((summary.capsules_loaded, summary.capsules_ended), (2, 2), "{name}");
            }
        }
    }
}
