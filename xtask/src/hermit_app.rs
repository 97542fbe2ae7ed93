//! Builds Hermit applications from `kernel/` (astrid.img itself and the bare hello
//! baseline) for x86_64-unknown-hermit with build-std, linked against libhermit.a.
//! The soft-float flavour uses a target spec derived from rustc's own hermit spec with
//! x86_64-unknown-none's float settings, for PVM hosts whose emulator lacks SSE.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::paths::Paths;
use crate::{process, toolchain};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The normal hard-float image.
    Standard,
    /// No SSE/AVX anywhere, for the uhyve smoke test on PVM hosts.
    SoftFloat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// astrid.img: the `astrid` binary of kernel/ without Cranelift (no `jit`
    /// feature): it runs artifacts precompiled and sealed on the host, and boots
    /// faster for being a third of the size.
    Astrid,
    /// astrid-jit.img: the same binary with Cranelift, for `--jit` and plain `.wasm`.
    AstridJit,
    /// astrid.img with the `testing` sources linked in (test and bench images).
    AstridTesting,
    /// The bare baseline: kernel/examples/hello.rs.
    Hello,
}

/// The build id the image's audit log names (`audit::BUILD_ID`): the source's git
/// commit, with `-dirty` when the work tree had changes; `unknown` outside git.
fn build_id(root: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) if git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()) => {
            format!("{commit}-dirty")
        }
        Some(commit) => commit,
        None => "unknown".into(),
    }
}

/// Builds `app` in `flavor` against the kernel library in `hermit_lib_dir` and copies
/// the ELF to `dest`.
pub fn build(paths: &Paths, app: App, flavor: Flavor, hermit_lib_dir: &Path, dest: &Path) -> Result<()> {
    crate::toolchain::require_ensured(&format!("building {}", dest.display()))?;
    let target = match flavor {
        Flavor::Standard => "x86_64-unknown-hermit".to_string(),
        Flavor::SoftFloat => softfloat_spec(paths)?.display().to_string(),
    };
    // One target dir for every flavour of the app: the `testing` feature changes only
    // our crate, and cargo keeps both builds of it side by side.
    let target_dir = paths.out.join("app");
    let (kind, name) = match app {
        App::Astrid | App::AstridJit | App::AstridTesting => ("--bin", "astrid"),
        App::Hello => ("--example", "hello"),
    };
    crate::step(format!("building {name} for {} ({flavor:?})", short_target(&target)));
    let mut cmd = process::cargo(toolchain::APP);
    cmd.current_dir(&paths.root)
        .env("HERMIT_LIB_DIR", hermit_lib_dir)
        .env("ASTRID_BUILD_ID", build_id(&paths.root))
        .args(["build", "--release", "-p", "astrid-kernel", kind, name, "--target", &target])
        .args(["-Zbuild-std=std,panic_abort", "-Zbuild-std-features=compiler-builtins-mem"])
        .arg("--target-dir")
        .arg(&target_dir);
    if flavor == Flavor::SoftFloat {
        // wasmtime's SIMD dependencies cannot build soft-float, and the PVM emulator
        // could not run JIT code anyway: this image checks capsules only.
        cmd.args(["-Zjson-target-spec", "--no-default-features"]);
        // The audit log's Ed25519 (curve25519-dalek, sha2) picks SIMD backends on
        // x86_64, which LLVM cannot build soft-float: their portable ones instead.
        // (Target crates only: with --target, build scripts do not see RUSTFLAGS.)
        cmd.env("RUSTFLAGS", "--cfg curve25519_dalek_backend=\"serial\" --cfg sha2_backend=\"soft\"");
    }
    match app {
        // The production image: the engine without its compiler.
        App::Astrid if flavor == Flavor::Standard => {
            cmd.args(["--no-default-features", "--features", "engine"]);
        }
        App::AstridTesting => {
            cmd.args(["--features", "testing"]);
        }
        _ => {}
    }
    process::run(&mut cmd).with_context(|| format!("building the Hermit application {name}"))?;

    let mut built = target_dir.join(short_target(&target)).join("release");
    if app == App::Hello {
        built = built.join("examples");
    }
    let built = built.join(name);
    copy_if_changed(&built, dest)
}

fn short_target(target: &str) -> String {
    Path::new(target).file_stem().unwrap().to_string_lossy().into_owned()
}

fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let new = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if fs::read(to).ok().as_deref() != Some(&new[..]) {
        fs::create_dir_all(to.parent().unwrap())?;
        fs::write(to, new)?;
    }
    Ok(())
}

/// Writes `x86_64-unknown-hermit-softfloat.json`: the hermit spec with the features
/// and float ABI of the (soft-float) x86_64-unknown-none spec.
fn softfloat_spec(paths: &Paths) -> Result<PathBuf> {
    let spec = |target: &str| -> Result<serde_json::Value> {
        let text = process::output(
            Command::new("rustc")
                .arg(format!("+{}", toolchain::APP))
                .args(["-Zunstable-options", "--print", "target-spec-json", "--target", target]),
        )?;
        Ok(serde_json::from_str(&text)?)
    };
    let mut hermit = spec("x86_64-unknown-hermit")?;
    let none = spec("x86_64-unknown-none")?;
    let hermit_features = hermit["features"].as_str().unwrap_or_default().to_string();
    let float_features = none["features"].as_str().context("x86_64-unknown-none has no features")?;
    hermit["features"] = format!("{hermit_features},{float_features}").into();
    hermit["rustc-abi"] = none["rustc-abi"].clone();
    hermit["metadata"]["description"] = "x86_64 Hermit, soft-float (astrid.img on PVM hosts)".into();
    let path = paths.out.join("x86_64-unknown-hermit-softfloat.json");
    let text = serde_json::to_string_pretty(&hermit)?;
    if fs::read_to_string(&path).ok().as_deref() != Some(&text[..]) {
        fs::create_dir_all(&paths.out)?;
        fs::write(&path, text)?;
    }
    Ok(path)
}
