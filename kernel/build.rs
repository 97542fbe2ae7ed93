//! Links the Hermit kernel (libhermit.a, built and post-processed by xtask) into the
//! application when it is built for `target_os = "hermit"`; hosted builds link nothing.

fn main() {
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
    let lib = std::path::Path::new(&dir).join("libhermit.a");
    if !lib.is_file() {
        panic!("{} does not exist: run `cargo xtask build` to build the kernel", lib.display());
    }
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib=static=hermit");
}
