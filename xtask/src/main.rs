//! `cargo xtask …` / `scripts/*`: build, run, test and benchmark astrid.img.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use astrid_kernel::exit::GuestExit;
use clap::{Parser, Subcommand, ValueEnum};
use xtask::paths::Paths;
use xtask::qemu::{self, Boot, Firmware};
use xtask::uhyve::{self, Kvm};
use xtask::{artifacts, bench, capsule, process, setup, toolchain};

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
    /// Run the benchmarks and print their figures side by side.
    Bench {
        #[arg(long, default_value_t = 10)]
        runs: usize,
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
    /// Guest CPUs (QEMU).
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Give up after this many seconds (exit status 124).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// QEMU firmware: qboot starts fastest; SeaBIOS is needed with PCI devices.
    #[arg(long, value_enum, default_value_t = FirmwareArg::Qboot)]
    firmware: FirmwareArg,
    /// Arguments for the application after the capsule paths.
    #[arg(last = true)]
    app_args: Vec<String>,
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
        Cmd::Test { test_args } => test(&paths, &test_args),
        Cmd::Bench { runs } => {
            let art = artifacts::ensure(&paths)?;
            let figures = bench::boot(&art, runs)?;
            bench::print_boot(&figures);
            Ok(0)
        }
    }
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
    let capsules = args
        .capsules
        .iter()
        .map(|c| if c.is_dir() { capsule::build(paths, c) } else { Ok(c.clone()) })
        .collect::<Result<Vec<_>>>()?;
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
            let mut boot = Boot::new(art.loader, art.astrid_img);
            boot.capsules = capsules;
            boot.app_args = args.app_args;
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
                xtask::step("this /dev/kvm is the PVM emulator: using the soft-float image (slow; a smoke test)");
                artifacts::ensure_softfloat(paths)?
            } else {
                artifacts::ensure(paths)?.astrid_img
            };
            let config = paths.root.join("uhyve.toml");
            let run = uhyve::UhyveRun {
                uhyve: &bin,
                image: &image,
                config: &config,
                capsules: &capsules,
                extra_args: &args.app_args,
                env: &[],
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
            let bin = hosted_binary(paths)?;
            let mut cmd = std::process::Command::new(bin);
            cmd.args(&capsules).args(&args.app_args);
            let status = cmd.status().context("starting the hosted astrid binary")?;
            Ok(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(EXIT_KERNEL))
        }
    }
}

/// The application built as a Linux process.
fn hosted_binary(paths: &Paths) -> Result<PathBuf> {
    toolchain::ensure_all()?;
    let target_dir = paths.out.join("hosted");
    xtask::step("building astrid (hosted mode)");
    process::run(
        process::cargo(toolchain::APP)
            .current_dir(&paths.root)
            .args(["build", "--release", "-p", "astrid-kernel", "--bin", "astrid", "--target-dir"])
            .arg(&target_dir),
    )?;
    Ok(target_dir.join("release/astrid"))
}

fn test(paths: &Paths, test_args: &[String]) -> Result<u8> {
    let started = std::time::Instant::now();
    xtask::step("preparing: toolchains, QEMU, images");
    artifacts::ensure(paths)?;
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

