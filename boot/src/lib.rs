//! Pure logic of astrid-boot, the multiboot (v1 and v2) loader for Hermit applications.
//! Everything here works on plain data (byte slices, address ranges) so the host can
//! unit-test it; `main.rs` only reads physical memory, talks to I/O ports and jumps.
#![cfg_attr(not(test), no_std)]
// Tests compare against lists of address ranges, which this lint mistakes for `Vec` misuse.
#![cfg_attr(test, allow(clippy::single_range_in_vec_init))]

extern crate alloc;

pub mod cmdline;
pub mod elf;
pub mod error;
pub mod fdt;
pub mod memory;
pub mod multiboot;
pub mod multiboot2;
pub mod paging;

pub use error::{BootError, FailureCode};

/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// Size of a large (2 MiB) page, the only page size the kernel accepts at entry.
pub const LARGE_PAGE: u64 = 2 * MIB;
/// Size of a base page, the granularity of the kernel's physical memory allocator.
pub const BASE_PAGE: u64 = 4096;

/// Rounds `value` up to a multiple of `align` (a power of two); `None` on overflow.
pub const fn align_up(value: u64, align: u64) -> Option<u64> {
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Rounds `value` down to a multiple of `align` (a power of two).
pub const fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}

/// The fuzz targets' seeds that the loader's test fixtures make (`fuzz/seeds/`).
#[cfg(test)]
pub(crate) mod fuzz_seed {
    use std::path::PathBuf;

    /// Checks that the committed seed `fuzz/seeds/<name>` holds `bytes`; with
    /// `ASTRID_WRITE_SEEDS=1` in the environment, writes it instead.
    pub fn check(name: &str, bytes: &[u8]) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(name);
        if std::env::var_os("ASTRID_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
            return;
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == bytes,
            "{} is not what the test fixture makes: rewrite it with \
             `ASTRID_WRITE_SEEDS=1 cargo +1.95.0 test --lib --target x86_64-unknown-linux-gnu` in boot/",
            path.display()
        );
    }
}
