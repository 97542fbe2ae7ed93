//! Links the bare-metal loader with boot/link.ld (fixed address, one loadable segment) so
//! QEMU and GRUB can load the ELF through the multiboot header's address fields.

fn main() {
    println!("cargo:rerun-if-changed=link.ld");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/link.ld");
        // Nothing relocates the loader at run time: a PIE's dynamic relocations would stay
        // unapplied, so resolve everything at link time.
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}
