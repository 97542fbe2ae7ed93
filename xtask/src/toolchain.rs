//! The pinned toolchains and their idempotent installation. The environment sets
//! `RUSTUP_AUTO_INSTALL=0`, so nothing is installed on first use: we do it here.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::process;

/// Builds the application (x86_64-unknown-hermit, tier 3, build-std) and the host tools.
pub const APP: &str = "nightly-2026-05-19";
/// The Hermit kernel 0.11.0 pins this nightly (later ones reject its `#[naked]` uses).
pub const KERNEL: &str = "nightly-2025-03-15";
/// Builds the loader (x86_64-unknown-none) and capsules (wasm32-unknown-unknown).
pub const STABLE: &str = "1.95.0";

pub struct Toolchain {
    pub name: &'static str,
    pub components: &'static [&'static str],
    pub targets: &'static [&'static str],
}

pub const ALL: &[Toolchain] = &[
    Toolchain { name: APP, components: &["rust-src", "llvm-tools"], targets: &[] },
    Toolchain { name: KERNEL, components: &["rust-src", "llvm-tools"], targets: &[] },
    Toolchain {
        name: STABLE,
        components: &[],
        targets: &["x86_64-unknown-none", "wasm32-unknown-unknown"],
    },
];

fn host_triple() -> &'static str {
    "x86_64-unknown-linux-gnu"
}

/// Installs every pinned toolchain with its components and targets, if missing.
pub fn ensure_all() -> Result<()> {
    let installed = process::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is required (https://rustup.rs): install it first")?;
    for tc in ALL {
        let full = format!("{}-{}", tc.name, host_triple());
        if !installed.lines().any(|l| l.split_whitespace().next() == Some(&full)) {
            crate::step(format!("installing Rust toolchain {}", tc.name));
            let mut cmd = Command::new("rustup");
            cmd.args(["toolchain", "install", tc.name, "--profile", "minimal"]);
            for c in tc.components {
                cmd.args(["-c", c]);
            }
            process::run(&mut cmd)?;
        }
        let have = process::output(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            tc.name,
        ]))?;
        for c in tc.components {
            if !have.lines().any(|l| l.starts_with(c)) {
                crate::step(format!("adding component {c} to {}", tc.name));
                process::run(Command::new("rustup").args(["component", "add", c, "--toolchain", tc.name]))?;
            }
        }
        for t in tc.targets {
            if !have.lines().any(|l| l == format!("rust-std-{t}")) {
                crate::step(format!("adding target {t} to {}", tc.name));
                process::run(Command::new("rustup").args(["target", "add", t, "--toolchain", tc.name]))?;
            }
        }
    }
    Ok(())
}

/// The sysroot of `toolchain`.
pub fn sysroot(toolchain: &str) -> Result<PathBuf> {
    let out = process::output(Command::new("rustc").arg(format!("+{toolchain}")).args(["--print", "sysroot"]))?;
    Ok(PathBuf::from(out.trim()))
}

/// A binary shipped in the toolchain's host tool directory (llvm-tools, wasm-component-ld).
pub fn tool(toolchain: &str, name: &str) -> Result<PathBuf> {
    let path = sysroot(toolchain)?.join("lib/rustlib").join(host_triple()).join("bin").join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: run `rustup component add llvm-tools --toolchain {toolchain}`",
        path.display()
    );
    Ok(path)
}
