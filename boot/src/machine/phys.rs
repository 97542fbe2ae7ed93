//! Physical memory as the loader sees it: the boot code identity-maps [0, 4 GiB), which holds
//! everything multiboot v1 can describe (its addresses are 32-bit).

use astrid_boot::memory::LOAD_LIMIT;
use astrid_boot::multiboot::PhysMem;

/// The identity-mapped first 4 GiB.
pub struct LowMemory;

impl PhysMem for LowMemory {
    fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let end = addr.checked_add(len)?;
        // Address 0 is a null pointer to Rust; nothing the loader reads lives there.
        if addr == 0 || end > LOAD_LIMIT {
            return None;
        }
        // SAFETY: [addr, end) is identity-mapped by the boot page tables; it is plain RAM or
        // firmware memory that reading does not disturb, and nothing writes it while borrowed.
        Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
    }
}
