//! `xtask compile`: precompiles a capsule on the host for astrid.img, with the same
//! pinned wasmtime and the same `engine_config` the image uses, so the image only
//! deserializes it (no compiler work in the guest).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use astrid_kernel::engine::{CodeTarget, engine_config};

/// Writes the precompiled artifact of `input` to `output` (default: `.cwasm` beside it).
pub fn compile(input: &Path, output: Option<&Path>, target: CodeTarget) -> Result<PathBuf> {
    let bytes = std::fs::read(input).with_context(|| format!("reading capsule {}", input.display()))?;
    let header = astrid_kernel::wasm::inspect(&bytes)
        .map_err(|e| anyhow::anyhow!("capsule {}: {e}", input.display()))?;
    let config = engine_config(target).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let engine = astrid_kernel::wasmtime::Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let started = Instant::now();
    let artifact = match header.kind {
        astrid_kernel::wasm::WasmKind::Component => engine.precompile_component(&bytes),
        astrid_kernel::wasm::WasmKind::CoreModule => engine.precompile_module(&bytes),
    }
    .map_err(|e| anyhow::anyhow!("capsule {} does not compile: {e:#}", input.display()))?;
    let output = output.map(Path::to_path_buf).unwrap_or_else(|| input.with_extension("cwasm"));
    if output == input {
        bail!("the output would overwrite the input {}: pass -o", input.display());
    }
    std::fs::write(&output, &artifact).with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "==> compiled {} ({} bytes) to {} ({} bytes) in {} ms",
        input.display(),
        bytes.len(),
        output.display(),
        artifact.len(),
        started.elapsed().as_millis()
    );
    Ok(output)
}
