//! The image's heap (Hermit only): dlmalloc over large segments taken from the kernel's
//! allocator.
//!
//! Why: profiled under QEMU TCG (the guest's instruction pointer sampled through QEMU's
//! monitor), three quarters of a capsule's block→wake round trip went to kernel 0.11's
//! heap, talc, in `malloc`: it walks a size bin's free list until a chunk is large
//! enough, and after the engine's start-up those lists are long. Every host call
//! allocates (a `list<u8>` lifted into a `Vec`, an answer's vector), so one near-empty
//! host call cost 26–65 µs there against 0.14 µs hosted. dlmalloc's small bins answer
//! in constant time; the kernel is asked only for segments of `GRANULARITY` or more.
//! Hosted mode keeps the C library's allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::Mutex;

use dlmalloc::{Allocator, Dlmalloc};

/// What a segment is aligned to (a page).
const PAGE: usize = 4096;
/// Smallest segment dlmalloc asks the kernel for.
const GRANULARITY: usize = 256 << 10;

/// Segments from the kernel's allocator (`sys_malloc` behind `System`).
struct Segments;

// SAFETY: `alloc` returns either null or a fresh region of exactly `size` bytes that
// nothing else uses until `free` hands it back with the same size; nothing is remapped
// or released in part.
unsafe impl Allocator for Segments {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        match Layout::from_size_align(size, PAGE) {
            // SAFETY: the layout has a non-zero size.
            Ok(layout) if size > 0 => (unsafe { System.alloc(layout) }, size, 0),
            _ => (ptr::null_mut(), 0, 0),
        }
    }

    fn remap(&self, _ptr: *mut u8, _oldsize: usize, _newsize: usize, _can_move: bool) -> *mut u8 {
        ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _oldsize: usize, _newsize: usize) -> bool {
        false
    }

    fn free(&self, ptr: *mut u8, size: usize) -> bool {
        // SAFETY: dlmalloc frees only whole segments `alloc` returned, with their size,
        // which was a valid layout then.
        unsafe { System.dealloc(ptr, Layout::from_size_align_unchecked(size, PAGE)) };
        true
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        false
    }

    fn page_size(&self) -> usize {
        PAGE
    }
}

/// The global allocator. A futex-based mutex guards it: a higher-priority thread (the
/// epoch ticker) that finds it held sleeps until it is released instead of spinning
/// while the holder cannot run; the mutex itself never allocates.
pub struct Heap(Mutex<Dlmalloc<Segments>>);

impl Heap {
    const fn new() -> Heap {
        let mut heap = Dlmalloc::new_with_allocator(Segments);
        assert!(heap.set_granularity(GRANULARITY));
        Heap(Mutex::new(heap))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Dlmalloc<Segments>) -> T) -> T {
        // Nothing panics while holding it (dlmalloc reports failure as null).
        let mut heap = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut heap)
    }
}

// SAFETY: every method forwards to dlmalloc, under the mutex, with the caller's layout;
// dlmalloc returns null on failure and memory aligned as asked otherwise.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's (non-zero-size) layout.
        self.with(|h| unsafe { h.malloc(layout.size(), layout.align()) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        self.with(|h| unsafe { h.calloc(layout.size(), layout.align()) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with this layout (GlobalAlloc's contract).
        self.with(|h| unsafe { h.free(ptr, layout.size(), layout.align()) })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; `new_size` is non-zero.
        self.with(|h| unsafe { h.realloc(ptr, layout.size(), layout.align(), new_size) })
    }
}

#[global_allocator]
static HEAP: Heap = Heap::new();
