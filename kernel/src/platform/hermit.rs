//! Hermit (unikernel) side of the platform seam. The application runs in ring 0 with
//! the loader's identity map still in place, so physical addresses of boot modules are
//! directly readable, and it may write an I/O port itself.

/// A boot module left in memory by the loader. The loader placed it below the kernel
/// image, where the kernel never allocates, and identity-mapped it.
pub fn boot_module(addr: u64, len: u64) -> Option<&'static [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    // SAFETY: the loader announced [addr, addr+len) as module data it left untouched
    // below the kernel image; the kernel only hands out memory above its own image and
    // keeps the loader's identity mapping of RAM.
    Some(unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len as usize) })
}

/// Under QEMU the run command passes `env=ASTRID_DEBUG_EXIT=0xf4`: write the status to
/// the isa-debug-exit port so QEMU's own exit status carries it (see `exit`). Without
/// that variable (uhyve, bare metal) the kernel's normal exit path reports the status.
pub fn report_exit(status: u8) {
    let Some(port) = std::env::var("ASTRID_DEBUG_EXIT")
        .ok()
        .and_then(|p| u16::from_str_radix(p.trim_start_matches("0x"), 16).ok())
    else {
        return;
    };
    let value = crate::exit::debug_exit_value(status);
    // SAFETY: Hermit applications run in ring 0; the port was named by the host that
    // attached the isa-debug-exit device, and writing it ends the virtual machine.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") value) };
}
