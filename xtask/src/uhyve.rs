//! Runs astrid.img under uhyve: the capsule file is mapped to `/root/<name>` and its
//! guest path passed after uhyve's `-- --` convention, so users only name the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

/// What `/dev/kvm` is on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kvm {
    /// No KVM device at all: uhyve cannot run.
    Absent,
    /// Hardware virtualisation (vmx/svm): the normal image runs natively.
    Hardware,
    /// The `kvm_pvm` module: guests run through KVM's instruction emulator, which lacks
    /// SSE and `xgetbv` — only the soft-float image with the PVM kernel runs.
    PvmEmulator,
}

pub fn detect_kvm() -> Kvm {
    if !Path::new("/dev/kvm").exists() {
        return Kvm::Absent;
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Kvm::PvmEmulator;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if hw { Kvm::Hardware } else { Kvm::PvmEmulator }
}

pub struct UhyveRun<'a> {
    pub uhyve: &'a Path,
    pub image: &'a Path,
    pub config: &'a Path,
    pub capsules: &'a [PathBuf],
    pub extra_args: &'a [String],
    pub env: &'a [(String, String)],
    pub timeout: Duration,
}

pub struct UhyveOutcome {
    pub status: Option<i32>,
    pub timed_out: bool,
    pub output: String,
    pub elapsed: Duration,
}

/// The guest path a capsule is mapped to.
pub fn guest_path(capsule: &Path) -> Result<String> {
    let name = capsule
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: not a usable file name", capsule.display()))?;
    Ok(format!("/root/{name}"))
}

pub fn command(run: &UhyveRun) -> Result<Command> {
    let mut cmd = Command::new(run.uhyve);
    cmd.arg("--config").arg(run.config);
    let mut guest_args = Vec::new();
    for c in run.capsules {
        let host = c.canonicalize().with_context(|| format!("capsule {}: no such file", c.display()))?;
        let guest = guest_path(c)?;
        cmd.arg("--file-mapping").arg(format!("{}:{guest}", host.display()));
        guest_args.push(guest);
    }
    for (k, v) in run.env {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
    cmd.arg("-e").arg(format!("{}={}", astrid_kernel::settings::SEED, crate::qemu::fresh_seed()?));
    cmd.arg(run.image).args(["--", "--"]).args(guest_args).args(run.extra_args);
    Ok(cmd)
}

pub fn run(run: &UhyveRun, echo: bool) -> Result<UhyveOutcome> {
    ensure!(run.image.is_file(), "{} does not exist: build it first", run.image.display());
    wait_for(command(run)?, run.timeout, echo)
}

/// Runs a packed Hermit image (`scripts/astrid pack -o FILE.hermit`) as a user would:
/// `uhyve [uhyve flags] FILE`, nothing else.
pub fn run_hermit_file(uhyve: &Path, file: &Path, flags: &[String], timeout: Duration) -> Result<UhyveOutcome> {
    ensure!(file.is_file(), "{} does not exist: make it with `scripts/astrid pack -o {}`", file.display(), file.display());
    let mut cmd = Command::new(uhyve);
    cmd.args(flags).arg(file);
    wait_for(cmd, timeout, false)
}

/// Runs `cmd` (a uhyve) to its end or the timeout; collects its output unless `echo`.
fn wait_for(mut cmd: Command, timeout: Duration, echo: bool) -> Result<UhyveOutcome> {
    let started = Instant::now();
    cmd.stdin(Stdio::null());
    if !echo {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {}", crate::process::show(&cmd)))?;
    let collector = (!echo).then(|| {
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            let mut e = String::new();
            let _ = err.read_to_string(&mut e);
            s + &e
        })
    });
    let (status, timed_out) = crate::process::wait_or_kill(&mut child, timeout)?;
    let output = collector.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
    Ok(UhyveOutcome { status, timed_out, output, elapsed: started.elapsed() })
}

/// The guest memory uhyve.toml asks for, in MiB (uhyve's 512 MiB default otherwise).
pub fn configured_memory_mib(config: &Path) -> u64 {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("memory_size"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_ascii_lowercase())
        .find_map(|v| {
            let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
            let n: u64 = num.parse().ok()?;
            match unit.trim() {
                "gib" | "g" | "gb" => Some(n << 10),
                "mib" | "m" | "mb" => Some(n),
                "kib" | "k" | "kb" => Some(n >> 10),
                _ => None,
            }
        })
        .unwrap_or(512)
}
