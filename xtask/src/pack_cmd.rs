//! The `pack` command: the run command's own preparation (inputs, manifests, flags,
//! audit key, capsule files), then one file written by `xtask::pack`. A module of the
//! binary, so it calls the very functions `run` calls and follows them when they change.

use std::path::PathBuf;

use anyhow::Result;
use astrid_kernel::settings::{self, Flag, GuestPath, Number, OnExit};
use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use xtask::pack::{self, Bundle, Format};
use xtask::paths::Paths;
use xtask::{artifacts, setup};

use super::{
    Cli, Cmd, EXIT_DATA_ERR, EXIT_USAGE, Refused, RunArgs, Under, apply_flags, bind_artifact_key, bind_audit, capsule_files, check_inputs, env_settings,
    parse_config, parse_env, read_manifests, refuse,
};

/// uhyve's own defaults: with them `uhyve FILE` needs no flag.
const UHYVE_DEFAULT_MEMORY_MIB: u32 = 64;
const UHYVE_DEFAULT_CPUS: u32 = 1;
/// What a `.hermit` file asks for unless told otherwise. Not uhyve's 64 MiB: the image
/// fits every capsule's host-side budgets into its heap before it runs one, and 64 MiB
/// holds not even one capsule at its floors (refused with 64); 256 MiB holds four at
/// the default limits.
const HERMIT_DEFAULT_MEMORY_MIB: u32 = 256;

#[derive(clap::Args)]
pub struct PackArgs {
    /// Capsule files (.wasm, or .cwasm precompiled) or capsule crate directories (built
    /// from source), each with its manifest as `scripts/run` finds it.
    pub capsules: Vec<PathBuf>,
    /// The file to write; its extension says what: OUT.hermit (uhyve), OUT.iso (GRUB, BIOS
    /// and UEFI), OUT.img (the same, a raw disk image to write to a USB stick).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// .hermit: the guest memory uhyve must give, in MiB (default 256: run `uhyve -m
    /// <MIB>MiB OUT.hermit`, as pack prints; 64, uhyve's own default, is too small for
    /// the image to fit one capsule's budgets). A bare-metal image uses the machine's RAM.
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u32>,
    /// .hermit: the CPUs uhyve must give (default 1, uhyve's own; with more, run
    /// `uhyve -c <N> OUT.hermit`). A bare-metal image uses the machine's CPUs.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// What every capsule reads through `get-config` (its manifest's `[config]` wins).
    /// Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
    pub config: Vec<(String, String)>,
    /// Cancel each capsule this many milliseconds after it starts.
    #[arg(long, value_name = "MS")]
    pub deadline_ms: Option<u64>,
    /// Sign the audit log with this Ed25519 secret key (64 hex digits in a file) instead of
    /// the deployment's own audit.key. The key goes into the file: keep it as private.
    #[arg(long, value_name = "FILE")]
    pub audit_key: Option<PathBuf>,
    /// An image setting (ASTRID_*, the README's table). Repeatable. A seed or run nonce is
    /// refused: they must be fresh on every boot.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Put .wasm capsules in as they are, for the image to compile at every boot (seconds
    /// under TCG), instead of precompiling them here and sealing them with the
    /// deployment's artifact key (the default).
    #[arg(long)]
    pub jit: bool,
    /// The default, kept for scripts that pass it: precompile on the host.
    #[arg(long, hide = true, conflicts_with = "jit")]
    pub precompile: bool,
    /// .iso/.img: what the machine does once the capsules are done and the status is on
    /// the console (ASTRID_ON_EXIT; default poweroff).
    #[arg(long, value_parser = on_exit())]
    pub on_exit: Option<OnExit>,
    /// .iso/.img: report statuses on QEMU's isa-debug-exit port 0xf4, so QEMU's exit
    /// status carries them (for tests under QEMU, not for real hardware).
    #[arg(long)]
    pub debug_exit: bool,
    /// .hermit: the soft-float image, built without the engine: it checks the capsules and
    /// stops (for uhyve on hosts whose /dev/kvm is the PVM emulator).
    #[arg(long)]
    pub softfloat: bool,
    /// The image with the testing sources (tests only).
    #[arg(long, hide = true)]
    pub testing: bool,
}

fn on_exit() -> impl TypedValueParser<Value = OnExit> {
    PossibleValuesParser::new(OnExit::ALL.map(OnExit::name)).map(|name| name.parse::<OnExit>().expect("one of OnExit's names"))
}

impl PackArgs {
    /// The run command's arguments that say the same: its defaults, with the capsules and
    /// every deployment option carried over.
    fn run_args(&self) -> RunArgs {
        let Cmd::Run(run) = Cli::try_parse_from(["xtask", "run"]).expect("`run` parses without arguments").cmd else {
            unreachable!("`run` parses as the run command")
        };
        let mut run = *run;
        run.capsules = self.capsules.clone();
        run.config = self.config.clone();
        run.deadline_ms = self.deadline_ms;
        run.audit_key = self.audit_key.clone();
        run.env = self.env.clone();
        run.precompile = self.precompile;
        run.jit = self.jit;
        run.testing = self.testing;
        run
    }
}

