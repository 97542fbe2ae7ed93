//! Build script of the image's application:
//! 1. stages the frozen Astrid WIT packages from the registry crate `astrid-sys` =0.7.2
//!    (a build-dependency, so cargo fetches it) into `wit/deps/`, where `bindgen!` reads
//!    them next to the world this image provides — the packages are never retyped;
//! 2. links the Hermit kernel (libhermit.a, built by xtask) when the target is Hermit.

// Cargo reads a build script's directives from its stdout; the console rule of
// `kernel/clippy.toml` is about the image.
#![allow(clippy::disallowed_macros)]

use std::fs;
use std::path::{Path, PathBuf};

const ASTRID_SYS: &str = "astrid-sys-0.7.2";

fn main() {
    stage_frozen_wit();
    link_hermit();
}

fn stage_frozen_wit() {
    println!("cargo:rerun-if-env-changed=ASTRID_SYS_WIT_DIR");
    let deps = find_astrid_sys_wit();
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let staged = manifest.join("../wit/deps");
    for entry in fs::read_dir(&deps).unwrap_or_else(|e| panic!("reading {}: {e}", deps.display())) {
        let entry = entry.unwrap();
        let name = entry.file_name();
        // Only the frozen packages; our own (astrid-unikernel-*) are committed beside them.
        if !name.to_string_lossy().starts_with("astrid-") || !entry.path().is_dir() {
            continue;
        }
        let to = staged.join(&name);
        // The staged copy is ignored by git: a fresh checkout (or a worktree sharing a
        // warm target) lacks it, and a missing path makes cargo run this script again.
        println!("cargo:rerun-if-changed={}", to.display());
        fs::create_dir_all(&to).unwrap();
        for file in fs::read_dir(entry.path()).unwrap() {
            let file = file.unwrap().path();
            let target = to.join(file.file_name().unwrap());
            let bytes = fs::read(&file).unwrap();
            if fs::read(&target).ok().as_deref() != Some(&bytes[..]) {
                fs::write(&target, bytes).unwrap();
            }
        }
    }
    println!("cargo:rerun-if-changed={}", deps.display());
}

/// `wit-staging/deps` of astrid-sys 0.7.2 in cargo's registry cache (or where
/// `ASTRID_SYS_WIT_DIR` says, e.g. for vendored sources).
fn find_astrid_sys_wit() -> PathBuf {
    if let Ok(dir) = std::env::var("ASTRID_SYS_WIT_DIR") {
        return PathBuf::from(dir);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("neither CARGO_HOME nor HOME is set");
    let registry = cargo_home.join("registry/src");
    let found = fs::read_dir(&registry).ok().into_iter().flatten().flatten().find_map(|index| {
        let dir = index.path().join(ASTRID_SYS).join("wit-staging/deps");
        dir.is_dir().then_some(dir)
    });
    found.unwrap_or_else(|| {
        panic!(
            "{ASTRID_SYS} is not unpacked under {}: it is a build-dependency, so cargo \
             should have fetched it; with vendored sources set ASTRID_SYS_WIT_DIR to its \
             wit-staging/deps directory",
            registry.display()
        )
    })
}

fn link_hermit() {
    println!("cargo:rerun-if-env-changed=HERMIT_LIB_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("hermit") {
        return;
    }
    let dir = std::env::var("HERMIT_LIB_DIR").unwrap_or_else(|_| {
        panic!(
            "HERMIT_LIB_DIR is not set: build the image through `scripts/run` or \
             `cargo xtask build`, which build libhermit.a first and point this at it"
        )
    });
    let lib = Path::new(&dir).join("libhermit.a");
    if !lib.is_file() {
        panic!("{} does not exist: run `cargo xtask build` to build the kernel", lib.display());
    }
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib=static=hermit");
}
