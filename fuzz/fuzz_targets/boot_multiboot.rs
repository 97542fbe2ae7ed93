//! The loader's path from the multiboot information to the app's placement: the
//! information structure parsed (`multiboot::parse`, and `command_line` alone first),
//! modules checked against the memory map, usable RAM computed, the app placed, the
//! memory nodes chosen and checked, the identity map's frames and the device tree built.
//! Any memory contents get a result or a failure code, never a panic or a loop.
//!
//! Input: the app's memory size (u32: 4 KiB pages, up to 16 GiB), a flags byte (bit 0:
//! the app is linked at a fixed address, given by the next u32 in 2 MiB units), then
//! blocks of memory, each `[u32 address][u32 length][bytes]`; the information structure
//! is at the first block's address, and its pointers lead into the blocks (or nowhere).
//! Holds: the command line read alone is the one parsed; modules lie in available RAM; the
//! placement is 2 MiB aligned, below 4 GiB, inside one RAM region and above everything the
//! boot loader's structures occupy; the memory nodes are at most eight and hold the app.
#![no_main]

use astrid_boot::fdt::{self, FdtParams};
use astrid_boot::memory::{self, LOAD_LIMIT, MAX_MEMORY_NODES, MIN_KERNEL_HEAP};
use astrid_boot::multiboot::{self, BOOTLOADER_MAGIC, MEMORY_AVAILABLE};
use astrid_boot::{BASE_PAGE, LARGE_PAGE, cmdline, paging};
use astrid_fuzz::{Reader, fake_mem_from_blocks};
use libfuzzer_sys::fuzz_target;

/// The loader's own image (what `loader_image()` returns on the machine).
const LOADER: std::ops::Range<u64> = 0x10_0000..0x14_0000;

fuzz_target!(|data: &[u8]| {
    let mut input = Reader::new(data);
    let mem_size = u64::from(input.u32() & 0x3f_ffff) * BASE_PAGE;
    let flags = input.u8();
    let fixed = u64::from(input.u32() & 0x7ff) * LARGE_PAGE;
    let fixed = (flags & 1 != 0).then_some(fixed);
    let mem = fake_mem_from_blocks(&mut input);
    let Some(info_addr) = mem.ranges().next().map(|r| r.start) else { return };

    let alone = multiboot::command_line(BOOTLOADER_MAGIC, info_addr, &mem);
    if let Some(line) = &alone {
        let _ = cmdline::debug_exit_port(line);
    }
    let Ok(info) = multiboot::parse(BOOTLOADER_MAGIC, info_addr, &mem) else { return };
    assert_eq!(info.cmdline, alone, "the command line read alone differs from the parsed one");
    assert!(info.memory_map.iter().any(|e| e.kind == MEMORY_AVAILABLE && e.len > 0));
    assert!(info.modules.iter().all(|m| m.start <= m.end));
    assert!(info.occupied.iter().all(|r| r.start <= r.end));
    if memory::check_modules(&info.memory_map, &info.modules).is_err() {
        return;
    }
    let available = memory::available_ram(&info.memory_map);
    for m in info.modules.iter().filter(|m| !m.is_empty()) {
        assert!(memory::region_containing(&available, &m.range()).is_some(), "{m:?} is not in available RAM");
    }
    let ram = memory::usable_ram(&info.memory_map);
    for w in ram.windows(2) {
        assert!(w[0].end < w[1].start, "usable RAM not sorted and merged: {ram:x?}");
    }
    assert!(ram.iter().all(|r| r.start < r.end && r.start % BASE_PAGE == 0 && r.end % BASE_PAGE == 0 && r.start >= memory::LOW_MEMORY_END));

    let mut occupied = info.occupied.clone();
    occupied.push(LOADER);
    let Ok(load) = memory::place_app(&ram, &occupied, mem_size, fixed) else { return };
    let end = load.checked_add(mem_size).expect("a placement that wraps");
    assert!(load % LARGE_PAGE == 0 && end <= LOAD_LIMIT, "{load:#x}+{mem_size:#x}");
    assert!(memory::region_containing(&ram, &(load..end)).is_some(), "{load:#x}+{mem_size:#x} is not in RAM");
    assert!(occupied.iter().filter(|r| !r.is_empty()).all(|r| r.end <= load), "placed over the loader's data");
    if let Some(at) = fixed {
        assert_eq!(load, at);
    }

    let nodes = memory::select_memory_nodes(&ram, load);
    assert!(nodes.len() <= MAX_MEMORY_NODES && nodes.iter().any(|r| r.start <= load && load < r.end));
    let Ok(report) = memory::check_memory(&nodes, load, mem_size) else { return };
    assert!(report.free >= MIN_KERNEL_HEAP);

    let frames = paging::identity_frames(&ram);
    assert!(frames.iter().all(|f| f.start % LARGE_PAGE == 0 && f.end % LARGE_PAGE == 0 && f.start < f.end));
    let bootargs = info.cmdline.as_deref().unwrap_or("");
    fdt::build(&FdtParams { memory: &nodes, bootargs, tsc_khz: None, rsdp: None }).expect("the device tree of an accepted boot");
});
