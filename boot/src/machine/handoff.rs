//! The hand-off to the kernel: final page tables on the loader heap, a check that everything
//! the kernel touches first is mapped, and the jump with the entry contract of kernel 0.11.

use alloc::alloc::{Layout, alloc_zeroed};
use alloc::vec::Vec;
use core::arch::asm;
use core::ops::Range;

use astrid_boot::paging::{self, ENTRIES, TableAlloc};
use astrid_boot::{BootError, FailureCode, LARGE_PAGE, MIB, align_down};

/// Table pages from the loader heap, which lies in the loader's bss above 2 MiB: mapped,
/// writable, and below the app, so the kernel never hands it out.
#[derive(Default)]
pub struct HeapTables {
    pub pages: Vec<u64>,
}

impl TableAlloc for HeapTables {
    fn alloc_table(&mut self) -> Option<u64> {
        let layout = Layout::from_size_align(4096, 4096).ok()?;
        // SAFETY: the layout is non-zero; the page is never freed (the kernel keeps using it).
        let page = unsafe { alloc_zeroed(layout) };
        if page.is_null() {
            return None;
        }
        self.pages.push(page as u64);
        Some(page as u64)
    }

    fn table(&mut self, addr: u64) -> &mut [u64; ENTRIES] {
        // SAFETY: `addr` came from `alloc_table`: a live, aligned, zero-initialised page that
        // only this builder touches.
        unsafe { &mut *(addr as *mut [u64; ENTRIES]) }
    }
}

/// Builds the final identity map of `frames` and checks that every range in `must_map` (and
/// every table page) is mapped and that [0, 1 MiB) is not; returns the PML4 address.
pub fn build_page_tables(frames: &[Range<u64>], must_map: &[Range<u64>]) -> Result<u64, BootError> {
    let mut tables = HeapTables::default();
    let internal = |what: &str| {
        BootError::new(
            FailureCode::Other,
            alloc::format!("final page tables: {what}"),
            "this is a loader bug; please report it with this line",
        )
    };
    let pml4 =
        paging::build(frames, &mut tables).ok_or_else(|| internal("loader heap exhausted"))?;
    let pages: Vec<Range<u64>> = tables.pages.iter().map(|&p| p..p + 4096).collect();
    for range in must_map.iter().chain(&pages).filter(|r| !r.is_empty()) {
        let mut addr = align_down(range.start, LARGE_PAGE);
        while addr < range.end {
            if paging::translate(&mut tables, pml4, addr) != Some(addr) {
                return Err(internal(&alloc::format!("{addr:#x} would be unmapped")));
            }
            addr += LARGE_PAGE;
        }
    }
    let mut addr = 0;
    while addr < MIB {
        if paging::translate(&mut tables, pml4, addr).is_some() {
            return Err(internal("low memory would be mapped"));
        }
        addr += 4096;
    }
    if pml4 >= 1 << 32 {
        return Err(internal("PML4 above 4 GiB"));
    }
    Ok(pml4)
}

/// The state the kernel is entered with.
pub struct Entry {
    pub pml4: u64,
    pub entry_point: u64,
    pub boot_info: u64,
    /// Lowest address of the 32 KiB boot stack (the kernel adds the size itself).
    pub stack_low: u64,
}

/// Switches to the final page tables and jumps: CR0 = PE|ET|NE|PG, CR4 = PAE,
/// EFER = LME|LMA|NXE (set at entry), interrupts off, GDT 0x08 code / 0x10 data (set at
/// entry), rdi = &RawBootInfo, rsi = 0 (CPU 0), rsp = stack_low.
pub fn enter(entry: &Entry) -> ! {
    // SAFETY: `build_page_tables` checked that this code, the stack, the boot info and the app
    // stay mapped under the new tables; the kernel never returns.
    unsafe {
        asm!(
            "cli",
            "mov cr4, {cr4}",
            "mov cr3, {pml4}",
            "mov cr0, {cr0}",
            "mov rsp, {stack}",
            "xor ebp, ebp",
            "jmp {entry}",
            cr4 = in(reg) 1u64 << 5,
            cr0 = in(reg) 0x8000_0031u64,
            pml4 = in(reg) entry.pml4,
            stack = in(reg) entry.stack_low,
            entry = in(reg) entry.entry_point,
            in("rdi") entry.boot_info,
            in("rsi") 0u64,
            options(noreturn),
        )
    }
}
