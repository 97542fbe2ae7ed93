//! Physical memory decisions: which RAM the kernel gets, where the app goes, and whether
//! enough is left. The arithmetic mirrors kernel 0.11 (`mm::init`, `physicalmem`) so that a
//! boot the loader accepts does not end in the kernel's "Not enough memory" panic.

use alloc::format;
use alloc::vec::Vec;
use core::ops::Range;

use crate::multiboot::{MEMORY_AVAILABLE, MemoryMapEntry, Module};
use crate::{BASE_PAGE, BootError, FailureCode, LARGE_PAGE, MIB, align_down, align_up};

/// RAM below this is never handed to the kernel: it maps ACPI areas and its AP trampoline
/// there itself and must find the range unmapped.
pub const LOW_MEMORY_END: u64 = MIB;
/// The loader works under a temporary identity map of the first 4 GiB, so the app must be
/// placed below this.
pub const LOAD_LIMIT: u64 = 4 << 30;
/// RAM that must lie above the placed app (beyond its memory size) for the kernel.
pub const MIN_FREE_RAM: u64 = 32 * MIB;
/// What must remain of that after the kernel's own accounting (it sizes its heap from the
/// rest, and panics when nothing is left).
pub const MIN_KERNEL_HEAP: u64 = 8 * MIB;
/// Kernel 0.11 keeps free physical memory in a `FreeList<16>`; more `/memory` nodes than this
/// risk overflowing it once allocations split ranges.
pub const MAX_MEMORY_NODES: usize = 8;

const FIX_MEMORY: &str = "give the machine more RAM (QEMU: -m 512M) or use smaller modules";

/// Available RAM from the memory map: available entries minus every reserved entry (firmware
/// maps may overlap), sorted and merged.
pub fn available_ram(map: &[MemoryMapEntry]) -> Vec<Range<u64>> {
    let mut ram: Vec<Range<u64>> = map
        .iter()
        .filter(|e| e.kind == MEMORY_AVAILABLE)
        .map(MemoryMapEntry::range)
        .collect();
    for reserved in map.iter().filter(|e| e.kind != MEMORY_AVAILABLE) {
        ram = subtract(&ram, &reserved.range());
    }
    ram.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ram.len());
    for r in ram.into_iter().filter(|r| !r.is_empty()) {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// The RAM the kernel may use: [`available_ram`] from 1 MiB up, shrunk to whole 4 KiB pages
/// (the kernel's free list rejects unaligned ranges).
pub fn usable_ram(map: &[MemoryMapEntry]) -> Vec<Range<u64>> {
    available_ram(map)
        .into_iter()
        .filter_map(|r| {
            let start = align_up(r.start.max(LOW_MEMORY_END), BASE_PAGE)?;
            let end = align_down(r.end, BASE_PAGE);
            (start < end).then_some(start..end)
        })
        .collect()
}

/// `ranges` with `cut` removed.
fn subtract(ranges: &[Range<u64>], cut: &Range<u64>) -> Vec<Range<u64>> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for r in ranges {
        if cut.end <= r.start || cut.start >= r.end || cut.is_empty() {
            out.push(r.clone());
            continue;
        }
        if r.start < cut.start {
            out.push(r.start..cut.start);
        }
        if cut.end < r.end {
            out.push(cut.end..r.end);
        }
    }
    out
}

/// The region of `ram` that contains all of `range`, if any.
pub fn region_containing(ram: &[Range<u64>], range: &Range<u64>) -> Option<Range<u64>> {
    ram.iter()
        .find(|r| r.start <= range.start && range.end <= r.end)
        .cloned()
}

/// Checks that every module lies in RAM the memory map calls available, so the loader never
/// reads from (or announces) memory that is not there.
pub fn check_modules(map: &[MemoryMapEntry], modules: &[Module]) -> Result<(), BootError> {
    // Modules may sit below 1 MiB in theory, so check against the unclipped map.
    let available = available_ram(map);
    for (i, m) in modules.iter().enumerate() {
        if !m.is_empty() && region_containing(&available, &m.range()).is_none() {
            return Err(BootError::new(
                FailureCode::BadMultiboot,
                format!(
                    "module {} ({:#x}..{:#x}) is not inside available RAM",
                    i + 1,
                    m.start,
                    m.end
                ),
                "check the boot loader's memory map and module placement",
            ));
        }
    }
    Ok(())
}

