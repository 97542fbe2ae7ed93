//! Builds our multiboot loader (`boot/`, x86_64-unknown-none on stable) into the flat
//! image QEMU's `-kernel` and GRUB's `multiboot` load.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::paths::Paths;
use crate::{process, toolchain};

pub fn build(paths: &Paths) -> Result<PathBuf> {
    crate::toolchain::require_ensured("building the loader")?;
    let dir = paths.root.join("boot");
    let target_dir = paths.out.join("boot");
    crate::step("building the multiboot loader (boot/)");
    process::run(
        process::cargo(toolchain::STABLE)
            .current_dir(&dir)
            .args(["build", "--release", "--locked", "--target", "x86_64-unknown-none", "--target-dir"])
            .arg(&target_dir),
    )
    .context("building boot/")?;
    let elf = target_dir.join("x86_64-unknown-none/release/astrid-boot");
    let flat = paths.loader();
    let objcopy = toolchain::tool(toolchain::APP, "llvm-objcopy")?;
    process::run(Command::new(objcopy).args(["-O", "binary"]).arg(&elf).arg(&flat))?;
    Ok(flat)
}
