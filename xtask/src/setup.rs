//! Installs what the build and the tests need on a fresh machine: the pinned Rust
//! toolchains, QEMU (Debian package), GRUB's image tools and OVMF for the bare-metal images
//! (Debian packages), and, on demand, uhyve (registry crate).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::paths::Paths;
use crate::{process, qemu, toolchain};

pub const UHYVE_VERSION: &str = "0.10.0";

pub fn ensure_base() -> Result<()> {
    toolchain::ensure_all()?;
    ensure_qemu()
}

pub fn ensure_qemu() -> Result<()> {
    if qemu::qemu_binary().is_ok() && Path::new("/usr/share/qemu/qboot.rom").is_file() {
        return Ok(());
    }
    if !is_root() {
        bail!("QEMU is missing; install it with `sudo apt-get install -y qemu-system-x86`");
    }
    crate::step("installing qemu-system-x86 (Debian package)");
    process::run(Command::new("apt-get").args(["update", "-qq"]))?;
    process::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86"]),
    )?;
    qemu::qemu_binary().map(|_| ())
}

/// The Debian packages `pack` needs for `.iso`/`.img` files and the tests need to boot them
/// under UEFI: GRUB for BIOS and UEFI, xorriso and mtools (grub-mkrescue's helpers), OVMF.
pub const GRUB_PACKAGES: [&str; 6] = ["grub-common", "grub-pc-bin", "grub-efi-amd64-bin", "xorriso", "mtools", "ovmf"];

/// Installs GRUB's image tools and OVMF where they are missing (they take about 40 MiB).
pub fn ensure_grub() -> Result<()> {
    let mut missing = crate::grub::missing_tools();
    if !Path::new(crate::grub::OVMF_CODE).is_file() {
        missing.push("ovmf");
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("GRUB's image tools or OVMF are missing; install them with `sudo apt-get install -y {}`", GRUB_PACKAGES.join(" "));
    }
    crate::step(format!("installing {} (Debian packages, for .iso/.img images and UEFI boots)", GRUB_PACKAGES.join(", ")));
    process::run(Command::new("apt-get").args(["update", "-qq"]))?;
    process::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(GRUB_PACKAGES),
    )?;
    let still = crate::grub::missing_tools();
    if !still.is_empty() {
        bail!("still missing after apt-get: {}", still.join(", "));
    }
    Ok(())
}

pub fn is_root() -> bool {
    process::output(Command::new("id").arg("-u")).map(|s| s.trim() == "0").unwrap_or(false)
}

/// uhyve 0.10.0, installed with cargo into the build-output directory (cached there).
pub fn ensure_uhyve(paths: &Paths) -> Result<PathBuf> {
    let root = paths.tools().join(format!("uhyve-{UHYVE_VERSION}"));
    let bin = root.join("bin/uhyve");
    if bin.is_file() {
        return Ok(bin);
    }
    // A test may ask for it first thing: the stable toolchain its cargo runs on, first.
    toolchain::ensure_all()?;
    crate::step(format!("installing uhyve {UHYVE_VERSION} with cargo (takes ~6 minutes once)"));
    process::run(
        process::cargo(toolchain::STABLE)
            .args(["install", "uhyve", "--version", UHYVE_VERSION, "--locked", "--root"])
            .arg(&root),
    )
    .context("installing uhyve")?;
    Ok(bin)
}

pub const VIRTIOFSD_VERSION: &str = "1.14.0";

/// virtiofsd (the Rust one: QEMU 7.2's C daemon rejects the path form Hermit 0.11's
/// FUSE client sends), installed with cargo into the build-output directory.
pub fn ensure_virtiofsd(paths: &Paths) -> Result<PathBuf> {
    let root = paths.tools().join(format!("virtiofsd-{VIRTIOFSD_VERSION}"));
    let bin = root.join("bin/virtiofsd");
    if bin.is_file() {
        return Ok(bin);
    }
    if is_root() && !Path::new("/usr/include/seccomp.h").is_file() {
        crate::step("installing libseccomp-dev, libcap-ng-dev, pkg-config (virtiofsd build)");
        process::run(Command::new("apt-get").args(["update", "-qq"]))?;
        process::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "--no-install-recommends", "libseccomp-dev", "libcap-ng-dev", "pkg-config"]),
        )?;
    }
    toolchain::ensure_all()?;
    crate::step(format!("installing virtiofsd {VIRTIOFSD_VERSION} with cargo (about 2 minutes once)"));
    process::run(
        process::cargo(toolchain::STABLE)
            .args(["install", "virtiofsd", "--version", VIRTIOFSD_VERSION, "--locked", "--root"])
            .arg(&root),
    )
    .context("installing virtiofsd (needs libseccomp-dev and libcap-ng-dev)")?;
    Ok(bin)
}
