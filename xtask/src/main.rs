//! `cargo xtask …` / `scripts/*`: build, run, test and benchmark astrid.img.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use astrid_kernel::engine::CodeTarget;
use astrid_kernel::exit::{GuestExit, Status};
use astrid_kernel::manifest::{BootCapsule, Manifest, PublishError};
use astrid_kernel::settings::{self, ConfigPairs, Flag, GuestPath, HexBytes, NetMode, Number, Ports, Scope, Settings};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};
use xtask::paths::Paths;
use xtask::qemu::{self, Boot, Firmware};
use xtask::uhyve::{self, Kvm};
use xtask::prepare::{self, Mode};
use xtask::{artifacts, bench, capsule, compile, fuzz, process, setup, toolchain};

mod pack_cmd;

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
    Run(Box<RunArgs>),
    /// Write one bootable file: `pack -o OUT.hermit|OUT.iso|OUT.img CAPSULE…` (uhyve; GRUB for
    /// BIOS and UEFI; the same as a raw disk image for a USB stick).
    Pack(Box<pack_cmd::PackArgs>),
    /// Run every test: host unit tests, then the QEMU and uhyve integration tests.
    Test {
        /// Arguments passed on to the test binaries (e.g. a name filter).
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// Precompile a capsule on the host for astrid.img (same wasmtime, same Config),
    /// sealed with the deployment's artifact key.
    Compile {
        input: PathBuf,
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Compile for this machine (hosted mode) instead of astrid.img.
        #[arg(long)]
        native: bool,
        /// Seal with this key (a file of 64 hex digits) instead of the deployment's own,
        /// artifact.key in the state directory (made on first use).
        #[arg(long, value_name = "FILE")]
        artifact_key: Option<PathBuf>,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Print the README's table of the image's ASTRID_* settings (from the settings module).
    SettingsTable,
    /// Build the fuzz targets (fuzz/) and run each for a bounded time from its seeds.
    Fuzz {
        /// Seconds to run each target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (default: every one).
        target: Option<String>,
    },
    /// Run the benchmarks and print their figures side by side.
    Bench {
        /// Runs per figure (the boot benchmark uses at least 10).
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Only this group: `boot`, `engine` (audit included), `audit`, `net` or `quota`.
        #[arg(long)]
        only: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check sequence, hash chain and structure; name the first break (exit 1).
    Verify {
        log: PathBuf,
        /// The deployment's public key: 64 hex digits, or a file holding them (the run
        /// command keeps it as audit.pub in its state directory). Without it a signed
        /// log is checked against the key it names itself.
        #[arg(long, value_name = "PUB")]
        key: Option<String>,
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
    config: Vec<(String, String)>,
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
    /// Send .wasm capsules as they are, for the image to compile (Cranelift in the
    /// guest: seconds under TCG; boots astrid-jit.img, the image with the compiler),
    /// instead of precompiling them here (the default: with the image's wasmtime and
    /// Config, cached, sealed with the artifact key; boots astrid.img).
    #[arg(long)]
    jit: bool,
    /// The default, kept for scripts that pass it: precompile on the host.
    #[arg(long, hide = true, conflicts_with = "jit")]
    precompile: bool,
    /// Seal precompiled capsules with this key (a file of 64 hex digits) instead of the
    /// deployment's own, artifact.key in the state directory (made on first use).
    #[arg(long, value_name = "FILE")]
    artifact_key: Option<PathBuf>,
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
    /// Sign the audit log with this Ed25519 secret key (a file of 64 hex digits) instead
    /// of the deployment's own, audit.key in the state directory (made on first use).
    #[arg(long, value_name = "FILE")]
    audit_key: Option<PathBuf>,
    /// An image setting (ASTRID_*, as the README's table lists: ASTRID_AUDIT=off,
    /// ASTRID_MEMORY_MIB, ASTRID_KV_QUOTA_BYTES, …; `settings-table` prints it). An
    /// unknown name or a value the setting does not accept is a usage error (64).
    /// Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// The guest's network (QEMU): `restricted` (default) attaches a NIC on user
    /// networking that lets nothing out; `outbound` lets capsules whose manifest allows
    /// it connect out (the host is 10.0.2.2); `none` attaches no NIC. Loopback
    /// (127.0.0.1) is always the image's own.
    #[arg(long, default_value_t = NetMode::Restricted, value_parser = net_mode())]
    net: NetMode,
    /// Carry connections to 127.0.0.1:HOST on this machine to the capsule listening on
    /// 127.0.0.1:GUEST in the image (`PORT` alone: the same port). Repeatable.
    #[arg(long, value_name = "[HOST:]GUEST", value_parser = parse_publish)]
    publish: Vec<(u16, u16)>,
    /// Arguments for the application after the capsule paths.
    #[arg(last = true)]
    app_args: Vec<String>,
}

/// `--net`: the settings module's `NetMode`, with its names as clap's possible values.
fn net_mode() -> impl TypedValueParser<Value = NetMode> {
    PossibleValuesParser::new(NetMode::ALL.map(NetMode::name)).map(|name| name.parse::<NetMode>().expect("one of NetMode's names"))
}

/// `--env`'s shape only: the name and value are checked against the settings table when
/// the run starts, so a mistake is a usage error (64) like the image's own.
fn parse_env(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !text.contains([',', ' ']) => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not NAME=VALUE (no spaces or commas)")),
    }
}

fn parse_config(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !text.contains([',', ';', ' ']) && !v.is_empty() => Ok((k.to_string(), v.to_string())),
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
/// Statuses of a run refused before anything boots: the image's own numbering.
const EXIT_USAGE: u8 = Status::Usage as u8;
const EXIT_DATA_ERR: u8 = Status::DataErr as u8;
const EXIT_NO_INPUT: u8 = Status::NoInput as u8;
/// Largest hook payload: the boot path's command line carries 60 KiB in all.
const MAX_HOOK_PAYLOAD: usize = 16 << 10;
/// What QEMU's guest memory needs beyond the capsules' bytes, in MiB.
const GUEST_BASE_MIB: u64 = 64;
/// Where the directory shared over virtio-fs (QEMU) appears in the guest, and the audit
/// log in it.
const GUEST_SHARE: &str = "/root";
const GUEST_AUDIT_LOG: &str = "/root/audit.log";

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

impl Cmd {
    /// Whether the command may build anything with cargo (the application, the kernel,
    /// the loader, capsules, tools). Such commands install the pinned toolchains and
    /// targets first, in one step (`prepare`); the build steps refuse to run before it.
    fn builds(&self) -> bool {
        match self {
            Cmd::Setup { .. } | Cmd::Build { .. } | Cmd::Run(_) | Cmd::Pack(_) | Cmd::Test { .. } | Cmd::Fuzz { .. } | Cmd::Bench { .. } => true,
            Cmd::Compile { .. } | Cmd::Audit { .. } | Cmd::SettingsTable => false,
        }
    }
}

/// The step before any build: the pinned toolchains, their components and targets.
fn prepare() -> Result<()> {
    toolchain::ensure_all()
}

fn dispatch(cmd: Cmd) -> Result<u8> {
    let paths = Paths::discover();
    if cmd.builds() {
        prepare()?;
    }
    match cmd {
        Cmd::Setup { uhyve } => {
            setup::ensure_base()?;
            setup::ensure_grub()?;
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
        Cmd::Run(args) => run(&paths, *args),
        Cmd::Pack(args) => pack_cmd::pack(&paths, *args),
        Cmd::Compile { input, output, native, artifact_key } => {
            let target = if native { CodeTarget::Native } else { CodeTarget::HermitImage };
            let key = prepare::deployment_key(artifact_key.as_deref())?;
            compile::compile(&input, output.as_deref(), target, &key)?;
            Ok(0)
        }
        Cmd::Audit { cmd: AuditCmd::Verify { log, key, open } } => {
            Ok(if xtask::audit_cmd::verify(&log, key.as_deref(), open)? { 0 } else { 1 })
        }
        Cmd::Test { test_args } => test(&paths, &test_args),
        Cmd::Fuzz { seconds, target } => {
            let targets = fuzz::select(target.as_deref())?;
            Ok(if fuzz::run(&paths, seconds, &targets)? { 0 } else { 1 })
        }
        Cmd::SettingsTable => {
            print!("{}", settings::markdown_table());
            Ok(0)
        }
        Cmd::Bench { runs, only } => {
            let art = artifacts::ensure(&paths)?;
            let mut goals = Vec::new();
            if only.as_deref().is_none_or(|o| o == "boot") {
                let figures = bench::boot(&art, runs.max(10))?;
                bench::print_boot(&figures);
                goals.push(bench::boot_goal(&figures));
            }
            let engine_group = only.as_deref().is_none_or(|o| o == "engine");
            let audit_group = only.as_deref().is_none_or(|o| o == "engine" || o == "audit");
            let net_group = only.as_deref().is_none_or(|o| o == "net");
            if only.as_deref().is_none_or(|o| o == "quota") {
                let runs = runs.clamp(1, 5);
                let (_, probe_native, _) = precompiled(&paths, "io-probe")?;
                let hosted_bin = artifacts::ensure_hosted(&paths, true)?;
                let scratch = paths.out.join("bench-scratch/quota");
                let (hosted, image, rtt) = xtask::bench_quota::run(&art, &hosted_bin, &art.astrid_img, &probe_native, &scratch, runs)?;
                xtask::bench_quota::print(&hosted, &image, rtt, runs);
                goals.extend(xtask::bench_quota::goals(&image, rtt, &hosted));
            }
            // What both groups use, built and precompiled once.
            let (probe, hosted_bin, testing_img) = if engine_group || audit_group || net_group {
                (Some(precompiled(&paths, "io-probe")?), artifacts::ensure_hosted(&paths, true)?, artifacts::ensure_testing(&paths)?)
            } else {
                (None, Default::default(), Default::default())
            };
            if engine_group || audit_group {
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
                let (mut rows, engine_goals) = if engine_group { engine.run()? } else { (Vec::new(), Vec::new()) };
                goals.extend(engine_goals);
                let (audit_rows, audit_goals) = engine.audit()?;
                rows.extend(audit_rows);
                goals.extend(audit_goals);
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
                let (rows, net_goals) = net.run_all()?;
                println!("capsule-world benchmarks (medians; image = astrid.img under QEMU TCG, one CPU)");
                println!("| figure | hosted (Linux process) | astrid.img (QEMU TCG) |");
                println!("|---|---|---|");
                for r in &rows {
                    println!("| {} | {} | {} |", r.what, r.hosted, r.image);
                }
                goals.extend(net_goals);
            }
            bench::print_goals(&goals);
            Ok(0)
        }
    }
}

/// A test capsule of `tests/capsules/NAME` built, and precompiled for this machine and
/// for astrid.img, sealed with this process's key (the benchmarks pass it to every
/// run): (wasm, native, hermit).
fn precompiled(paths: &Paths, name: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let wasm = capsule::build(paths, &paths.root.join("tests/capsules").join(name))?;
    let key = prepare::session_key();
    let native = prepare::prepare_capsule(paths, &wasm, Mode::Precompiled { target: CodeTarget::Native, key })?.file;
    let hermit = prepare::prepare_capsule(paths, &wasm, Mode::Precompiled { target: CodeTarget::HermitImage, key })?.file;
    Ok((wasm, native, hermit))
}

/// A run refused before anything boots: its message and the run command's exit status.
#[derive(Debug)]
struct Refused {
    status: u8,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

fn refuse(status: u8, message: impl Into<String>) -> anyhow::Error {
    Refused { status, message: message.into() }.into()
}

/// The run command: its refusals are a message and their own exit status.
fn run(paths: &Paths, args: RunArgs) -> Result<u8> {
    match run_steps(paths, args) {
        Err(e) => match e.downcast::<Refused>() {
            Ok(refused) => {
                eprintln!("error: {refused}");
                Ok(refused.status)
            }
            Err(e) => Err(e),
        },
        done => done,
    }
}

/// Inputs checked, guest settings made, capsules built, then the target's own steps.
fn run_steps(paths: &Paths, args: RunArgs) -> Result<u8> {
    let mut guest = env_settings(&args.env)?;
    check_inputs(&args)?;
    let under = target(&args);
    let manifests = read_manifests(&args.capsules)?;
    check_identities(&args, &manifests)?;
    apply_flags(&mut guest, &args, &manifests)?;
    bind_audit(&mut guest, &args)?;
    let key = bind_artifact_key(&mut guest, &args)?;
    let capsules = capsule_files(paths, &args, under, &key)?;
    match under {
        Under::Qemu => run_qemu(paths, &args, capsules, guest),
        Under::Uhyve => run_uhyve(paths, &args, capsules, guest),
        Under::Hosted => run_hosted(paths, &args, &capsules, guest),
    }
}

/// Capsules were given, and every one exists (before building anything, so a typo fails
/// fast).
fn check_inputs(args: &RunArgs) -> Result<()> {
    if args.capsules.is_empty() {
        return Err(refuse(
            EXIT_USAGE,
            "no capsule given\n  usage: scripts/run [--uhyve|--hosted] <capsule.wasm | capsule-crate-dir>... [-- app args]\n  try:   scripts/run capsules/hello",
        ));
    }
    match args.capsules.iter().find(|c| !c.exists()) {
        Some(c) => Err(refuse(EXIT_NO_INPUT, format!("capsule {}: no such file or directory — check the path", c.display()))),
        None => Ok(()),
    }
}

/// Where to run: as asked, else uhyve where hardware KVM exists, else QEMU.
fn target(args: &RunArgs) -> Under {
    match (args.under, args.uhyve, args.hosted) {
        (Some(u), _, _) => u,
        (None, true, _) => Under::Uhyve,
        (None, _, true) => Under::Hosted,
        (None, false, false) if uhyve::detect_kvm() == Kvm::Hardware => Under::Uhyve,
        _ => Under::Qemu,
    }
}

/// Each capsule's manifest text (Capsule.toml in a crate, <stem>.toml beside a file),
/// checked here so a mistake names the file before anything boots.
fn read_manifests(capsules: &[PathBuf]) -> Result<Vec<Option<String>>> {
    capsules
        .iter()
        .map(|c| {
            let Some(path) = astrid_kernel::manifest::path_for(c) else { return Ok(None) };
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading the manifest {}", path.display()))?;
            Manifest::parse(&text)
                .map_err(|e| refuse(EXIT_DATA_ERR, format!("capsule {}: manifest {}: {e}", c.display(), path.display())))?;
            Ok(Some(text))
        })
        .collect()
}

/// What the image checks between the capsules of a boot, checked here first so the
/// mistake shows before anything is built or booted: every capsule acts for its own
/// principal (its manifest's name, else the file name the image will know it by), and
/// each published port goes to the one capsule whose manifest binds it.
fn check_identities(args: &RunArgs, manifests: &[Option<String>]) -> Result<()> {
    let parsed: Vec<Option<Manifest>> = manifests.iter().map(|t| t.as_deref().and_then(|t| Manifest::parse(t).ok())).collect();
    let names: Vec<String> = args.capsules.iter().map(|c| c.display().to_string()).collect();
    let ids = args.capsules.iter().map(|c| boot_id(c, args.precompile)).collect::<Result<Vec<_>>>()?;
    let boot: Vec<BootCapsule<'_>> =
        (0..ids.len()).map(|i| BootCapsule { name: &names[i], id: &ids[i], manifest: parsed[i].as_ref() }).collect();
    astrid_kernel::manifest::unique_principals(&boot).map_err(|(_, why)| refuse(EXIT_DATA_ERR, why))?;
    let published: Vec<u16> = args.publish.iter().map(|(_, guest)| *guest).collect();
    astrid_kernel::manifest::published_port_owners(&published, &boot).map_err(|e| match e {
        PublishError::Contested { why, .. } => refuse(EXIT_DATA_ERR, why),
        PublishError::Unclaimed(why) => refuse(EXIT_USAGE, format!("--publish: {why}")),
    })?;
    Ok(())
}

/// The name the image will know a capsule by: the file name it boots as (a crate's
/// component, a precompiled artifact's `.cwasm`).
fn boot_id(capsule: &std::path::Path, precompile: bool) -> Result<String> {
    let name = if capsule.is_dir() {
        capsule::output_name(capsule)?
    } else {
        capsule.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| capsule.display().to_string())
    };
    Ok(if precompile { std::path::Path::new(&name).with_extension("cwasm").display().to_string() } else { name })
}

/// The image settings `--env` gives, checked against the settings table: an unknown name
/// or a refused value is a usage error (64) naming the setting and what it accepts.
fn env_settings(env: &[(String, String)]) -> Result<Settings> {
    let mut guest = Settings::default();
    for (name, value) in env {
        let refused = |why: String| refuse(EXIT_USAGE, format!("--env {name}={value}: {why}"));
        match settings::info(name).map(|s| s.scope) {
            Some(Scope::Boot) => return Err(refused(format!("{name} is written by the boot path, not set by hand"))),
            Some(Scope::Host) => return Err(refused(format!("{name} is read on the host: set it in the environment, not with --env"))),
            Some(Scope::Image) | None => guest.set(name, value).map_err(|e| refused(e.to_string()))?,
        }
    }
    Ok(guest)
}

/// The audit log's run nonce (fresh for every run) and the deployment's signing key,
/// unless `--env` set them or auditing is off.
fn bind_audit(guest: &mut Settings, args: &RunArgs) -> Result<()> {
    if guest.run_nonce.is_none() {
        guest.run_nonce = Some(qemu::fresh_seed()?);
    }
    if guest.audit.is_on() && guest.audit_key.is_none() {
        let key = xtask::audit_cmd::deployment_key(args.audit_key.as_deref())?;
        guest.audit_key = Some(settings::AuditKey(key.to_bytes()));
    }
    Ok(())
}

/// The deployment's artifact key, which seals what the run command precompiles and
/// which the image checks every artifact's seal with (unless `--env` set it).
fn bind_artifact_key(guest: &mut Settings, args: &RunArgs) -> Result<settings::ArtifactKey> {
    if let Some(key) = &guest.artifact_key {
        ensure!(args.artifact_key.is_none(), "--artifact-key and --env {}: give the key one way", settings::ARTIFACT_KEY);
        return Ok(key.clone());
    }
    let key = prepare::deployment_key(args.artifact_key.as_deref())?;
    guest.artifact_key = Some(key.clone());
    Ok(key)
}

/// What the flags tell the image wherever it runs (over `--env`); the targets add their
/// own.
fn apply_flags(guest: &mut Settings, args: &RunArgs, manifests: &[Option<String>]) -> Result<()> {
    if let Some(arg) = &args.test_arg {
        guest.test_arg = arg.clone();
    }
    for (i, text) in manifests.iter().enumerate() {
        if let Some(text) = text {
            guest.manifests.insert(i, Manifest::encode(text));
        }
    }
    if let Some(action) = &args.hook {
        ensure!(!action.is_empty() && !action.contains([' ', ',']), "--hook {action:?}: an action name has no spaces or commas");
        guest.hook = Some(action.clone());
        guest.hook_payload = HexBytes(hook_payload(args.payload.as_deref())?);
    }
    if !args.config.is_empty() {
        guest.capsule_config = ConfigPairs(args.config.clone());
    }
    if let Some(ms) = args.deadline_ms {
        guest.deadline_ms = Some(Number(ms));
    }
    Ok(())
}

/// `--payload`: the text itself, or @FILE for a file's bytes.
fn hook_payload(payload: Option<&str>) -> Result<Vec<u8>> {
    let bytes = match payload {
        Some(p) if p.starts_with('@') => {
            std::fs::read(&p[1..]).with_context(|| format!("reading the hook payload file {} (--payload @FILE)", &p[1..]))?
        }
        Some(p) => p.as_bytes().to_vec(),
        None => Vec::new(),
    };
    ensure!(bytes.len() <= MAX_HOOK_PAYLOAD, "the hook payload is {} bytes; the boot path carries at most 16 KiB", bytes.len());
    Ok(bytes)
}

/// The capsule files to boot, each prepared by `prepare::prepare_capsule`: crate
/// directories built, `.wasm` precompiled on the host for where it runs and sealed with
/// `key` (unless `--jit`, or the check-only image uhyve runs on PVM hosts, which runs
/// nothing). A `.wasm` that does not compile is refused here (65).
fn capsule_files(paths: &Paths, args: &RunArgs, under: Under, key: &settings::ArtifactKey) -> Result<Vec<PathBuf>> {
    let check_only = under == Under::Uhyve && uhyve::detect_kvm() == Kvm::PvmEmulator;
    let target = if under == Under::Hosted { CodeTarget::Native } else { CodeTarget::HermitImage };
    // `--precompile` (the default) and `--jit` conflict: clap refuses both at once.
    let jit = args.jit_image();
    let mode = if jit || check_only { Mode::Jit } else { Mode::Precompiled { target, key } };
    args.capsules
        .iter()
        .map(|c| match prepare::prepare_capsule(paths, c, mode) {
            Ok(p) => Ok(p.file),
            Err(e) => match e.downcast::<compile::Uncompilable>() {
                Ok(why) => Err(refuse(EXIT_DATA_ERR, why.to_string())),
                Err(e) => Err(e),
            },
        })
        .collect()
}

impl RunArgs {
    /// Whether the capsules go to the image as `.wasm` for it to compile (`--jit`):
    /// then only the image with Cranelift can run them.
    fn jit_image(&self) -> bool {
        self.jit && !self.precompile
    }
}

/// astrid-jit.img, built if stale, with a line that says why it, not astrid.img, boots.
fn jit_image(paths: &Paths) -> Result<PathBuf> {
    let img = artifacts::ensure_jit(paths)?;
    xtask::step("--jit: booting astrid-jit.img, the image with Cranelift (astrid.img runs only precompiled capsules)");
    Ok(img)
}

/// QEMU (TCG): the loader, the image and each capsule as multiboot modules.
fn run_qemu(paths: &Paths, args: &RunArgs, capsules: Vec<PathBuf>, mut guest: Settings) -> Result<u8> {
    let total: u64 = capsules.iter().map(|c| c.metadata().map(|m| m.len()).unwrap_or(0)).sum();
    let needed_mib = total.div_ceil(1 << 20) + GUEST_BASE_MIB;
    if needed_mib > u64::from(args.memory) {
        return Err(refuse(
            EXIT_DATA_ERR,
            format!(
                "the capsules take {} MiB but the guest has {} MiB of memory (at least {needed_mib} MiB needed) — pass --memory {}",
                total >> 20,
                args.memory,
                needed_mib.next_power_of_two()
            ),
        ));
    }
    let art = artifacts::ensure(paths)?;
    let image = match (args.testing, args.jit_image()) {
        (true, _) => artifacts::ensure_testing(paths)?,
        (false, true) => jit_image(paths)?,
        (false, false) => art.astrid_img,
    };
    let mut boot = Boot::new(art.loader, image);
    if let (Some(a), Some(k)) = (&args.audit_dir, &args.kv_dir) {
        ensure!(a == k, "--audit-dir and --kv-dir share one directory as /root under QEMU: give both the same DIR");
    }
    if let Some(dir) = args.audit_dir.as_ref().or(args.kv_dir.as_ref()) {
        boot.shared_dir = Some((dir.clone(), setup::ensure_virtiofsd(paths)?));
    }
    if args.audit_dir.is_some() {
        guest.audit_file = Some(GuestPath(GUEST_AUDIT_LOG.into()));
    }
    if args.kv_dir.is_some() {
        guest.kv_dir = Some(GuestPath(GUEST_SHARE.into()));
    }
    boot.capsules = capsules;
    boot.kernel_args = guest.to_env_pairs().iter().map(|(k, v)| qemu::env_arg(k, v)).collect();
    boot.app_args = args.app_args.clone();
    boot.net = args.net;
    boot.publish = args.publish.clone();
    boot.memory_mib = args.memory;
    boot.cpus = args.cpus;
    boot.timeout = Duration::from_secs(args.timeout);
    boot.echo = true;
    boot.firmware = match args.firmware {
        FirmwareArg::Qboot => Firmware::Qboot,
        FirmwareArg::Seabios => Firmware::SeaBios,
    };
    xtask::step(format!("booting {} under QEMU (TCG)", boot.app.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
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

/// uhyve: the image with each capsule mapped as a file (the soft-float image, checking
/// only, on PVM hosts).
fn run_uhyve(paths: &Paths, args: &RunArgs, capsules: Vec<PathBuf>, mut guest: Settings) -> Result<u8> {
    let kvm = uhyve::detect_kvm();
    if kvm == Kvm::Absent {
        bail!("uhyve needs /dev/kvm, which this host lacks: run under QEMU instead (drop --uhyve)");
    }
    let bin = setup::ensure_uhyve(paths)?;
    let image = if kvm == Kvm::PvmEmulator {
        xtask::step("this /dev/kvm is the PVM emulator: using the soft-float image in check-only mode (JIT code needs SSE, which the emulator lacks)");
        guest.check_only = Flag(true);
        artifacts::ensure_softfloat(paths)?
    } else if args.jit_image() {
        jit_image(paths)?
    } else {
        artifacts::ensure(paths)?.astrid_img
    };
    let config = paths.root.join("uhyve.toml");
    guest.ram_mib = Number(uhyve::configured_memory_mib(&config));
    let env = guest.to_env_pairs();
    let timeout = Duration::from_secs(args.timeout);
    let run = uhyve::UhyveRun { uhyve: &bin, image: &image, config: &config, capsules: &capsules, extra_args: &args.app_args, env: &env, timeout };
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

/// Hosted: the application as a Linux process. Published ports listen on this machine's
/// 127.0.0.1 directly (host and guest port are one), and only `outbound` lets capsules
/// out.
fn run_hosted(paths: &Paths, args: &RunArgs, capsules: &[PathBuf], mut guest: Settings) -> Result<u8> {
    let bin = artifacts::ensure_hosted(paths, args.testing)?;
    if let Some(dir) = &args.audit_dir {
        std::fs::create_dir_all(dir)?;
        guest.audit_file = Some(GuestPath(dir.join("audit.log")));
    }
    if let Some(dir) = &args.kv_dir {
        std::fs::create_dir_all(dir)?;
        guest.kv_dir = Some(GuestPath(dir.clone()));
    }
    ensure!(args.publish.iter().all(|(h, g)| h == g), "hosted mode publishes a port as itself: use --publish PORT");
    guest.net = if args.net == NetMode::Outbound { NetMode::Outbound } else { NetMode::None };
    guest.publish = Ports(args.publish.iter().map(|(_, g)| *g).collect());
    let mut cmd = std::process::Command::new(bin);
    cmd.args(capsules).args(&args.app_args).envs(guest.to_env_pairs());
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
    artifacts::ensure_jit(paths)?;
    artifacts::ensure_testing(paths)?;
    artifacts::ensure_hosted(paths, true)?;
    setup::ensure_virtiofsd(paths)?;
    setup::ensure_grub()?;
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
    lint(paths)?;
    xtask::step("workspace tests: unit tests, then integration tests booting the image");
    let status = process::cargo(toolchain::APP)
        .current_dir(&paths.root)
        .args(["test", "--workspace", "--no-fail-fast", "--"])
        .args(test_args)
        .status()?;
    // Every fuzz target for a short bounded time; a filtered run is a narrow one.
    let fuzzed = if test_args.is_empty() {
        xtask::step(format!("fuzz targets, {} s each (scripts/fuzz runs them longer)", fuzz::TEST_SECONDS));
        fuzz::run(paths, fuzz::TEST_SECONDS, &fuzz::select(None)?)?
    } else {
        xtask::step("fuzz targets skipped: a test filter was given (scripts/fuzz runs them)");
        true
    };
    eprintln!("==> tests finished in {:.0?}", started.elapsed());
    Ok(if status.success() && fuzzed { 0 } else { 1 })
}

/// Clippy with warnings as errors, over everything we build: the workspace hosted (with
/// the testing sources, so every host file is checked), the image's application without
/// its engine (the soft-float image) and without its compiler, the loader for its real
/// target and its tests, and the fuzz targets.
fn lint(paths: &Paths) -> Result<()> {
    xtask::step("clippy (warnings are errors)");
    let deny = ["--", "-D", "warnings"];
    process::run(
        process::cargo(toolchain::APP)
            .current_dir(&paths.root)
            .args(["clippy", "--workspace", "--all-targets", "--features", "astrid-kernel/testing"])
            .args(deny),
    )?;
    process::run(
        process::cargo(toolchain::APP)
            .current_dir(&paths.root)
            .args(["clippy", "-p", "astrid-kernel", "--no-default-features"])
            .args(deny),
    )?;
    // The engine without its compiler (an image that runs only sealed artifacts).
    process::run(
        process::cargo(toolchain::APP)
            .current_dir(&paths.root)
            .args(["clippy", "-p", "astrid-kernel", "--no-default-features", "--features", "engine"])
            .args(deny),
    )?;
    for target in ["x86_64-unknown-none", "x86_64-unknown-linux-gnu"] {
        let mut cmd = process::cargo(toolchain::STABLE);
        cmd.current_dir(paths.root.join("boot")).args(["clippy", "--locked", "--target", target]);
        if target.ends_with("linux-gnu") {
            cmd.arg("--all-targets");
        }
        process::run(cmd.arg("--target-dir").arg(paths.out.join("boot-clippy")).args(deny))?;
    }
    fuzz::clippy(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cmd {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied())).unwrap_or_else(|e| panic!("{args:?}: {e}")).cmd
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match cli(&[&["run"], args].concat()) {
            Cmd::Run(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_that_builds_prepares_first() {
        for (args, builds) in [
            (&["setup"][..], true),
            (&["build"], true),
            (&["run", "capsules/hello"], true),
            (&["pack", "-o", "x.iso", "capsules/hello"], true),
            (&["test"], true),
            (&["bench"], true),
            (&["fuzz", "--seconds", "5", "boot_elf"], true),
            (&["compile", "x.wasm"], false),
            (&["audit", "verify", "log"], false),
            (&["settings-table"], false),
        ] {
            assert_eq!(cli(args).builds(), builds, "{args:?}");
        }
        // And a build step that runs before the toolchains are ensured is refused (this
        // process never ensured them).
        let paths = Paths::discover();
        let early = capsule::build(&paths, &paths.root.join("capsules/hello")).unwrap_err();
        assert!(early.to_string().contains("toolchain::ensure_all"), "{early}");
        // Whatever the step: every cargo command goes through `process`, which refuses
        // to start one before the ensure step.
        for toolchain in [toolchain::APP, toolchain::KERNEL, toolchain::STABLE] {
            let early = process::run(process::cargo(toolchain).arg("build")).unwrap_err();
            assert!(early.to_string().contains("toolchain::ensure_all"), "{early}");
            let early = process::output(process::cargo(toolchain).arg("metadata")).unwrap_err();
            assert!(early.to_string().contains("toolchain::ensure_all"), "{early}");
        }
    }

    /// The status and message of a run refused before anything boots.
    fn refused(result: Result<u8>) -> (u8, String) {
        match result {
            Err(e) => match e.downcast::<Refused>() {
                Ok(r) => (r.status, r.message),
                Err(e) => panic!("not a refusal: {e:#}"),
            },
            Ok(code) => panic!("not refused: {code}"),
        }
    }

    #[test]
    fn env_is_checked_against_the_settings_table() {
        for (env, says) in [
            ("ASTRID_NET=everywhere", "none, restricted, outbound"),
            ("ASTRID_MEMORY_MIB=lots", "a number of MiB"),
            ("ASTRID_NETWORK=none", "accepted names"),
            ("NET=none", "accepted names"),
            ("ASTRID_MANIFEST_0=00", "boot path"),
            ("ASTRID_CACHE_DIR=/tmp", "on the host"),
        ] {
            let args = run_args(&["--env", env, "/nonexistent/x.wasm"]);
            let (status, message) = refused(run_steps(&Paths::discover(), args));
            assert_eq!(status, EXIT_USAGE, "{env}: {message}");
            let name = env.split_once('=').unwrap().0;
            assert!(message.contains(name) && message.contains(says), "{env}: {message}");
        }
        // A good setting passes on to the next check (the missing file).
        let args = run_args(&["--env", "ASTRID_AUDIT=off", "/nonexistent/x.wasm"]);
        assert_eq!(refused(run_steps(&Paths::discover(), args)).0, EXIT_NO_INPUT);
    }

    #[test]
    fn identities_are_checked_before_anything_is_built() {
        let dir = std::env::temp_dir().join(format!("astrid-xtask-ids-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let file = |d: &std::path::Path, name: &str, text: &str| {
            let p = d.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let (ax, bx, by) = (file(&a, "x.wasm", ""), file(&b, "x.wasm", ""), file(&b, "y.wasm", ""));
        let (ap, bq) = (file(&a, "p.wasm", ""), file(&b, "q.wasm", ""));
        file(&a, "p.toml", "[package]\nname = \"same\"\n[capabilities]\nnet_bind = [\"127.0.0.1:7700\"]\n");
        file(&b, "q.toml", "[package]\nname = \"same\"\n");
        #[rustfmt::skip]
        let cases: &[(&[&str], u8, &str)] = &[
            (&[&ax, &bx], EXIT_DATA_ERR, "both act as principal \"x.wasm\""),
            // With `--precompile` the image sees the `.cwasm` names.
            (&["--precompile", &ax, &by, &bx], EXIT_DATA_ERR, "both act as principal \"x.cwasm\""),
            (&[&ap, &bq], EXIT_DATA_ERR, "both act as principal \"same\""),
            (&["--publish", "8080:7700", &ax, &by], EXIT_USAGE, "no manifest binds it"),
        ];
        for (argv, status, says) in cases {
            let mut all = vec!["--env", "ASTRID_AUDIT=off"];
            all.extend_from_slice(argv);
            let (got, message) = refused(run_steps(&Paths::discover(), run_args(&all)));
            assert_eq!(got, *status, "{argv:?}: {message}");
            assert!(message.contains(says), "{argv:?}: {message}");
        }
        assert!(boot_id(std::path::Path::new("d/x.wasm"), true).unwrap() == "x.cwasm");
    }

    #[test]
    fn flags_become_typed_guest_settings() {
        let args = run_args(&[
            "--env",
            "ASTRID_AUDIT=off",
            "--test-arg",
            "t",
            "--hook",
            "greet",
            "--payload",
            "hi",
            "--config",
            "a=b",
            "--deadline-ms",
            "5",
            "x.wasm",
        ]);
        let mut guest = env_settings(&args.env).unwrap();
        apply_flags(&mut guest, &args, &[Some("[package]\nname = \"x\"\n".into())]).unwrap();
        let pairs = guest.to_env_pairs();
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get(settings::AUDIT), Some("off"));
        assert_eq!(get(settings::TEST_ARG), Some("t"));
        assert_eq!(get(settings::HOOK), Some("greet"));
        assert_eq!(get(settings::HOOK_PAYLOAD), Some("6869"));
        assert_eq!(get(settings::CAPSULE_CONFIG), Some("a=b"));
        assert_eq!(get(settings::DEADLINE_MS), Some("5"));
        assert_eq!(get(&settings::MANIFEST.name(0)), Some(Manifest::encode("[package]\nname = \"x\"\n").as_str()));
        // What the image parses back is what was meant.
        assert_eq!(Settings::from_env_pairs(pairs).unwrap(), guest);
    }

    #[test]
    fn net_takes_the_settings_names() {
        for mode in NetMode::ALL {
            assert_eq!(run_args(&["--net", mode.name(), "x.wasm"]).net, mode);
        }
        assert_eq!(run_args(&["x.wasm"]).net, NetMode::Restricted);
        assert!(Cli::try_parse_from(["xtask", "run", "--net", "everywhere", "x.wasm"]).is_err());
    }
}
