//! The loader's check of the app ELF (`astrid_boot::elf::check_app`), differential against
//! what it guards: hermit-entry 0.10.3 unwraps, asserts and slices without bounds checks,
//! so `check_app` must refuse every app it would panic on. Any bytes get a summary or a
//! failure code, never a panic; an app the check accepts is one hermit-entry parses, sizes
//! the same, and (up to 16 MiB) loads and relocates without panicking.
//!
//! Input: the app ELF (placed 8-byte aligned, as the loader requires of the module).
#![no_main]

use std::mem::MaybeUninit;

use astrid_boot::elf;
use astrid_boot::{FailureCode, LARGE_PAGE};
use astrid_fuzz::MAX_LOADED_APP;
use hermit_entry::elf::KernelObject;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // hermit-entry casts the headers in place: the module is page aligned in memory.
    let mut words = vec![0u64; data.len().div_ceil(8)];
    let aligned = &mut bytemuck_bytes(&mut words)[..data.len()];
    aligned.copy_from_slice(data);
    let bytes: &[u8] = aligned;
    let summary = match elf::check_app(bytes) {
        Ok(summary) => summary,
        Err(e) => {
            assert!(matches!(e.code, FailureCode::BadApp | FailureCode::EntryVersion), "{e:?}");
            return;
        }
    };
    let object = match KernelObject::parse(bytes) {
        Ok(object) => object,
        Err(e) => panic!("check_app accepted an app hermit-entry refuses: {e}"),
    };
    assert_eq!(object.mem_size() as u64, summary.mem_size, "check_app and hermit-entry disagree on the size");
    assert_eq!(object.start_addr(), summary.fixed_start);
    if summary.mem_size <= MAX_LOADED_APP {
        let mut image = vec![MaybeUninit::new(0u8); summary.mem_size as usize];
        // The loader places a static PIE at a 2 MiB boundary; an ET_EXEC app at its link address.
        let start = summary.fixed_start.unwrap_or(4 * LARGE_PAGE);
        let loaded = object.load_kernel(&mut image, start);
        assert_eq!(loaded.load_info.kernel_image_addr_range, start..start.wrapping_add(summary.mem_size));
    }
});

/// `words` as bytes (u64 has no padding and any byte pattern is a valid u64).
fn bytemuck_bytes(words: &mut [u64]) -> &mut [u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: the pointer and length cover exactly `words`, which the returned slice
    // borrows mutably for its lifetime; u8 has alignment 1, and every byte of a u64 is
    // initialised and may hold any value.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}