/// `pack`: refusals are a message and their exit status, as the run command's are.
pub fn pack(paths: &Paths, args: PackArgs) -> Result<u8> {
    match pack_steps(paths, &args) {
        Err(e) => match e.downcast::<Refused>() {
            Ok(refused) => {
                eprintln!("error: {refused}");
                Ok(refused.status)
            }
            Err(e) => Err(e),
        },
        Ok(()) => Ok(0),
    }
}

/// Flags that make no sense for the format asked for are usage errors, not ignored.
fn check_flags(args: &PackArgs, format: Format) -> Result<()> {
    let misplaced = match format {
        Format::Hermit => [(args.on_exit.is_some(), "--on-exit"), (args.debug_exit, "--debug-exit")]
            .into_iter()
            .find_map(|(set, flag)| set.then(|| format!("{flag} is for bare-metal images (.iso, .img): uhyve ends the guest itself"))),
        Format::Iso | Format::Img => [(args.memory.is_some(), "--memory"), (args.cpus.is_some(), "--cpus"), (args.softfloat, "--softfloat")]
            .into_iter()
            .find_map(|(set, flag)| set.then(|| format!("{flag} is for .hermit files: a bare-metal image uses the machine it boots on"))),
    };
    match misplaced {
        Some(why) => Err(refuse(EXIT_USAGE, why)),
        None => Ok(()),
    }
}

fn pack_steps(paths: &Paths, args: &PackArgs) -> Result<()> {
    let format = Format::of(&args.output).map_err(|e| refuse(EXIT_USAGE, e))?;
    check_flags(args, format)?;
    let run = args.run_args();
    pack::refuse_baked(&run.env).map_err(|e| refuse(EXIT_USAGE, e))?;
    let mut guest = env_settings(&run.env)?;
    check_inputs(&run)?;
    let manifests = read_manifests(&run.capsules)?;
    apply_flags(&mut guest, &run, &manifests)?;
    bind_audit(&mut guest, &run)?;
    // A packed file boots many times: each boot makes its own run nonce (and seeds itself).
    guest.run_nonce = None;
    let under = if format == Format::Hermit { Under::Uhyve } else { Under::Qemu };
    // Precompiled and sealed with the deployment's artifact key, which the packed image
    // carries in its boot settings to check the seals (the run command's own steps).
    let key = bind_artifact_key(&mut guest, &run)?;
    let capsules = capsule_files(paths, &run, under, &key)?;
    pack::capsule_names(&capsules).map_err(|e| refuse(EXIT_USAGE, e))?;
    for c in &capsules {
        pack::check_capsule(c, guest.max_capsule_bytes.0).map_err(|e| refuse(EXIT_DATA_ERR, e))?;
    }

    let art = artifacts::ensure(paths)?;
    let image = match (args.softfloat, args.testing) {
        (true, _) => artifacts::ensure_softfloat(paths)?,
        (false, true) => artifacts::ensure_testing(paths)?,
        // `--jit`: the capsules go as .wasm, which only the image with Cranelift runs.
        (false, false) if run.jit_image() => artifacts::ensure_jit(paths)?,
        (false, false) => art.astrid_img.clone(),
    };
    if args.softfloat {
        guest.check_only = Flag(true);
    }
    let (memory_mib, cpus) = (args.memory.unwrap_or(HERMIT_DEFAULT_MEMORY_MIB), args.cpus.unwrap_or(UHYVE_DEFAULT_CPUS));
    match format {
        Format::Hermit => {
            guest.ram_mib = Number(u64::from(memory_mib));
            guest.audit_dir = Some(GuestPath(pack::HERMIT_AUDIT_DIR.into()));
        }
        Format::Iso | Format::Img => {
            setup::ensure_grub()?;
            if let Some(on_exit) = args.on_exit {
                guest.on_exit = on_exit;
            }
            if args.debug_exit {
                guest.debug_exit = Some(settings::DebugPort(xtask::grub::DEBUG_EXIT_PORT));
            }
        }
    }
    let bundle = Bundle {
        image,
        loader: art.loader.clone(),
        capsules,
        env: guest.to_env_pairs(),
        memory_mib,
        cpus,
        debug_exit: args.debug_exit,
    };
    xtask::step(format!("writing {} ({format:?})", args.output.display()));
    pack::write(&bundle, format, &args.output, &paths.out)?;
    let size = std::fs::metadata(&args.output).map(|m| m.len()).unwrap_or(0);
    let run_it = match format {
        Format::Hermit if memory_mib != UHYVE_DEFAULT_MEMORY_MIB || cpus != UHYVE_DEFAULT_CPUS => {
            format!("uhyve -m {memory_mib}MiB -c {cpus} {}", args.output.display())
        }
        Format::Hermit => format!("uhyve {}", args.output.display()),
        Format::Iso => format!("boot it from a CD or virtual drive (QEMU: qemu-system-x86_64 -cpu max -m 512M -nographic -cdrom {})", args.output.display()),
        Format::Img => format!("write it to a USB stick: dd if={} of=/dev/sdX bs=4M conv=fsync", args.output.display()),
    };
    let key = if guest.audit_key.is_some() { "; it holds the audit signing key: keep it as private" } else { "" };
    eprintln!(
        "==> {} written ({} MiB, {} capsule(s){key}). Run: {run_it}",
        args.output.display(),
        size.div_ceil(1 << 20),
        bundle.capsules.len()
    );
    Ok(())
}