/// The kernel's page tables leave [0, 2 MiB) unmapped, so a capsule module there (GRUB puts
/// modules as low as it can) would be out of the app's reach.
pub const KERNEL_MAPPED_FROM: u64 = LARGE_PAGE;

/// Where each module that starts below [`KERNEL_MAPPED_FROM`] is copied to (`None`: it stays):
/// one after the other, page-aligned, above everything `occupied`, each inside one RAM region
/// below [`LOAD_LIMIT`]. The caller copies the bytes and counts the new ranges as occupied, so
/// the app is then placed above them.
pub fn relocate_low_modules(
    ram: &[Range<u64>],
    occupied: &[Range<u64>],
    modules: &[Range<u64>],
) -> Result<Vec<Option<u64>>, BootError> {
    let mut floor = occupied
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| r.end)
        .max()
        .unwrap_or(0);
    modules
        .iter()
        .map(|m| {
            if m.is_empty() || m.start >= KERNEL_MAPPED_FROM {
                return Ok(None);
            }
            let len = m.end - m.start;
            let fits = |start: u64| {
                let end = start.checked_add(len)?;
                (end <= LOAD_LIMIT && region_containing(ram, &(start..end)).is_some()).then_some(start)
            };
            let start = ram
                .iter()
                .filter_map(|r| align_up(r.start.max(floor).max(KERNEL_MAPPED_FROM), BASE_PAGE))
                .find_map(fits)
                .ok_or_else(|| {
                    BootError::new(
                        FailureCode::TooLittleMemory,
                        format!(
                            "the module at {:#x} ({len} bytes) must move above 2 MiB, and no RAM below 4 GiB above {floor:#x} holds it",
                            m.start
                        ),
                        FIX_MEMORY,
                    )
                })?;
            floor = start + len;
            Ok(Some(start))
        })
        .collect()
}

/// Chooses the load address of the app: the lowest 2 MiB-aligned address above everything in
/// `occupied` where `mem_size` bytes fit inside one RAM region below [`LOAD_LIMIT`].
/// A non-relocatable app (`fixed`) must fit at its link address under the same rules.
pub fn place_app(
    ram: &[Range<u64>],
    occupied: &[Range<u64>],
    mem_size: u64,
    fixed: Option<u64>,
) -> Result<u64, BootError> {
    let floor = occupied
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| r.end)
        .max()
        .unwrap_or(0);
    let floor = align_up(floor, LARGE_PAGE).unwrap_or(u64::MAX);
    let fits = |start: u64| {
        let end = start.checked_add(mem_size)?;
        (end <= LOAD_LIMIT && region_containing(ram, &(start..end)).is_some()).then_some(start)
    };
    if let Some(addr) = fixed {
        if addr < floor || addr % LARGE_PAGE != 0 || fits(addr).is_none() {
            return Err(BootError::new(
                FailureCode::BadApp,
                format!(
                    "the app is linked to the fixed address {addr:#x}, which is not 2 MiB aligned, \
                     not free RAM, or not above the loader's data (ends at {floor:#x})"
                ),
                "link the app as a static PIE (the Hermit default)",
            ));
        }
        return Ok(addr);
    }
    ram.iter()
        .filter_map(|r| align_up(r.start.max(floor), LARGE_PAGE))
        .find_map(fits)
        .ok_or_else(|| {
            BootError::new(
                FailureCode::TooLittleMemory,
                format!(
                    "the app needs {} KiB of contiguous RAM at a 2 MiB boundary above {floor:#x} \
                     and below 4 GiB, and there is none",
                    mem_size.div_ceil(1024)
                ),
                FIX_MEMORY,
            )
        })
}

/// What the kernel will see of memory once it runs, as computed by [`check_memory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryReport {
    /// Bytes of RAM above the app's 2 MiB-aligned end that the kernel adds to its free list.
    pub total_above: u64,
    /// What the kernel subtracts from that before sizing its heap.
    pub kernel_reserve: u64,
    /// What is left for the kernel's heap and stacks.
    pub free: u64,
}

