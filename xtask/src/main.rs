//! `cargo xtask …` / `scripts/*`: build, run, test and benchmark astrid.img.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use astrid_kernel::exit::GuestExit;
use clap::{Parser, Subcommand, ValueEnum};
use xtask::paths::Paths;
use xtask::qemu::{self, Boot, Firmware};
use xtask::uhyve::{self, Kvm};
use astrid_kernel::engine::CodeTarget;
use xtask::{artifacts, bench, capsule, compile, process, setup, toolchain};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, run, test and benchmark astrid.img")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchains, QEMU (and uhyve with --uhyve) this project needs.
    Setup {
        #[arg(long)]
        uhyve: bool,
    },
    /// Build astrid.img, the hello baseline, the loader and the example capsule.
    Build {
        /// Also build the soft-float image for uhyve on PVM hosts.
        #[arg(long)]
        softfloat: bool,
    },
    /// Run capsules in astrid.img: `run path/to/capsule.wasm` (or a capsule crate dir).
    Run(RunArgs),
    /// Run every test: host unit tests, then the QEMU and uhyve integration tests.
    Test {
        /// Arguments passed on to the test binaries (e.g. a name filter).
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// Precompile a capsule on the host for astrid.img (same wasmtime, same Config).
    Compile {
        input: PathBuf,
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Compile for this machine (hosted mode) instead of astrid.img.
        #[arg(long)]
        native: bool,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Run the benchmarks and print their figures side by side.
    Bench {
        /// Runs per figure (the boot benchmark uses at least 10).
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Only this group: `boot`, `engine` or `net`.
        #[arg(long)]
        only: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check sequence, hash chain and structure; name the first break (exit 1).
    Verify {
        log: PathBuf,
        /// Accept a log that has no close record yet (still being written).
        #[arg(long)]
        open: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Under {
    Qemu,
    Uhyve,
    Hosted,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Capsule files (.wasm) or capsule crate directories (built from source).
    capsules: Vec<PathBuf>,
    /// Where to run: QEMU TCG (default), uhyve (default where hardware KVM exists), or
    /// as a Linux process.
    #[arg(long, value_enum)]
    under: Option<Under>,
    /// Shorthand for --under uhyve.
    #[arg(long, conflicts_with = "under")]
    uhyve: bool,
    /// Shorthand for --under hosted.
    #[arg(long, conflicts_with_all = ["under", "uhyve"])]
    hosted: bool,
    /// Guest memory in MiB (QEMU; uhyve takes uhyve.toml).
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Guest CPUs (QEMU). Two by default: on one CPU under heavy host load a capsule
    /// spinning in pure compute can starve the image's deadline watchdogs (README, known
    /// limits).
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Give up after this many seconds (exit status 124).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// QEMU firmware: qboot starts fastest; SeaBIOS is needed with PCI devices.
    #[arg(long, value_enum, default_value_t = FirmwareArg::Qboot)]
    firmware: FirmwareArg,
    /// Use the image with the astrid-unikernel:testing sources (timer, pipes, console).
    #[arg(long)]
    testing: bool,
    /// The argument test capsules read (`test-argument`, ASTRID_TEST_ARG).
    #[arg(long, value_name = "ARG")]
    test_arg: Option<String>,
    /// A configuration value every capsule reads through `astrid:sys` `get-config`
    /// (its manifest's `[config]` wins). Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
    config: Vec<String>,
    /// Call each capsule's `astrid-hook-trigger(ACTION, payload)` (the SDK's interceptor
    /// entry point) instead of its background `run`.
    #[arg(long, value_name = "ACTION")]
    hook: Option<String>,
    /// The hook's payload: the text itself, or @FILE for a file's bytes (at most 16 KiB).
    #[arg(long, value_name = "TEXT|@FILE", requires = "hook")]
    payload: Option<String>,
    /// Cancel each capsule this many milliseconds after it starts.
    #[arg(long, value_name = "MS")]
    deadline_ms: Option<u64>,
    /// Precompile .wasm capsules on the host (`xtask compile`) instead of compiling them
    /// in the guest.
    #[arg(long)]
    precompile: bool,
    /// Share DIR with the guest as /root over virtio-fs (QEMU) and write the audit log
    /// there as DIR/audit.log: the virtio audit sink, beside the serial one.
    #[arg(long, value_name = "DIR")]
    audit_dir: Option<PathBuf>,
    /// Keep each capsule's astrid:kv store in DIR across runs (one journal pair per
    /// principal). Under QEMU DIR is shared as /root over virtio-fs, as --audit-dir is
    /// (give both the same DIR to use both).
    #[arg(long, value_name = "DIR")]
    kv_dir: Option<PathBuf>,
    /// Write the audit records of the run to FILE (check it with `audit verify FILE`).
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// An image setting (ASTRID_*, as the README lists: ASTRID_AUDIT=off,
    /// ASTRID_MEMORY_MIB, ASTRID_KV_QUOTA_BYTES, …). Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// The guest's network (QEMU): `restricted` (default) attaches a NIC on user
    /// networking that lets nothing out; `outbound` lets capsules whose manifest allows
    /// it connect out (the host is 10.0.2.2); `none` attaches no NIC. Loopback
    /// (127.0.0.1) is always the image's own.
    #[arg(long, value_enum, default_value_t = NetArg::Restricted)]
    net: NetArg,
    /// Carry connections to 127.0.0.1:HOST on this machine to the capsule listening on
    /// 127.0.0.1:GUEST in the image (`PORT` alone: the same port). Repeatable.
    #[arg(long, value_name = "[HOST:]GUEST", value_parser = parse_publish)]
    publish: Vec<(u16, u16)>,
    /// Arguments for the application after the capsule paths.
    #[arg(last = true)]
    app_args: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NetArg {
    None,
    Restricted,
    Outbound,
}

fn parse_env(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if k.starts_with("ASTRID_") && !text.contains([',', ' ']) => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not ASTRID_KEY=VALUE (no spaces or commas)")),
    }
}

fn parse_config(text: &str) -> std::result::Result<String, String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !text.contains([',', ';', ' ']) && !v.is_empty() => Ok(text.to_string()),
        _ => Err(format!("{text:?} is not KEY=VALUE (no spaces, commas or semicolons; the value cannot be empty)")),
    }
}

fn parse_publish(text: &str) -> std::result::Result<(u16, u16), String> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{p:?} is not a port from 1 to 65535"));
    match text.split_once(':') {
        Some((h, g)) => Ok((port(h)?, port(g)?)),
        None => port(text).map(|p| (p, p)),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FirmwareArg {
    Qboot,
    Seabios,
}

/// Exit statuses of the run command when the guest gave no status of its own.
const EXIT_KERNEL: u8 = 70;
const EXIT_LOADER: u8 = 71;
const EXIT_TIMEOUT: u8 = 124;
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.cmd) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<u8> {
    let paths = Paths::discover();
    match cmd {
        Cmd::Setup { uhyve } => {
            setup::ensure_base()?;
            if uhyve {
                setup::ensure_uhyve(&paths)?;
            }
            Ok(0)
        }
        Cmd::Build { softfloat } => {
            if softfloat {
                println!("soft-float img:  {}", artifacts::ensure_softfloat(&paths)?.display());
            }
            let art = artifacts::ensure(&paths)?;
            println!("astrid.img:      {}", art.astrid_img.display());
            println!("loader:          {}", art.loader.display());
            println!("hello baseline:  {}", art.hello_img.display());
            println!("example capsule: {}", art.example_capsule.display());
            Ok(0)
        }
        Cmd::Run(args) => run(&paths, args),
        Cmd::Compile { input, output, native } => {
            let target = if native { CodeTarget::Native } else { CodeTarget::HermitImage };
            compile::compile(&input, output.as_deref(), target)?;
            Ok(0)
        }
        Cmd::Audit { cmd: AuditCmd::Verify { log, open } } => Ok(if xtask::audit_cmd::verify(&log, open)? { 0 } else { 1 }),
        Cmd::Test { test_args } => test(&paths, &test_args),
        Cmd::Bench { runs, only } => {
            let art = artifacts::ensure(&paths)?;
            if only.as_deref().is_none_or(|o| o == "boot") {
                let figures = bench::boot(&art, runs.max(10))?;
                bench::print_boot(&figures);
            }
            let engine_group = only.as_deref().is_none_or(|o| o == "engine");
            let net_group = only.as_deref().is_none_or(|o| o == "net");
            // What both groups use, built and precompiled once.
            let (probe, hosted_bin, testing_img) = if engine_group || net_group {
                (Some(precompiled(&paths, "io-probe")?), artifacts::ensure_hosted(&paths, true)?, artifacts::ensure_testing(&paths)?)
            } else {
                (None, Default::default(), Default::default())
            };
            if engine_group {
                let (probe_wasm, probe_native, probe_hermit) = probe.clone().expect("built above");
                let engine = xtask::bench_engine::EngineBench {
                    art: &art,
                    hosted_bin: hosted_bin.clone(),
                    testing_img: testing_img.clone(),
                    probe_native,
                    probe_hermit,
                    probe_wasm,
                    virtiofsd: setup::ensure_virtiofsd(&paths)?,
                    scratch: paths.out.join("bench-scratch"),
                    runs: runs.clamp(1, 5),
                };
                let rows = engine.run()?;
                xtask::bench_engine::print(&rows);
            }
            if net_group {
                let (_, probe_native, probe_hermit) = probe.expect("built above");
                let (_, sdk_native, sdk_hermit) = precompiled(&paths, "sdk-probe")?;
                let net = xtask::bench_net::NetBench {
                    art: &art,
                    hosted_bin,
                    testing_img,
                    probe_native,
                    probe_hermit,
                    sdk_native,
                    sdk_hermit,
                    scratch: paths.out.join("bench-scratch"),
                    runs: runs.clamp(1, 5),
                };
                let rows = net.run_all()?;
                println!("capsule-world benchmarks (medians; image = astrid.img under QEMU TCG, one CPU)");
                println!("| figure | hosted (Linux process) | astrid.img (QEMU TCG) |");
                println!("|---|---|---|");
                for r in &rows {
                    println!("| {} | {} | {} |", r.what, r.hosted, r.image);
                }
            }
            Ok(0)
        }
    }
}

/// A test capsule of `tests/capsules/NAME` built, and precompiled for this machine and
/// for astrid.img: (wasm, native, hermit).
fn precompiled(paths: &Paths, name: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let wasm = capsule::build(paths, &paths.root.join("tests/capsules").join(name))?;
    let pre = paths.out.join("precompiled");
    std::fs::create_dir_all(&pre)?;
    let native = compile::compile(&wasm, Some(&pre.join(format!("{name}-native.cwasm"))), CodeTarget::Native)?;
    let hermit = compile::compile(&wasm, Some(&pre.join(format!("{name}-hermit.cwasm"))), CodeTarget::HermitImage)?;
    Ok((wasm, native, hermit))
}

fn run(paths: &Paths, args: RunArgs) -> Result<u8> {
    if args.capsules.is_empty() {
        eprintln!(
            "error: no capsule given\n  usage: scripts/run [--uhyve|--hosted] <capsule.wasm | capsule-crate-dir>... [-- app args]\n  try:   scripts/run capsules/hello"
        );
        return Ok(EXIT_USAGE);
    }
    let under = match (args.under, args.uhyve, args.hosted) {
        (Some(u), _, _) => u,
        (None, true, _) => Under::Uhyve,
        (None, _, true) => Under::Hosted,
        (None, false, false) if uhyve::detect_kvm() == Kvm::Hardware => Under::Uhyve,
        _ => Under::Qemu,
    };
    // Validate the user's files before building anything, so a typo fails fast.
    for c in &args.capsules {
        if !c.exists() {
            eprintln!("error: capsule {}: no such file or directory — check the path", c.display());
            return Ok(66);
        }
    }
    // Each capsule's manifest (Capsule.toml in a crate, <stem>.toml beside a file),
    // checked here so a mistake names the file before anything boots.
    let mut manifests = Vec::new();
    for c in &args.capsules {
        let Some(path) = astrid_kernel::manifest::path_for(c) else {
            manifests.push(None);
            continue;
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading the manifest {}", path.display()))?;
        if let Err(e) = astrid_kernel::manifest::Manifest::parse(&text) {
            eprintln!("error: capsule {}: manifest {}: {e}", c.display(), path.display());
            return Ok(65);
        }
        manifests.push(Some(text));
    }
    let capsules = args
        .capsules
        .iter()
        .map(|c| if c.is_dir() { capsule::build(paths, c) } else { Ok(c.clone()) })
        .collect::<Result<Vec<_>>>()?;
    let capsules = if args.precompile {
        capsules
            .iter()
            .map(|c| {
                let out = paths.out.join("precompiled").join(c.file_name().unwrap()).with_extension("cwasm");
                std::fs::create_dir_all(out.parent().unwrap())?;
                let target = if under == Under::Hosted { CodeTarget::Native } else { CodeTarget::HermitImage };
                compile::compile(c, Some(&out), target)
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        capsules
    };
    let mut guest_env: Vec<(String, String)> = Vec::new();
    if let Some(a) = &args.test_arg {
        guest_env.push(("ASTRID_TEST_ARG".into(), a.clone()));
    }
    guest_env.extend(args.env.iter().cloned());
    for (i, text) in manifests.iter().enumerate() {
        if let Some(text) = text {
            guest_env.push((format!("ASTRID_MANIFEST_{i}"), astrid_kernel::manifest::Manifest::encode(text)));
        }
    }
    if let Some(action) = &args.hook {
        ensure!(!action.is_empty() && !action.contains([' ', ',']), "--hook {action:?}: an action name has no spaces or commas");
        guest_env.push(("ASTRID_HOOK".into(), action.clone()));
        let payload = match args.payload.as_deref() {
            Some(p) if p.starts_with('@') => {
                std::fs::read(&p[1..]).with_context(|| format!("reading the hook payload file {} (--payload @FILE)", &p[1..]))?
            }
            Some(p) => p.as_bytes().to_vec(),
            None => Vec::new(),
        };
        ensure!(payload.len() <= 16 << 10, "the hook payload is {} bytes; the boot path carries at most 16 KiB", payload.len());
        if !payload.is_empty() {
            guest_env.push(("ASTRID_HOOK_PAYLOAD".into(), astrid_kernel::manifest::hex_encode(&payload)));
        }
    }
    if !args.config.is_empty() {
        guest_env.push(("ASTRID_CAPSULE_CONFIG".into(), args.config.join(";")));
    }
    if let Some(ms) = args.deadline_ms {
        guest_env.push(("ASTRID_DEADLINE_MS".into(), ms.to_string()));
    }
    let timeout = Duration::from_secs(args.timeout);
    match under {
        Under::Qemu => {
            let total: u64 = capsules.iter().map(|c| c.metadata().map(|m| m.len()).unwrap_or(0)).sum();
            let needed_mib = total.div_ceil(1 << 20) + 64;
            if needed_mib > u64::from(args.memory) {
                eprintln!(
                    "error: the capsules take {} MiB but the guest has {} MiB of memory (at least {needed_mib} MiB needed) — pass --memory {}",
                    total >> 20,
                    args.memory,
                    needed_mib.next_power_of_two()
                );
                return Ok(65);
            }
            let art = artifacts::ensure(paths)?;
            let image = if args.testing { artifacts::ensure_testing(paths)? } else { art.astrid_img };
            let mut boot = Boot::new(art.loader, image);
            boot.capsules = capsules;
            boot.kernel_args = guest_env.iter().map(|(k, v)| format!("env={k}={v}")).collect();
            if let (Some(a), Some(k)) = (&args.audit_dir, &args.kv_dir) {
                ensure!(a == k, "--audit-dir and --kv-dir share one directory as /root under QEMU: give both the same DIR");
            }
            if let Some(dir) = &args.audit_dir {
                boot.shared_dir = Some((dir.clone(), setup::ensure_virtiofsd(paths)?));
                boot.kernel_args.push("env=ASTRID_AUDIT_FILE=/root/audit.log".into());
            }
            if let Some(dir) = &args.kv_dir {
                boot.shared_dir = Some((dir.clone(), setup::ensure_virtiofsd(paths)?));
                boot.kernel_args.push("env=ASTRID_KV_DIR=/root".into());
            }
            boot.app_args = args.app_args;
            boot.net = match args.net {
                NetArg::None => qemu::NetMode::None,
                NetArg::Restricted => qemu::NetMode::Restricted,
                NetArg::Outbound => qemu::NetMode::Outbound,
            };
            boot.publish = args.publish.clone();
            boot.memory_mib = args.memory;
            boot.cpus = args.cpus;
            boot.timeout = timeout;
            boot.echo = true;
            boot.firmware = match args.firmware {
                FirmwareArg::Qboot => Firmware::Qboot,
                FirmwareArg::Seabios => Firmware::SeaBios,
            };
            xtask::step("booting astrid.img under QEMU (TCG)");
            let out = qemu::run(&boot)?;
            // The console was echoed live; the QEMU diagnostics only are left to show.
            if let Some(i) = out.console.find("\n[qemu stderr]") {
                eprintln!("{}", &out.console[i + 1..]);
            }
            eprintln!("==> {} ({:.2?})", out.describe(), out.elapsed);
            if let Some(file) = &args.audit_log {
                save_audit(file, &out.console)?;
            }
            Ok(match (out.timed_out, out.exit) {
                (true, _) => EXIT_TIMEOUT,
                (false, GuestExit::App(s)) => s,
                (false, GuestExit::Loader(_)) => EXIT_LOADER,
                (false, _) => EXIT_KERNEL,
            })
        }
        Under::Uhyve => {
            let kvm = uhyve::detect_kvm();
            if kvm == Kvm::Absent {
                bail!("uhyve needs /dev/kvm, which this host lacks: run under QEMU instead (drop --uhyve)");
            }
            let bin = setup::ensure_uhyve(paths)?;
            let image = if kvm == Kvm::PvmEmulator {
                xtask::step("this /dev/kvm is the PVM emulator: using the soft-float image in check-only mode (JIT code needs SSE, which the emulator lacks)");
                guest_env.push(("ASTRID_CHECK_ONLY".into(), "1".into()));
                artifacts::ensure_softfloat(paths)?
            } else {
                artifacts::ensure(paths)?.astrid_img
            };
            let config = paths.root.join("uhyve.toml");
            guest_env.push(("ASTRID_RAM_MIB".into(), xtask::uhyve::configured_memory_mib(&config).to_string()));
            let run = uhyve::UhyveRun {
                uhyve: &bin,
                image: &image,
                config: &config,
                capsules: &capsules,
                extra_args: &args.app_args,
                env: &guest_env,
                timeout,
            };
            xtask::step(format!("booting {} under uhyve", image.display()));
            let out = uhyve::run(&run, true)?;
            if out.timed_out {
                eprintln!("==> the guest did not finish within {timeout:?}");
                return Ok(EXIT_TIMEOUT);
            }
            let code = out.status.unwrap_or(i32::from(EXIT_KERNEL));
            eprintln!("==> uhyve exited with status {code} ({:.2?})", out.elapsed);
            Ok(u8::try_from(code).unwrap_or(EXIT_KERNEL))
        }
        Under::Hosted => {
            let bin = artifacts::ensure_hosted(paths, args.testing)?;
            if let Some(dir) = &args.audit_dir {
                std::fs::create_dir_all(dir)?;
                guest_env.push(("ASTRID_AUDIT_FILE".into(), dir.join("audit.log").display().to_string()));
            }
            if let Some(dir) = &args.kv_dir {
                std::fs::create_dir_all(dir)?;
                guest_env.push(("ASTRID_KV_DIR".into(), dir.display().to_string()));
            }
            // Hosted: published ports listen on this machine's 127.0.0.1 directly (host
            // and guest port are one), and only `outbound` lets capsules out.
            ensure!(args.publish.iter().all(|(h, g)| h == g), "hosted mode publishes a port as itself: use --publish PORT");
            guest_env.push(("ASTRID_NET".into(), if args.net == NetArg::Outbound { "outbound" } else { "none" }.into()));
            if !args.publish.is_empty() {
                let ports: Vec<String> = args.publish.iter().map(|(_, g)| g.to_string()).collect();
                guest_env.push(("ASTRID_PUBLISH".into(), ports.join(",")));
            }
            let mut cmd = std::process::Command::new(bin);
            cmd.args(&capsules).args(&args.app_args).envs(guest_env.iter().cloned());
            let status = if let Some(file) = &args.audit_log {
                let out = cmd.stderr(std::process::Stdio::inherit()).output().context("starting the hosted astrid binary")?;
                let text = String::from_utf8_lossy(&out.stdout);
                print!("{text}");
                save_audit(file, &text)?;
                out.status
            } else {
                cmd.status().context("starting the hosted astrid binary")?
            };
            Ok(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(EXIT_KERNEL))
        }
    }
}

/// Keeps the audit lines of a console capture in `file`, one JSON record per line.
fn save_audit(file: &std::path::Path, console: &str) -> Result<()> {
    let lines = xtask::audit_cmd::audit_lines(console);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))?;
    eprintln!("==> {} audit records written to {} (check: scripts/astrid audit verify {})", lines.len(), file.display(), file.display());
    Ok(())
}

fn test(paths: &Paths, test_args: &[String]) -> Result<u8> {
    let started = std::time::Instant::now();
    xtask::step("preparing: toolchains, QEMU, virtiofsd, images");
    artifacts::ensure(paths)?;
    artifacts::ensure_testing(paths)?;
    artifacts::ensure_hosted(paths, true)?;
    setup::ensure_virtiofsd(paths)?;
    if uhyve::detect_kvm() != Kvm::Absent {
        setup::ensure_uhyve(paths)?;
        if uhyve::detect_kvm() == Kvm::PvmEmulator {
            artifacts::ensure_softfloat(paths)?;
        }
    }
    xtask::step("boot/ unit tests (host)");
    process::run(
        process::cargo(toolchain::STABLE)
            .current_dir(paths.root.join("boot"))
            .args(["test", "--locked", "--lib", "--target", "x86_64-unknown-linux-gnu", "--target-dir"])
            .arg(paths.out.join("boot-host")),
    )?;
    xtask::step("workspace tests: unit tests, then integration tests booting the image");
    let status = process::cargo(toolchain::APP)
        .current_dir(&paths.root)
        .args(["test", "--workspace", "--"])
        .args(test_args)
        .status()?;
    eprintln!("==> tests finished in {:.0?}", started.elapsed());
    Ok(if status.success() { 0 } else { 1 })
}

