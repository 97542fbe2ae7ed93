//! Boots astrid.img under QEMU (TCG by default): our multiboot loader as `-kernel`, the
//! application ELF and each capsule as modules, the console on serial, and the
//! application's exit status carried out through the isa-debug-exit device.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use astrid_kernel::exit::{GuestExit, decode_qemu_status};
/// The guest's network: QEMU user networking on a virtio-net NIC (kernel 0.11 needs the
/// modern device, `disable-legacy=on`, and SeaBIOS to assign its BARs). `Restricted` is
/// `restrict=on` (nothing leaves the guest; published ports still come in), `Outbound`
/// unrestricted (the host is 10.0.2.2), `None` attaches no NIC.
pub use astrid_kernel::settings::NetMode;
use astrid_kernel::settings::{DebugPort, HostSeed, Number, Ports, SEED_BYTES, Settings};

/// The isa-debug-exit device's I/O port.
pub const DEBUG_EXIT_PORT: DebugPort = DebugPort(0xf4);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// qboot: fastest start; fine while no PCI device needs BARs assigned.
    Qboot,
    /// SeaBIOS: needed once a NIC or virtio-fs device is attached.
    SeaBios,
}

#[derive(Clone, Debug)]
pub struct Boot {
    pub loader: PathBuf,
    pub app: PathBuf,
    pub capsules: Vec<PathBuf>,
    /// Kernel arguments (before `--`), e.g. `env=K=V`.
    pub kernel_args: Vec<String>,
    /// Application arguments (after `--`).
    pub app_args: Vec<String>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub firmware: Firmware,
    pub timeout: Duration,
    /// Copy the guest console to our stdout while it runs.
    pub echo: bool,
    /// Extra words for the loader's own command line.
    pub loader_args: Vec<String>,
    /// A host directory shared as the guest's `/root` over virtio-fs (needs SeaBIOS and
    /// virtiofsd), with the virtiofsd binary to serve it.
    pub shared_dir: Option<(PathBuf, PathBuf)>,
    pub net: NetMode,
    /// Host port → guest loopback port: outside connections to 127.0.0.1:HOST on the
    /// host reach the capsule listening on 127.0.0.1:GUEST in the image.
    pub publish: Vec<(u16, u16)>,
}

impl Boot {
    pub fn new(loader: PathBuf, app: PathBuf) -> Boot {
        Boot {
            loader,
            app,
            capsules: Vec::new(),
            kernel_args: Vec::new(),
            app_args: Vec::new(),
            memory_mib: 512,
            cpus: 1,
            firmware: Firmware::Qboot,
            timeout: Duration::from_secs(60),
            echo: false,
            loader_args: Vec::new(),
            shared_dir: None,
            net: NetMode::None,
            publish: Vec::new(),
        }
    }
}

/// What a boot produced.
#[derive(Debug)]
pub struct Outcome {
    pub exit: GuestExit,
    /// QEMU's own exit status (None when killed at the timeout).
    pub qemu_status: Option<i32>,
    pub timed_out: bool,
    pub console: String,
    pub elapsed: Duration,
    /// When each console line arrived (complete, newline stripped), from QEMU's start as
    /// the host saw it: the boot benchmark's breakdown.
    pub lines: Vec<(Duration, String)>,
}

impl Outcome {
    /// The application's status, if the application reported one.
    pub fn app_status(&self) -> Option<u8> {
        match self.exit {
            GuestExit::App(s) if !self.timed_out => Some(s),
            _ => None,
        }
    }

    /// One line that says how the run ended, for humans.
    pub fn describe(&self) -> String {
        if self.timed_out {
            return format!("the guest did not finish within the timeout ({:.1?})", self.elapsed);
        }
        match self.exit {
            GuestExit::App(s) => format!("capsule run ended with status {s}"),
            GuestExit::Loader(code) => {
                format!("the boot loader failed (code {code}, see its message above and boot/README.md)")
            }
            GuestExit::Kernel { success: false } => {
                "the Hermit kernel stopped the guest (panic or failed start; see the console)".into()
            }
            GuestExit::Kernel { success: true } => {
                "the kernel shut down without a status from the application".into()
            }
            GuestExit::NoReport(rc) => {
                format!("QEMU exited with {rc} without a status from the guest (reset or triple fault?)")
            }
        }
    }
}

