//! The one `wasmtime::Config` of this project. The image and the host-side precompiler
//! (xtask's capsule preparation) both call `engine_config`, so an artifact compiled on
//! the host is accepted in the image: every setting that shapes compiled code is in
//! [`SETTINGS`], which `engine_config` applies and the artifact fingerprint
//! ([`fingerprint`]) describes.

use wasmtime::{Config, OptLevel};

use crate::wasm::artifact::Fingerprint;

/// The reservation of each linear memory, and so the most a capsule's memory can grow
/// to. With a reservation equal to the cap, memories never move.
pub const MEMORY_RESERVATION: u64 = 64 << 20;
/// Wasm stack per capsule call; below the runner thread's stack (`RUNNER_STACK`).
pub const MAX_WASM_STACK: usize = 1 << 20;
/// The stack of the thread a capsule runs on (Hermit's main thread has only 1 MiB): the
/// wasm stack and as much again for the host calls below it. No more: under TCG a
/// thread's creation costs in proportion to its stack (the kernel maps and clears it
/// page by page; 8 MiB cost ~10 ms more at boot).
pub const RUNNER_STACK: usize = 2 << 20;
/// The wasmtime this crate is built with (Cargo.toml pins it with `=`; a test checks
/// Cargo.lock agrees). Part of the artifact fingerprint.
pub const WASMTIME_VERSION: &str = "50.0.1";

/// Where compiled code will run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeTarget {
    /// The machine this process runs on (the image itself, or hosted mode).
    Native,
    /// astrid.img, compiled ahead of time on another machine.
    HermitImage,
}

impl CodeTarget {
    /// The target as the fingerprint names it: the image's triple for the image (also
    /// from inside it), else this machine's architecture and OS.
    pub fn name(self) -> String {
        match self {
            CodeTarget::HermitImage => HERMIT_TRIPLE.into(),
            CodeTarget::Native if cfg!(target_os = "hermit") => HERMIT_TRIPLE.into(),
            CodeTarget::Native => format!("{}-{} (native)", std::env::consts::ARCH, std::env::consts::OS),
        }
    }
}

/// The target triple of astrid.img's code.
pub const HERMIT_TRIPLE: &str = "x86_64-unknown-hermit";

/// Every engine setting that shapes compiled code or its runtime contract.
#[derive(Debug)]
pub struct EngineSettings {
    pub component_model: bool,
    pub opt_level: OptLevel,
    /// Hermit gives an application no fault handler: every bounds check and trap is
    /// explicit code instead of a signal.
    pub signals_based_traps: bool,
    pub memory_guard_size: u64,
    pub guard_before_linear_memory: bool,
    pub memory_reservation: u64,
    pub memory_reservation_for_growth: u64,
    pub memory_may_move: bool,
    pub memory_init_cow: bool,
    pub max_wasm_stack: usize,
    /// Never on by accident (a cargo feature elsewhere would turn it on and make the
    /// image refuse host-compiled artifacts).
    pub concurrency_support: bool,
    /// A capsule spinning in pure compute is interrupted through epochs.
    pub epoch_interruption: bool,
}

/// The project's engine settings.
pub const SETTINGS: EngineSettings = EngineSettings {
    component_model: true,
    opt_level: OptLevel::Speed,
    signals_based_traps: false,
    memory_guard_size: 0,
    guard_before_linear_memory: false,
    memory_reservation: MEMORY_RESERVATION,
    memory_reservation_for_growth: 0,
    memory_may_move: false,
    memory_init_cow: false,
    max_wasm_stack: MAX_WASM_STACK,
    concurrency_support: false,
    epoch_interruption: true,
};

pub fn engine_config(target: CodeTarget) -> wasmtime::Result<Config> {
    let s = &SETTINGS;
    let mut config = Config::new();
    if target == CodeTarget::HermitImage {
        config.target(HERMIT_TRIPLE)?;
    }
    // Without a compiler in this build (an image without `jit`) the opt level shapes
    // nothing here; it stays in the fingerprint, which the host's compiler matches.
    #[cfg(feature = "jit")]
    config.cranelift_opt_level(s.opt_level);
    config
        .wasm_component_model(s.component_model)
        .signals_based_traps(s.signals_based_traps)
        .memory_guard_size(s.memory_guard_size)
        .guard_before_linear_memory(s.guard_before_linear_memory)
        .memory_reservation(s.memory_reservation)
        .memory_reservation_for_growth(s.memory_reservation_for_growth)
        .memory_may_move(s.memory_may_move)
        .memory_init_cow(s.memory_init_cow)
        .max_wasm_stack(s.max_wasm_stack)
        .concurrency_support(s.concurrency_support)
        .epoch_interruption(s.epoch_interruption);
    Ok(config)
}

/// The canonical text of the engine that runs code for `target`: what the artifact
/// fingerprint hashes. The image's build id is deliberately not in it: compiled code
/// depends on wasmtime, the target and these settings only, so an artifact stays valid
/// across image rebuilds that change none of them (the key binds it to the deployment).
pub fn engine_description(target: CodeTarget) -> String {
    format!("wasmtime {WASMTIME_VERSION}\ntarget {}\n{SETTINGS:#?}\n", target.name())
}

/// The fingerprint artifacts for `target` are sealed with (and checked against, in the
/// image: `CodeTarget::Native` there is the image's own target).
pub fn fingerprint(target: CodeTarget) -> Fingerprint {
    Fingerprint::of(&engine_description(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprinted_wasmtime_version_is_the_one_built() {
        let lock = include_str!("../../../Cargo.lock");
        let entry = format!("name = \"wasmtime\"\nversion = \"{WASMTIME_VERSION}\"\n");
        assert!(lock.contains(&entry), "Cargo.lock's wasmtime is not {WASMTIME_VERSION}: update WASMTIME_VERSION");
        let manifest = include_str!("../../Cargo.toml");
        assert!(manifest.contains(&format!("version = \"={WASMTIME_VERSION}\"")), "kernel/Cargo.toml pins another wasmtime");
    }

    #[test]
    fn the_fingerprint_names_version_target_and_settings() {
        let text = engine_description(CodeTarget::HermitImage);
        for needle in ["wasmtime 50.0.1", "target x86_64-unknown-hermit", "memory_reservation: 67108864", "opt_level: Speed", "epoch_interruption: true"] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert_ne!(fingerprint(CodeTarget::HermitImage), fingerprint(CodeTarget::Native), "hosted artifacts must not pass in the image");
        assert_eq!(fingerprint(CodeTarget::HermitImage), fingerprint(CodeTarget::HermitImage));
    }
}