/// The RAM `/memory` nodes to announce: the region holding the app and the largest others,
/// at most [`MAX_MEMORY_NODES`], in address order.
pub fn select_memory_nodes(ram: &[Range<u64>], load: u64) -> Vec<Range<u64>> {
    let mut nodes: Vec<Range<u64>> = ram.to_vec();
    // Largest first, but the app's own region always first of all.
    nodes.sort_by_key(|r| {
        let holds_app = r.start <= load && load < r.end;
        (!holds_app, u64::MAX - (r.end - r.start))
    });
    nodes.truncate(MAX_MEMORY_NODES);
    nodes.sort_by_key(|r| r.start);
    nodes
}

/// Checks that at least [`MIN_FREE_RAM`] of the announced `nodes` (sorted by address) lies
/// above the app loaded at `load` with `mem_size` bytes, and that the kernel keeps
/// [`MIN_KERNEL_HEAP`] of it after its own accounting.
///
/// Kernel 0.11 takes, from each `/memory` node ending above its image, the part above the
/// image (`total_above`), and then requires `image_end - ram_base + page-table reserve` of it
/// before it sizes the heap; anything less panics. A large capsule module below the app makes
/// that second figure grow.
pub fn check_memory(
    nodes: &[Range<u64>],
    load: u64,
    mem_size: u64,
) -> Result<MemoryReport, BootError> {
    let ram_base = nodes.first().map_or(0, |r| r.start);
    let kernel_start = align_down(load, LARGE_PAGE);
    let kernel_end = align_up(load.saturating_add(mem_size), LARGE_PAGE).unwrap_or(u64::MAX);
    let total_above: u64 = nodes
        .iter()
        .filter(|r| r.end > kernel_end)
        .map(|r| {
            let start = if r.start <= kernel_start {
                kernel_end
            } else {
                r.start
            };
            r.end.saturating_sub(start)
        })
        .sum();
    let kernel_reserve = kernel_end.saturating_sub(ram_base) + page_table_reserve(total_above);
    let free = total_above.saturating_sub(kernel_reserve);
    let report = MemoryReport {
        total_above,
        kernel_reserve,
        free,
    };
    let placed = format!("the app at {load:#x} ({} KiB)", mem_size.div_ceil(1024));
    if total_above < MIN_FREE_RAM {
        return Err(BootError::new(
            FailureCode::TooLittleMemory,
            format!(
                "only {} MiB of RAM lie above {placed}; the kernel needs at least {} MiB there",
                total_above / MIB,
                MIN_FREE_RAM / MIB
            ),
            FIX_MEMORY,
        ));
    }
    if free < MIN_KERNEL_HEAP {
        return Err(BootError::new(
            FailureCode::TooLittleMemory,
            format!(
                "{} MiB of RAM lie above {placed}, but the kernel reserves {} MiB of that for \
                 everything below its end and its page tables, leaving {} MiB (at least {} MiB needed)",
                total_above / MIB,
                kernel_reserve.div_ceil(MIB),
                free / MIB,
                MIN_KERNEL_HEAP / MIB
            ),
            FIX_MEMORY,
        ));
    }
    Ok(report)
}

