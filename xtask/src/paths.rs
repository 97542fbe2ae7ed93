//! Where the repository and the build outputs are. Outputs go to `target/astrid`, or to
//! `$ASTRID_CACHE_DIR` when set, so CI and repeated runs can reuse a persistent cache.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Paths {
    /// The repository root.
    pub root: PathBuf,
    /// The build-output directory.
    pub out: PathBuf,
}

impl Paths {
    pub fn discover() -> Paths {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let out = match std::env::var_os(astrid_kernel::settings::CACHE_DIR) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => root.join("target").join("astrid"),
        };
        Paths { root, out }
    }

    pub fn astrid_img(&self) -> PathBuf {
        self.out.join("astrid.img")
    }
    /// The production image with Cranelift: for `--jit` and plain `.wasm` boots.
    pub fn astrid_jit_img(&self) -> PathBuf {
        self.out.join("astrid-jit.img")
    }
    pub fn astrid_testing_img(&self) -> PathBuf {
        self.out.join("astrid-testing.img")
    }
    pub fn astrid_softfloat_img(&self) -> PathBuf {
        self.out.join("astrid-softfloat.img")
    }
    pub fn hello_img(&self) -> PathBuf {
        self.out.join("hello.img")
    }
    pub fn loader(&self) -> PathBuf {
        self.out.join("astrid-boot.bin")
    }
    pub fn example_capsule(&self) -> PathBuf {
        self.out.join("capsules").join("hello.wasm")
    }
    pub fn tools(&self) -> PathBuf {
        self.out.join("tools")
    }
}
