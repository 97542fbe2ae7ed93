//! astrid.img's application: it finds the capsule the boot path handed over, checks it,
//! and (from the engine issue on) runs it. The same code builds as a Linux process
//! ("hosted mode") for fast tests and side-by-side benchmarks; everything that differs
//! between the two lives behind `platform`.

#[macro_use]
pub mod audit;
pub mod bench;
pub mod capsule;
#[cfg(feature = "engine")]
pub mod engine;
#[cfg(feature = "engine")]
pub mod host;
// The engine's providers (no wasmtime in them) also build for the fuzz targets
// (`--cfg fuzzing`, `xtask fuzz`), which fuzz their parsers without the engine.
#[cfg(any(feature = "engine", fuzzing))]
pub mod ipc;
pub mod sources;
pub mod exit;
#[cfg(any(feature = "engine", fuzzing))]
pub mod kv;
pub mod launch;
pub mod manifest;
#[cfg(any(feature = "engine", fuzzing))]
pub mod net;
pub mod platform;
pub mod quota;
pub mod settings;
pub mod sys;
pub mod wait;
pub mod wasm;

/// The engine's exact wasmtime, for host tools that must agree with the image.
#[cfg(feature = "engine")]
pub use wasmtime;