/// The kernel's worst-case page-table reserve for `total` bytes of RAM (kernel 0.11 `mm::init`).
fn page_table_reserve(total: u64) -> u64 {
    let entries = BASE_PAGE / 8;
    let pages = total / BASE_PAGE;
    let p3 = pages / entries + 1;
    let p2 = p3 / entries + 1;
    let p1 = p2 / entries + 1;
    (p3 + p2 + p1) * BASE_PAGE + 2 * LARGE_PAGE
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    fn e(base: u64, len: u64, kind: u32) -> MemoryMapEntry {
        MemoryMapEntry { base, len, kind }
    }

    /// QEMU q35 with 512 MiB.
    fn qemu_512m() -> Vec<MemoryMapEntry> {
        alloc::vec![
            e(0, 0x9fc00, 1),
            e(0x9fc00, 0x400, 2),
            e(0xf0000, 0x10000, 2),
            e(0x10_0000, 0x1fee_0000, 1),
            e(0x1ffe_0000, 0x20000, 2),
            e(0xb000_0000, 0x1000_0000, 2),
            e(0xfffc_0000, 0x40000, 2),
        ]
    }

    #[test]
    fn usable_ram_skips_low_memory_and_reserved() {
        assert_eq!(usable_ram(&qemu_512m()), [0x10_0000..0x1ffe_0000]);
    }

    #[test]
    fn usable_ram_merges_sorts_aligns_and_subtracts_overlaps() {
        let map = [
            e(0x1_0000_0000, 0x4000_0000, 1),
            e(0x20_0000, 0x10_0000, 1),
            e(0x30_0000, 0x10_0800, 1),
            e(0x38_0000, 0x1000, 2),
            e(0x50_0001, 0x10_0000, 1),
        ];
        assert_eq!(
            usable_ram(&map),
            [
                0x20_0000..0x38_0000,
                0x38_1000..0x40_0000,
                0x50_1000..0x60_0000,
                0x1_0000_0000..0x1_4000_0000
            ]
        );
    }

    #[test]
    fn modules_must_lie_in_available_ram() {
        let map = qemu_512m();
        let m = |start, end| Module {
            start,
            end,
            string: String::new(),
        };
        assert!(check_modules(&map, &[m(0x40_0000, 0x50_0000)]).is_ok());
        assert!(check_modules(&map, &[m(0x0, 0x0)]).is_ok());
        let err = check_modules(
            &map,
            &[m(0x40_0000, 0x50_0000), m(0x1ff0_0000, 0x2000_0000)],
        )
        .unwrap_err();
        assert_eq!(err.code, FailureCode::BadMultiboot);
        assert!(err.what.starts_with("module 2"));
        assert!(check_modules(&map, &[m(0xb000_0000, 0xb000_1000)]).is_err());
    }

    #[test]
    fn low_modules_move_above_2mib_one_after_the_other() {
        let ram = [0x10_0000..0x800_0000, 0x1_0000_0000..0x2_0000_0000];
        let loader = 0x20_0000..0x33_0000;
        // GRUB's layout: capsules at 1 MiB, the app module above the loader.
        let modules = [
            0x10_0000..0x10_ad65,
            0x11_0000..0x11_0010,
            0x34_0000..0x170_0000,
            0x12_0000..0x12_0000,
        ];
        let mut occupied = alloc::vec![loader.clone()];
        occupied.extend(modules.iter().cloned());
        let moved = relocate_low_modules(&ram, &occupied, &modules).unwrap();
        assert_eq!(moved, [Some(0x170_0000), Some(0x170_b000), None, None]);
        // Nothing to move: nothing moves.
        assert_eq!(
            relocate_low_modules(
                &ram,
                core::slice::from_ref(&loader),
                &[0x40_0000..0x50_0000]
            )
            .unwrap(),
            [None]
        );
        // No room below 4 GiB: too little memory, by name.
        let err = relocate_low_modules(&[0x10_0000..0x40_0000], &[loader], &[0x10_0000..0x20_0000])
            .unwrap_err();
        assert_eq!(err.code, FailureCode::TooLittleMemory);
        assert!(err.what.contains("must move above 2 MiB"), "{}", err.what);
    }

    #[test]
    fn places_app_above_everything_at_2mib() {
        let ram = usable_ram(&qemu_512m());
        let occupied = [
            0x9500..0x9558,
            0x20_0000..0x31_0000,
            0x31_0000..0x31_1000,
            0x31_1000..0x5a_3456,
        ];
        assert_eq!(
            place_app(&ram, &occupied, 0x80_0000, None).unwrap(),
            0x60_0000
        );
        // Exactly aligned ends need no extra gap.
        assert_eq!(
            place_app(&ram, &[0x20_0000..0x40_0000], 0x1000, None).unwrap(),
            0x40_0000
        );
    }

    #[test]
    fn placement_skips_regions_that_are_too_small() {
        let ram = [0x10_0000..0x80_0000, 0x100_0000..0x1000_0000];
        assert_eq!(
            place_app(&ram, &[0x20_0000..0x30_0000], 0x50_0000, None).unwrap(),
            0x100_0000
        );
    }

    #[test]
    fn placement_fails_without_room() {
        let ram = [0x10_0000..0x100_0000];
        let err = place_app(&ram, &[0x20_0000..0xf0_0000], 0x20_0000, None).unwrap_err();
        assert_eq!(err.code, FailureCode::TooLittleMemory);
        // Never above 4 GiB.
        let ram = [0x10_0000..0x40_0000, 0x1_0000_0000..0x2_0000_0000];
        assert!(place_app(&ram, &[0x20_0000..0x30_0000], 0x20_0000, None).is_err());
    }

    #[test]
    fn fixed_address_must_be_valid() {
        let ram = [0x10_0000..0x1000_0000];
        assert_eq!(
            place_app(&ram, &[0x20_0000..0x30_0000], 0x1000, Some(0x80_0000)).unwrap(),
            0x80_0000
        );
        let err = place_app(&ram, &[0x20_0000..0x30_0000], 0x1000, Some(0x20_0000)).unwrap_err();
        assert_eq!(err.code, FailureCode::BadApp);
        assert!(place_app(&ram, &[], 0x1000, Some(0x80_1000)).is_err());
    }

    #[test]
    fn memory_check_mirrors_the_kernel() {
        let nodes = [0x10_0000..0x1ffe_0000];
        let r = check_memory(&nodes, 0x60_0000, 0x30_0000).unwrap();
        // The image occupies 6..10 MiB in 2 MiB pages.
        assert_eq!(r.total_above, 0x1ffe_0000 - 0xa0_0000);
        assert_eq!(
            r.kernel_reserve,
            0xa0_0000 - 0x10_0000 + page_table_reserve(r.total_above)
        );
        assert_eq!(r.free, r.total_above - r.kernel_reserve);
        // 501 MiB: 251 PT pages (one per 2 MiB), one PD, one PDPT, plus two large pages.
        assert_eq!(page_table_reserve(r.total_above), 253 * 4096 + 4 * MIB);
    }

    #[test]
    fn memory_check_counts_regions_above_the_kernel_whole() {
        let nodes = [0x10_0000..0x400_0000, 0x1_0000_0000..0x1_1000_0000];
        let r = check_memory(&nodes, 0x60_0000, 0x10_0000).unwrap();
        assert_eq!(r.total_above, (0x400_0000 - 0x80_0000) + 0x1000_0000);
    }

    #[test]
    fn memory_check_rejects_small_machines() {
        // 32 MiB machine: less than 32 MiB above the app.
        let err = check_memory(&[0x10_0000..0x200_0000], 0x60_0000, 0x20_0000).unwrap_err();
        assert_eq!(err.code, FailureCode::TooLittleMemory);
        assert!(err.what.contains("at least 32 MiB"));
        // 48 MiB: 40 MiB above the app (it ends at 8 MiB) is enough for a small app.
        let r = check_memory(&[0x10_0000..0x300_0000], 0x60_0000, 0x20_0000).unwrap();
        assert_eq!(r.total_above, 0x300_0000 - 0x80_0000);
        assert!(r.free >= MIN_KERNEL_HEAP);
    }

    #[test]
    fn memory_check_counts_what_lies_below_the_app() {
        // A 100 MiB capsule below the app on a 160 MiB machine: 54 MiB lie above the app, but
        // the kernel counts the 100 MiB below against them and would panic.
        let nodes = [0x10_0000..0xa00_0000];
        let err = check_memory(&nodes, 0x680_0000, 0x20_0000).unwrap_err();
        assert_eq!(err.code, FailureCode::TooLittleMemory);
        assert!(err.what.contains("reserves"), "{}", err.what);
        assert!(check_memory(&[0x10_0000..0x1000_0000], 0x680_0000, 0x20_0000).is_ok());
    }

    #[test]
    fn memory_nodes_keep_the_app_region_and_the_largest() {
        let ram: Vec<Range<u64>> = (0..12u64)
            .map(|i| (i + 1) * 0x1000_0000..(i + 1) * 0x1000_0000 + (i + 1) * MIB)
            .collect();
        let nodes = select_memory_nodes(&ram, 0x1000_0000);
        assert_eq!(nodes.len(), MAX_MEMORY_NODES);
        assert_eq!(nodes[0], ram[0]);
        assert_eq!(nodes[1], ram[5]);
        assert_eq!(nodes.last(), Some(&ram[11]));
        assert!(nodes.windows(2).all(|w| w[0].start < w[1].start));
    }
}
