//! astrid.img's application: it finds the capsule the boot path handed over, checks it,
//! and (from the engine issue on) runs it. The same code builds as a Linux process
//! ("hosted mode") for fast tests and side-by-side benchmarks; everything that differs
//! between the two lives behind `platform`.

pub mod audit;
pub mod capsule;
pub mod exit;
pub mod launch;
pub mod platform;
pub mod wait;
pub mod wasm;
