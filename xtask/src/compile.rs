//! Precompiling capsules on the host for astrid.img, with the same pinned wasmtime and
//! the same `engine_config` the image uses, so the image only deserializes them (no
//! compiler work in the guest). Every artifact leaves here sealed with the deployment's
//! artifact key (`astrid_kernel::wasm::artifact`): the image loads no other.
//! `prepare::prepare_capsule` is what the run command uses (with its cache);
//! `xtask compile` writes one artifact where you say.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use astrid_kernel::engine::{CodeTarget, engine_config, fingerprint};
use astrid_kernel::settings::ArtifactKey;
use astrid_kernel::wasm::{self, WasmKind, artifact};

/// A capsule the engine cannot compile (its wasm is invalid): the run command's 65.
#[derive(Debug)]
pub struct Uncompilable {
    pub capsule: PathBuf,
    pub why: String,
}

impl std::fmt::Display for Uncompilable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "capsule {} does not compile: {} — fix the capsule's wasm (or run it with --jit to see the image's own verdict)", self.capsule.display(), self.why)
    }
}

impl std::error::Error for Uncompilable {}

/// wasmtime's artifact of the wasm binary `bytes` (`capsule` names it in errors) for
/// `target`: unsealed, for [`seal`].
pub fn precompile(capsule: &Path, bytes: &[u8], target: CodeTarget) -> Result<Vec<u8>> {
    let header = wasm::inspect(bytes).map_err(|e| Uncompilable { capsule: capsule.to_path_buf(), why: e.to_string() })?;
    let config = engine_config(target).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let engine = astrid_kernel::wasmtime::Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    match header.kind {
        WasmKind::Component => engine.precompile_component(bytes),
        WasmKind::CoreModule => engine.precompile_module(bytes),
    }
    .map_err(|e| Uncompilable { capsule: capsule.to_path_buf(), why: format!("{e:#}") }.into())
}

/// `payload` sealed for the engine of `target` with `key`.
pub fn seal(payload: &[u8], target: CodeTarget, key: &ArtifactKey) -> Vec<u8> {
    artifact::seal(payload, &fingerprint(target), &key.0)
}

/// `xtask compile`: writes the sealed artifact of `input` to `output` (default: `.cwasm`
/// beside it).
pub fn compile(input: &Path, output: Option<&Path>, target: CodeTarget, key: &ArtifactKey) -> Result<PathBuf> {
    let bytes = std::fs::read(input).with_context(|| format!("reading capsule {}", input.display()))?;
    let output = output.map(Path::to_path_buf).unwrap_or_else(|| input.with_extension("cwasm"));
    if output == input {
        bail!("the output would overwrite the input {}: pass -o", input.display());
    }
    let started = Instant::now();
    let sealed = seal(&precompile(input, &bytes, target)?, target, key);
    std::fs::write(&output, &sealed).with_context(|| format!("writing {}", output.display()))?;
    report(input, bytes.len(), &output, sealed.len(), started);
    Ok(output)
}

/// The line every compile prints.
pub fn report(input: &Path, in_len: usize, output: &Path, out_len: usize, started: Instant) {
    eprintln!(
        "==> compiled {} ({in_len} bytes) to {} ({out_len} bytes, sealed) in {} ms",
        input.display(),
        output.display(),
        started.elapsed().as_millis()
    );
}
