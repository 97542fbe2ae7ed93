//! Builds capsules from source: a Rust crate compiled for wasm32-unknown-unknown and
//! linked into a WebAssembly component by the `wasm-component-ld` that ships with rustc.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use crate::paths::Paths;
use crate::{process, toolchain};

/// Builds the capsule crate in `dir` and returns the path of its `.wasm` component.
pub fn build(paths: &Paths, dir: &Path) -> Result<PathBuf> {
    toolchain::require_ensured(&format!("building capsule {}", dir.display()))?;
    let manifest = dir.join("Cargo.toml");
    ensure!(manifest.is_file(), "{} has no Cargo.toml: not a capsule crate", dir.display());
    let name = package_name(&manifest)?;
    let linker = toolchain::tool(toolchain::STABLE, "wasm-component-ld")?;
    let target_dir = paths.out.join("capsules-build");
    crate::step(format!("building capsule {name} ({})", dir.display()));
    process::run(
        process::cargo(toolchain::STABLE)
            .current_dir(dir)
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", &linker)
            .args(["build", "--release", "--target", "wasm32-unknown-unknown", "--target-dir"])
            .arg(&target_dir),
    )
    .with_context(|| format!("building capsule {}", dir.display()))?;
    let built = target_dir.join("wasm32-unknown-unknown/release").join(format!("{}.wasm", name.replace('-', "_")));
    let dest = paths.out.join("capsules").join(format!("{name}.wasm"));
    fs::create_dir_all(dest.parent().unwrap())?;
    fs::copy(&built, &dest).with_context(|| format!("copying {}", built.display()))?;
    Ok(dest)
}

/// The file name `build` gives the component of the capsule crate in `dir`
/// (`<package>.wasm`), without building it.
pub fn output_name(dir: &Path) -> Result<String> {
    Ok(format!("{}.wasm", package_name(&dir.join("Cargo.toml"))?))
}

fn package_name(manifest: &Path) -> Result<String> {
    let text = fs::read_to_string(manifest)?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some(v) = line.strip_prefix("name").map(str::trim).and_then(|l| l.strip_prefix('='))
        {
            return Ok(v.trim().trim_matches('"').to_string());
        }
    }
    anyhow::bail!("{}: no [package] name", manifest.display())
}
