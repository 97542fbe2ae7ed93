//! xtask: everything that builds, runs, tests and measures astrid.img, in Rust rather
//! than shell. `scripts/` holds the thin entry points that call into it.

pub mod artifacts;
pub mod audit_cmd;
pub mod bench;
pub mod bench_engine;
pub mod bench_net;
pub mod bench_quota;
pub mod capsule;
pub mod compile;
pub mod fuzz;
pub mod grub;
pub mod hermit_app;
pub mod kernel;
pub mod loader;
pub mod pack;
pub mod paths;
pub mod prepare;
pub mod process;
pub mod qemu;
pub mod setup;
pub mod toolchain;
pub mod uhyve;

/// One progress line for a long step, so a user always sees what is happening.
pub fn step(what: impl std::fmt::Display) {
    eprintln!("==> {what}");
}
