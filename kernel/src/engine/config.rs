//! The one `wasmtime::Config` of this project. The image and the host-side precompiler
//! (`xtask compile`) both call `engine_config`, so an artifact compiled on the host is
//! accepted in the image: every setting that shapes compiled code is here.

use wasmtime::{Config, OptLevel};

/// The reservation of each linear memory, and so the most a capsule's memory can grow
/// to. With a reservation equal to the cap, memories never move.
pub const MEMORY_RESERVATION: u64 = 64 << 20;
/// Wasm stack per capsule call; below the runner thread's stack (`RUNNER_STACK`).
pub const MAX_WASM_STACK: usize = 1 << 20;
/// The stack of the thread a capsule runs on (Hermit's main thread has only 1 MiB).
pub const RUNNER_STACK: usize = 8 << 20;

/// Where compiled code will run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeTarget {
    /// The machine this process runs on (the image itself, or hosted mode).
    Native,
    /// astrid.img, compiled ahead of time on another machine.
    HermitImage,
}

/// The target triple of astrid.img's code.
pub const HERMIT_TRIPLE: &str = "x86_64-unknown-hermit";

pub fn engine_config(target: CodeTarget) -> wasmtime::Result<Config> {
    let mut config = Config::new();
    if target == CodeTarget::HermitImage {
        config.target(HERMIT_TRIPLE)?;
    }
    config
        .wasm_component_model(true)
        .cranelift_opt_level(OptLevel::Speed)
        // Hermit gives an application no fault handler: every bounds check and trap is
        // explicit code instead of a signal.
        .signals_based_traps(false)
        .memory_guard_size(0)
        .guard_before_linear_memory(false)
        .memory_reservation(MEMORY_RESERVATION)
        .memory_reservation_for_growth(0)
        .memory_may_move(false)
        .memory_init_cow(false)
        .max_wasm_stack(MAX_WASM_STACK)
        // Never on by accident (a cargo feature elsewhere would turn it on and make the
        // image refuse host-compiled artifacts).
        .concurrency_support(false)
        // A capsule spinning in pure compute is interrupted through epochs.
        .epoch_interruption(true);
    Ok(config)
}
