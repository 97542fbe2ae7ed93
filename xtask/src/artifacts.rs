//! Everything a run, a test or a benchmark boots, built once and reused: cargo keeps
//! each step incremental, so a rebuild with nothing changed takes seconds.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::hermit_app::{self, App, Flavor};
use crate::kernel::{self, Variant};
use crate::paths::Paths;
use crate::{capsule, loader, setup};

#[derive(Clone, Debug)]
pub struct Artifacts {
    pub paths: Paths,
    pub astrid_img: PathBuf,
    pub hello_img: PathBuf,
    pub loader: PathBuf,
    pub example_capsule: PathBuf,
}

/// Builds astrid.img, the hello baseline, the loader and the example capsule.
pub fn ensure(paths: &Paths) -> Result<Artifacts> {
    setup::ensure_base()?;
    let lib = kernel::build(paths, Variant::Standard)?;
    hermit_app::build(paths, App::Astrid, Flavor::Standard, &lib, &paths.astrid_img())?;
    hermit_app::build(paths, App::Hello, Flavor::Standard, &lib, &paths.hello_img())?;
    let loader = loader::build(paths)?;
    let example_capsule = capsule::build(paths, &paths.root.join("capsules/hello"))?;
    Ok(Artifacts {
        paths: paths.clone(),
        astrid_img: paths.astrid_img(),
        hello_img: paths.hello_img(),
        loader,
        example_capsule,
    })
}

/// Builds astrid-jit.img: astrid.img with Cranelift, which compiles plain `.wasm` in
/// the guest (`--jit`, and tests that boot a `.wasm` or a WAT module).
pub fn ensure_jit(paths: &Paths) -> Result<PathBuf> {
    ensure_image(paths, Variant::Standard, App::AstridJit, Flavor::Standard, paths.astrid_jit_img())
}

/// Builds astrid.img with the testing sources linked in (test and bench images).
pub fn ensure_testing(paths: &Paths) -> Result<PathBuf> {
    ensure_image(paths, Variant::Standard, App::AstridTesting, Flavor::Standard, paths.astrid_testing_img())
}

/// Builds the soft-float astrid.img on the PVM kernel, for uhyve on PVM hosts.
pub fn ensure_softfloat(paths: &Paths) -> Result<PathBuf> {
    ensure_image(paths, Variant::Pvm, App::Astrid, Flavor::SoftFloat, paths.astrid_softfloat_img())
}

/// One image, `app` linked against the `variant` kernel, built if stale at `img`.
fn ensure_image(paths: &Paths, variant: Variant, app: App, flavor: Flavor, img: PathBuf) -> Result<PathBuf> {
    setup::ensure_base()?;
    let lib = kernel::build(paths, variant)?;
    hermit_app::build(paths, app, flavor, &lib, &img)?;
    Ok(img)
}

/// The application built as a Linux process (hosted mode), with or without the
/// testing sources.
pub fn ensure_hosted(paths: &Paths, testing: bool) -> Result<PathBuf> {
    crate::toolchain::ensure_all()?;
    let target_dir = paths.out.join("hosted");
    crate::step(format!("building astrid (hosted mode{})", if testing { ", testing sources" } else { "" }));
    let mut cmd = crate::process::cargo(crate::toolchain::APP);
    cmd.current_dir(&paths.root)
        .args(["build", "--release", "-p", "astrid-kernel", "--bin", "astrid", "--target-dir"])
        .arg(&target_dir);
    if testing {
        cmd.args(["--features", "testing"]);
    }
    crate::process::run(&mut cmd)?;
    // Keep each flavour under its own name: the next build overwrites cargo's output.
    let built = target_dir.join("release/astrid");
    let kept = target_dir.join(if testing { "astrid-testing" } else { "astrid-plain" });
    // Copy, then rename over the kept binary: a process still running the old one (a
    // test, another run sharing the cache) keeps its file, and nobody sees a half copy.
    let fresh = target_dir.join(format!(".{}-{}", kept.file_name().and_then(|n| n.to_str()).unwrap_or("astrid"), std::process::id()));
    std::fs::copy(&built, &fresh).with_context(|| format!("copying {}", built.display()))?;
    std::fs::rename(&fresh, &kept).with_context(|| format!("replacing {}", kept.display()))?;
    Ok(kept)
}
