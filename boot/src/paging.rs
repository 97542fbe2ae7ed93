//! The identity map the kernel starts on: RAM from 2 MiB upwards in 2 MiB pages only.
//! Kernel 0.11 panics on 1 GiB pages and maps [0, 1 MiB) itself, so neither may appear; we
//! leave the whole first 2 MiB unmapped (nothing the kernel needs lives there).

use alloc::vec::Vec;
use core::ops::Range;

use crate::{LARGE_PAGE, align_down, align_up};

/// Present bit of a page-table entry.
pub const PRESENT: u64 = 1 << 0;
/// Writable bit: the kernel edits its page tables in place, so everything is writable.
pub const WRITABLE: u64 = 1 << 1;
/// Page-size bit: in a page directory entry it makes a 2 MiB page.
pub const HUGE: u64 = 1 << 7;
/// Physical address bits of an entry.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Entries per table.
pub const ENTRIES: usize = 512;
/// RAM above this is left for the kernel to map itself (it identity-maps every `/memory`
/// range it adds); the cap bounds the loader's page-table memory (one 4 KiB table per GiB).
pub const MAP_LIMIT: u64 = 64 << 30;

/// The 2 MiB frames to identity-map: every frame that overlaps `ram`, from 2 MiB up to
/// [`MAP_LIMIT`], as sorted, merged, 2 MiB-aligned ranges.
pub fn identity_frames(ram: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut frames: Vec<Range<u64>> = ram
        .iter()
        .filter_map(|r| {
            let start = align_down(r.start.max(LARGE_PAGE), LARGE_PAGE);
            let end = align_up(r.end.min(MAP_LIMIT), LARGE_PAGE)?;
            (start < end).then_some(start..end)
        })
        .collect();
    frames.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(frames.len());
    for f in frames {
        match merged.last_mut() {
            Some(last) if f.start <= last.end => last.end = last.end.max(f.end),
            _ => merged.push(f),
        }
    }
    merged
}

/// Where page-table pages come from.
pub trait TableAlloc {
    /// A zeroed, 4 KiB-aligned table page; returns its physical address.
    fn alloc_table(&mut self) -> Option<u64>;
    /// The table at physical `addr`, as returned by [`TableAlloc::alloc_table`].
    fn table(&mut self, addr: u64) -> &mut [u64; ENTRIES];
}

/// Builds a 4-level identity map of `frames` (2 MiB aligned); returns the PML4's address, or
/// `None` when the allocator runs out.
pub fn build(frames: &[Range<u64>], alloc: &mut impl TableAlloc) -> Option<u64> {
    let pml4 = alloc.alloc_table()?;
    for range in frames {
        let mut addr = range.start;
        while addr < range.end {
            let pdpt = next_level(alloc, pml4, index(addr, 39))?;
            let pd = next_level(alloc, pdpt, index(addr, 30))?;
            alloc.table(pd)[index(addr, 21)] = addr | PRESENT | WRITABLE | HUGE;
            addr += LARGE_PAGE;
        }
    }
    Some(pml4)
}

fn index(addr: u64, shift: u32) -> usize {
    ((addr >> shift) & (ENTRIES as u64 - 1)) as usize
}

/// The table that entry `i` of `table` points to, created on first use.
fn next_level(alloc: &mut impl TableAlloc, table: u64, i: usize) -> Option<u64> {
    let entry = alloc.table(table)[i];
    if entry & PRESENT != 0 {
        return Some(entry & ADDR_MASK);
    }
    let next = alloc.alloc_table()?;
    alloc.table(table)[i] = next | PRESENT | WRITABLE;
    Some(next)
}

/// Walks the map: the physical address `addr` translates to, if it is mapped writable.
pub fn translate(alloc: &mut impl TableAlloc, pml4: u64, addr: u64) -> Option<u64> {
    let mut table = pml4;
    for shift in [39, 30] {
        let entry = alloc.table(table)[index(addr, shift)];
        if entry & (PRESENT | WRITABLE) != PRESENT | WRITABLE || entry & HUGE != 0 {
            // A huge entry here would be a 1 GiB page (or worse), which we never create.
            return None;
        }
        table = entry & ADDR_MASK;
    }
    let entry = alloc.table(table)[index(addr, 21)];
    (entry & (PRESENT | WRITABLE | HUGE) == PRESENT | WRITABLE | HUGE)
        .then(|| (entry & ADDR_MASK & !(LARGE_PAGE - 1)) + (addr & (LARGE_PAGE - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;

    /// Tables in host memory at made-up "physical" addresses.
    struct HostTables {
        base: u64,
        tables: Vec<Box<[u64; ENTRIES]>>,
        limit: usize,
    }

    impl HostTables {
        fn new(limit: usize) -> Self {
            Self {
                base: 0x30_0000,
                tables: Vec::new(),
                limit,
            }
        }
    }

    impl TableAlloc for HostTables {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.tables.len() == self.limit {
                return None;
            }
            self.tables.push(Box::new([0; ENTRIES]));
            Some(self.base + 4096 * (self.tables.len() as u64 - 1))
        }
        fn table(&mut self, addr: u64) -> &mut [u64; ENTRIES] {
            &mut self.tables[((addr - self.base) / 4096) as usize]
        }
    }

    #[test]
    fn frames_cover_ram_from_2mib_in_2mib_steps() {
        let ram = [
            0x10_0000..0x1ffe_0000,
            0x1_0000_0000..0x1_4000_0000,
            0x1_4000_0000..0x1_4010_0000,
        ];
        assert_eq!(
            identity_frames(&ram),
            [0x20_0000..0x2000_0000, 0x1_0000_0000..0x1_4020_0000]
        );
        assert_eq!(identity_frames(&[0x10_0000..0x1f_0000]), []);
        assert_eq!(
            identity_frames(&[0xf_0000_0000..0x20_0000_0000]),
            [0xf_0000_0000..MAP_LIMIT]
        );
    }

    #[test]
    fn identity_map_has_only_2mib_pages_and_no_low_memory() {
        let frames = identity_frames(&[0x10_0000..0x1ffe_0000, 0x1_0000_0000..0x1_4000_0000]);
        let mut t = HostTables::new(64);
        let pml4 = build(&frames, &mut t).unwrap();
        assert_eq!(pml4, 0x30_0000);
        for addr in [0, 0x8000, 0xf_ffff, 0x1f_ffff] {
            assert_eq!(translate(&mut t, pml4, addr), None, "{addr:#x}");
        }
        for addr in [
            0x20_0000,
            0x1234_5678,
            0x1fff_ffff,
            0x1_0000_0000,
            0x1_3fff_ffff,
        ] {
            assert_eq!(translate(&mut t, pml4, addr), Some(addr), "{addr:#x}");
        }
        assert_eq!(translate(&mut t, pml4, 0x2000_0000), None);
        assert_eq!(translate(&mut t, pml4, 0x1_4000_0000), None);
        // PML4 + one PDPT + PDs for GiB 0 and GiB 4.
        assert_eq!(t.tables.len(), 4);
        // Upper levels are plain writable pointers; no 1 GiB pages.
        for table in &t.tables[..2] {
            assert!(
                table
                    .iter()
                    .all(|&e| e == 0 || e & 0xfff == PRESENT | WRITABLE)
            );
        }
    }

    #[test]
    fn running_out_of_tables_is_reported() {
        let frames = identity_frames(&[0x10_0000..0x1_0000_0000]);
        let mut t = HostTables::new(3);
        assert_eq!(build(&frames, &mut t), None);
    }
}
