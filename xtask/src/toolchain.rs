//! The pinned toolchains and their idempotent installation. The environment sets
//! `RUSTUP_AUTO_INSTALL=0`, so nothing is installed on first use: we do it here.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, ensure};

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
    Toolchain { name: APP, components: &["rust-src", "llvm-tools", "clippy"], targets: &[] },
    Toolchain { name: KERNEL, components: &["rust-src", "llvm-tools"], targets: &[] },
    Toolchain {
        name: STABLE,
        components: &["clippy"],
        targets: &["x86_64-unknown-none", "wasm32-unknown-unknown"],
    },
];

fn host_triple() -> &'static str {
    "x86_64-unknown-linux-gnu"
}

/// Set once `ensure_all` has succeeded in this process.
static ENSURED: AtomicBool = AtomicBool::new(false);

/// Installs every pinned toolchain with its components and targets, if missing (once per
/// process: later calls return at once).
pub fn ensure_all() -> Result<()> {
    if ensured() {
        return Ok(());
    }
    install_missing()?;
    ENSURED.store(true, Ordering::Release);
    Ok(())
}

/// Whether `ensure_all` has succeeded in this process.
pub fn ensured() -> bool {
    ENSURED.load(Ordering::Acquire)
}

/// The first line of every build step: building before the toolchains and targets are
/// there fails late and obscurely (a capsule built before the wasm32 target is installed
/// is E0463), so a step that runs too early is refused at once, naming itself.
pub fn require_ensured(step: &str) -> Result<()> {
    ensure!(
        ensured(),
        "internal error: {step} was about to run before the toolchains were installed — \
         a command that builds must call toolchain::ensure_all() first (xtask's `prepare`)"
    );
    Ok(())
}

fn install_missing() -> Result<()> {
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

#[cfg(test)]
mod tests {
    use crate::paths::Paths;

    /// No test in this process installs the toolchains, so every build step must refuse.
    #[test]
    fn build_steps_refuse_to_run_before_the_toolchains_are_ensured() {
        assert!(!super::ensured());
        let paths = Paths::discover();
        let refusals = [
            crate::capsule::build(&paths, &paths.root.join("capsules/hello")).map(drop),
            crate::kernel::build(&paths, crate::kernel::Variant::Standard).map(drop),
            crate::loader::build(&paths).map(drop),
            crate::hermit_app::build(
                &paths,
                crate::hermit_app::App::Astrid,
                crate::hermit_app::Flavor::Standard,
                &paths.out,
                &paths.out.join("never.img"),
            ),
        ];
        for r in refusals {
            let e = r.expect_err("a build step ran before ensure_all");
            assert!(e.to_string().contains("toolchain::ensure_all"), "{e}");
        }
    }
}