pub fn qemu_binary() -> Result<PathBuf> {
    let candidates = ["/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("qemu-system-x86_64 is not installed: run `scripts/setup` (apt-get install qemu-system-x86)")
}

/// The module list QEMU's `-initrd` takes: `app args,capsule,capsule…`.
pub fn initrd_arg(app: &Path, kernel_args: &[String], app_args: &[String], capsules: &[PathBuf]) -> Result<String> {
    let mut first = vec![app.display().to_string()];
    first.extend(kernel_args.iter().cloned());
    if !app_args.is_empty() {
        first.push("--".into());
        first.extend(app_args.iter().cloned());
    }
    let mut modules = vec![first.join(" ")];
    for c in capsules {
        let s = c.display().to_string();
        ensure!(!s.contains(' '), "capsule path {s:?} contains a space, which QEMU's module list cannot carry: rename or move it");
        modules.push(s);
    }
    for m in &modules {
        ensure!(!m.contains(','), "{m:?} contains a comma, which QEMU's module list cannot carry: rename or move the file");
    }
    // The loader reads a module's command line up to 64 KiB (boot/src/multiboot.rs).
    ensure!(
        modules[0].len() < 60 << 10,
        "the application's command line is {} bytes, over the 60 KiB the boot path carries: shorten the manifests or the hook payload",
        modules[0].len()
    );
    Ok(modules.join(","))
}

/// One image setting as a kernel argument: `env=NAME=VALUE`.
pub fn env_arg(name: &str, value: impl std::fmt::Display) -> String {
    format!("env={name}={value}")
}

/// What every boot tells the image (before `boot.kernel_args`, which may override it):
/// the debug-exit port, its RAM, a fresh seed, its network and published ports.
fn boot_settings(boot: &Boot) -> Result<Settings> {
    ensure!(boot.publish.is_empty() || boot.net != NetMode::None, "publishing ports needs a network: drop --net none");
    Ok(Settings {
        debug_exit: Some(DEBUG_EXIT_PORT),
        ram_mib: Number(u64::from(boot.memory_mib)),
        seed: Some(fresh_seed()?),
        run_nonce: Some(fresh_seed()?),
        net: boot.net,
        publish: Ports(boot.publish.iter().map(|(_, guest)| *guest).collect()),
        ..Settings::default()
    })
}

pub fn command(boot: &Boot) -> Result<Command> {
    let mut kernel_args: Vec<String> = boot_settings(boot)?.to_env_pairs().iter().map(|(k, v)| env_arg(k, v)).collect();
    kernel_args.extend(boot.kernel_args.iter().cloned());
    let mut loader_args = vec![format!("debug-exit={DEBUG_EXIT_PORT}")];
    loader_args.extend(boot.loader_args.iter().cloned());
    let mut cmd = Command::new(qemu_binary()?);
    cmd.args(["-machine", "q35", "-accel", "tcg"])
        .args(["-cpu", "qemu64,apic,fsgsbase,fxsr,rdrand,rdtscp,xsave,xsaveopt"])
        .args(["-m", &format!("{}M", boot.memory_mib), "-smp", &boot.cpus.to_string()])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"])
        .args(["-device", &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT},iosize=0x04")])
        .arg("-kernel")
        .arg(&boot.loader)
        .args(["-append", &loader_args.join(" ")])
        .args(["-initrd", &initrd_arg(&boot.app, &kernel_args, &boot.app_args, &boot.capsules)?]);
    if boot.net != NetMode::None {
        let mut netdev = format!("user,id=n0,restrict={}", if boot.net == NetMode::Restricted { "on" } else { "off" });
        for (host, guest) in &boot.publish {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        cmd.args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0,disable-legacy=on,romfile="]);
    }
    // qboot leaves PCI BARs unassigned, which a virtio device needs: SeaBIOS then.
    if boot.firmware == Firmware::Qboot && boot.shared_dir.is_none() && boot.net == NetMode::None {
        cmd.args(["-bios", "/usr/share/qemu/qboot.rom"]);
    }
    Ok(cmd)
}

/// Boots and waits (bounded by `boot.timeout`), returning the console and the exit.
pub fn run(boot: &Boot) -> Result<Outcome> {
    for f in [&boot.loader, &boot.app] {
        ensure!(f.is_file(), "{} does not exist: build it with `cargo xtask build`", f.display());
    }
    let mut cmd = command(boot)?;
    let _daemon = match &boot.shared_dir {
        Some((dir, virtiofsd)) => Some(share(&mut cmd, dir, virtiofsd, boot.memory_mib)?),
        None => None,
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", crate::process::show(&cmd)))?;
    let echo = boot.echo;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut lines = Vec::new();
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let at = started.elapsed();
            for &byte in &buf[..n] {
                if byte == b'\n' {
                    let line = String::from_utf8_lossy(&pending);
                    lines.push((at, line.trim_end().to_string()));
                    pending.clear();
                } else {
                    pending.push(byte);
                }
            }
            if echo {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
            all.extend_from_slice(&buf[..n]);
        }
        (all, lines)
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (status, timed_out) = crate::process::wait_or_kill(&mut child, boot.timeout)?;
    let elapsed = started.elapsed();
    let (all, lines) = reader.join().unwrap_or_default();
    let mut console = String::from_utf8_lossy(&all).into_owned();
    let qemu_err = err_reader.join().unwrap_or_default();
    if !qemu_err.trim().is_empty() {
        console.push_str("\n[qemu stderr] ");
        console.push_str(qemu_err.trim());
        console.push('\n');
    }
    if !timed_out && status.is_none() {
        bail!("QEMU was killed by a signal; console so far:\n{console}");
    }
    let exit = decode_qemu_status(status.unwrap_or(0));
    Ok(Outcome { exit, qemu_status: status, timed_out, console, elapsed, lines })
}

/// A running virtiofsd, stopped when dropped (it also exits when QEMU disconnects).
struct Virtiofsd {
    child: std::process::Child,
    socket: PathBuf,
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Starts virtiofsd for `dir` and adds the vhost-user-fs device (tag `root`, which the
/// kernel mounts at `/root`) with the shared guest memory it needs.
fn share(cmd: &mut Command, dir: &Path, virtiofsd: &Path, memory_mib: u32) -> Result<Virtiofsd> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let socket = std::env::temp_dir().join(format!("astrid-vfs-{}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let child = Command::new(virtiofsd)
        .arg(format!("--socket-path={}", socket.display()))
        .arg(format!("--shared-dir={}", dir.display()))
        .args(["--sandbox", "none", "--seccomp", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", virtiofsd.display()))?;
    let daemon = Virtiofsd { child, socket: socket.clone() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            bail!("virtiofsd did not create {} within 10 s", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cmd.args(["-chardev", &format!("socket,id=vfs,path={}", socket.display())])
        .args(["-device", "vhost-user-fs-pci,queue-size=1024,chardev=vfs,tag=root"])
        .args(["-object", &format!("memory-backend-file,id=mem,size={memory_mib}M,mem-path=/dev/shm,share=on")])
        .args(["-numa", "node,memdev=mem"]);
    Ok(daemon)
}

/// 32 bytes of the host's entropy: the guest's randomness seed (`ASTRID_SEED`). Under
/// TCG the guest has none of its own (kernel 0.11 then hands out zeros).
pub fn fresh_seed() -> Result<HostSeed> {
    let mut seed = [0u8; SEED_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom for the guest's seed")?;
    ensure!(seed != [0; SEED_BYTES], "/dev/urandom gave all zeros for the guest's seed");
    Ok(HostSeed(seed))
}
