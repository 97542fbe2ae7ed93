//! Shared by the integration tests: the built artifacts (built once per test binary)
//! and small helpers for scratch files.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use xtask::artifacts::{self, Artifacts};
use xtask::paths::Paths;

pub fn artifacts() -> &'static Artifacts {
    static ART: OnceLock<Artifacts> = OnceLock::new();
    ART.get_or_init(|| artifacts::ensure(&Paths::discover()).expect("building the images failed"))
}

/// A scratch directory unique to this test process.
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("astrid-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
