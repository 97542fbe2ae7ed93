//! Bare-metal images: GRUB 2 for BIOS and UEFI in one hybrid file, made by `grub-mkrescue`
//! (Debian's grub-pc-bin, grub-efi-amd64-bin, xorriso, mtools). GRUB loads our loader with
//! `multiboot2` (which carries the ACPI RSDP UEFI machines need), the image and each capsule
//! as modules; the settings ride on the image module's command line, as under QEMU.
//!
//! The same file is a CD image (El Torito, BIOS and UEFI) and a disk image (an MBR with
//! GRUB's boot code and an EFI system partition), so `.iso` and `.img` hold the same bytes:
//! burn or attach the one, `dd` the other to a USB stick.
//!
//! Also here: booting such a file under QEMU with SeaBIOS or OVMF (the tests, and
//! `scripts/run`-like checks by hand).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use astrid_kernel::exit::{GuestExit, decode_qemu_status};

use crate::pack::{Bundle, capsule_names, partial_path};

/// The GRUB platforms the file boots on, and the directory of each one's modules.
pub const PLATFORMS: [(&str, &str); 2] = [("BIOS", "/usr/lib/grub/i386-pc"), ("UEFI", "/usr/lib/grub/x86_64-efi")];
/// OVMF, the UEFI firmware for QEMU (Debian's ovmf package): code and a template of the
/// variable store.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
/// The QEMU isa-debug-exit port the image and the loader report to with `--debug-exit`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Whether everything `grub-mkrescue` needs is installed; the missing pieces otherwise.
pub fn missing_tools() -> Vec<&'static str> {
    let mut missing = Vec::new();
    for (tool, package) in [("grub-mkrescue", "grub-common"), ("xorriso", "xorriso"), ("mformat", "mtools")] {
        if which(tool).is_none() {
            missing.push(package);
        }
    }
    for ((_, dir), package) in PLATFORMS.iter().zip(["grub-pc-bin", "grub-efi-amd64-bin"]) {
        if !Path::new(dir).join("multiboot2.mod").is_file() {
            missing.push(package);
        }
    }
    missing
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

/// A word for GRUB's command parser: single-quoted (no expansion, `;` is no separator).
/// The kernel splits the same text again with `shell_words`, so quotes and backslashes
/// could not survive both: they are refused.
fn grub_word(word: &str) -> Result<String> {
    ensure!(
        !word.contains(['\'', '"', '\\']) && !word.chars().any(char::is_control),
        "{word:?} holds a quote, a backslash or a control character, which GRUB's and the kernel's command lines cannot both carry: leave them out of settings and file names"
    );
    Ok(format!("'{word}'"))
}

/// The `grub.cfg` of a packed image: serial and screen console, no menu delay, one entry.
pub fn grub_cfg(bundle: &Bundle, names: &[String]) -> Result<String> {
    let mut loader_line = String::from("    multiboot2 /boot/astrid-boot.bin");
    if bundle.debug_exit {
        loader_line.push_str(&format!(" debug-exit={DEBUG_EXIT_PORT:#x}"));
    }
    let mut app_line = String::from("    module2 /boot/astrid.img astrid.img");
    for (k, v) in &bundle.env {
        app_line.push(' ');
        app_line.push_str(&grub_word(&format!("env={k}={v}"))?);
    }
    let mut capsule_lines = String::new();
    // The names are plain already (`capsule_names`): letters, digits and `._-+`.
    for n in names {
        capsule_lines.push_str(&format!("    module2 /boot/capsules/{n} {n}\n"));
    }
    Ok(format!(
        "# astrid.img, written by `scripts/astrid pack`. GRUB loads our multiboot2 loader, the image\n\
         # and each capsule; the console is the first serial port (115200 8N1) and the screen.\n\
         serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=0\n\
         set default=0\n\
         menuentry \"astrid.img: {title}\" {{\n\
         {loader_line}\n\
         {app_line}\n\
         {capsule_lines}}}\n",
        title = names.join(" "),
    ))
}

/// Writes the hybrid GRUB image of `bundle` to `output` through a staging tree in
/// `scratch`.
pub fn write_image(bundle: &Bundle, output: &Path, scratch: &Path) -> Result<()> {
    let missing = missing_tools();
    ensure!(
        missing.is_empty(),
        "making a GRUB image needs {}: run `scripts/setup` or `apt-get install -y {}`",
        missing.join(", "),
        missing.join(" ")
    );
    let names = capsule_names(&bundle.capsules).map_err(anyhow::Error::msg)?;
    let tree = scratch.join(format!("grub-tree-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("boot/grub"))?;
    std::fs::create_dir_all(tree.join("boot/capsules"))?;
    let copy = |from: &Path, to: PathBuf| std::fs::copy(from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()));
    copy(&bundle.loader, tree.join("boot/astrid-boot.bin"))?;
    copy(&bundle.image, tree.join("boot/astrid.img"))?;
    for (c, n) in bundle.capsules.iter().zip(&names) {
        copy(c, tree.join("boot/capsules").join(n))?;
    }
    std::fs::write(tree.join("boot/grub/grub.cfg"), grub_cfg(bundle, &names)?)?;
    let partial = partial_path(output);
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&partial)
        .arg(&tree)
        .stdin(Stdio::null())
        .output()
        .context("starting grub-mkrescue")?;
    let _ = std::fs::remove_dir_all(&tree);
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        bail!("grub-mkrescue failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    std::fs::rename(&partial, output).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// The firmware a packed image boots under in QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default BIOS.
    Bios,
    /// OVMF (UEFI).
    Uefi,
}

/// How the image is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Medium {
    /// `-cdrom`.
    Cdrom,
    /// A raw disk (`-drive format=raw`): a USB stick or hard disk.
    Disk,
}

/// A QEMU boot of a packed GRUB image.
#[derive(Clone, Debug)]
pub struct ImageBoot {
    pub image: PathBuf,
    pub firmware: Firmware,
    pub medium: Medium,
    /// QEMU's `-cpu` model and features.
    pub cpu: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
    /// Attach QEMU's isa-debug-exit device at 0xf4 (a real machine has none: without it the
    /// kernel's own exit write goes nowhere, as on hardware).
    pub debug_exit_device: bool,
    /// Where OVMF's writable variable store is copied to.
    pub scratch: PathBuf,
}

impl ImageBoot {
    pub fn new(image: PathBuf, firmware: Firmware, scratch: PathBuf) -> ImageBoot {
        ImageBoot {
            image,
            firmware,
            medium: Medium::Cdrom,
            cpu: "qemu64,apic,fsgsbase,fxsr,rdrand,rdtscp,xsave,xsaveopt".into(),
            memory_mib: 512,
            cpus: 2,
            timeout: Duration::from_secs(120),
            debug_exit_device: true,
            scratch,
        }
    }
}

/// What a boot of a packed image produced.
#[derive(Debug)]
pub struct ImageOutcome {
    /// QEMU's exit status (`None`: killed at the timeout).
    pub qemu_status: Option<i32>,
    pub exit: GuestExit,
    pub timed_out: bool,
    pub console: String,
    pub elapsed: Duration,
}

/// Boots `boot.image` under QEMU TCG (q35, the isa-debug-exit device at 0xf4, no
/// reboot), the console on serial, and waits at most `boot.timeout`.
pub fn boot_image(boot: &ImageBoot) -> Result<ImageOutcome> {
    let qemu = crate::qemu::qemu_binary()?;
    let mut cmd = Command::new(qemu);
    cmd.args(["-machine", "q35", "-accel", "tcg", "-cpu", &boot.cpu])
        .args(["-m", &format!("{}M", boot.memory_mib), "-smp", &boot.cpus.to_string()])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"]);
    if boot.debug_exit_device {
        cmd.args(["-device", &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04")]);
    }
    match boot.medium {
        Medium::Cdrom => cmd.arg("-cdrom").arg(&boot.image),
        Medium::Disk => cmd.arg("-drive").arg(format!("file={},format=raw,if=ide,snapshot=on", boot.image.display())),
    };
    let _vars_guard;
    if boot.firmware == Firmware::Uefi {
        ensure!(Path::new(OVMF_CODE).is_file(), "UEFI boots need OVMF ({OVMF_CODE}): run `scripts/setup` or `apt-get install -y ovmf`");
        std::fs::create_dir_all(&boot.scratch)?;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let vars = boot.scratch.join(format!("ovmf-vars-{}-{n}.fd", std::process::id()));
        std::fs::copy(OVMF_VARS, &vars).with_context(|| format!("copying {OVMF_VARS}"))?;
        cmd.arg("-drive").arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"));
        cmd.arg("-drive").arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()));
        _vars_guard = RemoveOnDrop(vars);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", crate::process::show(&cmd)))?;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stdout.read_to_end(&mut all);
        all
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (status, timed_out) = crate::process::wait_or_kill(&mut child, boot.timeout)?;
    let mut console = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let err = err_reader.join().unwrap_or_default();
    if !err.trim().is_empty() {
        console.push_str("\n[qemu stderr] ");
        console.push_str(err.trim());
    }
    Ok(ImageOutcome {
        qemu_status: status,
        exit: decode_qemu_status(status.unwrap_or(0)),
        timed_out,
        console,
        elapsed: started.elapsed(),
    })
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(env: Vec<(String, String)>, debug_exit: bool) -> Bundle {
        Bundle {
            image: PathBuf::new(),
            loader: PathBuf::new(),
            capsules: vec![],
            env,
            memory_mib: 0,
            cpus: 0,
            debug_exit,
        }
    }

    #[test]
    fn grub_cfg_loads_loader_image_and_capsules_with_quoted_settings() {
        let env = vec![("ASTRID_CAPSULE_CONFIG".to_string(), "a=b;c=$d".to_string()), ("ASTRID_DEBUG_EXIT".into(), "0xf4".into())];
        let cfg = grub_cfg(&bundle(env, true), &["hello.wasm".into(), "b.cwasm".into()]).unwrap();
        assert!(cfg.contains("    multiboot2 /boot/astrid-boot.bin debug-exit=0xf4\n"), "{cfg}");
        assert!(
            cfg.contains("    module2 /boot/astrid.img astrid.img 'env=ASTRID_CAPSULE_CONFIG=a=b;c=$d' 'env=ASTRID_DEBUG_EXIT=0xf4'\n"),
            "{cfg}"
        );
        let hello = cfg.find("module2 /boot/capsules/hello.wasm hello.wasm\n").expect("first capsule");
        let b = cfg.find("module2 /boot/capsules/b.cwasm b.cwasm\n").expect("second capsule");
        assert!(hello < b);
        assert!(cfg.contains("set timeout=0") && cfg.contains("serial --unit=0 --speed=115200"));
        // Without --debug-exit the loader halts on failure instead of writing the port.
        assert!(grub_cfg(&bundle(vec![], false), &[]).unwrap().contains("multiboot2 /boot/astrid-boot.bin\n"));
    }

    #[test]
    fn quotes_are_refused_before_grub_or_the_kernel_mangles_them() {
        for v in ["it's", "a\"b", "back\\slash", "line\nbreak"] {
            let e = grub_cfg(&bundle(vec![("ASTRID_TEST_ARG".into(), v.into())], false), &[]).unwrap_err();
            assert!(e.to_string().contains("quote"), "{v}: {e}");
        }
    }
}
