//! What the fuzz targets share: an allocator that refuses allocations no bounded parser
//! needs, a reader that cuts a fuzz input into typed fields, and a fake of physical memory
//! for the boot loader's multiboot parser.
//!
//! Every target links this crate, so every target runs under [`Capped`]: an allocation of
//! more than [`MAX_ALLOCATION`] bytes fails, which aborts the process ("memory allocation
//! of N bytes failed") and libFuzzer records the input as a crash. That is how a length
//! field trusted for an allocation shows up, the way an allocation failure takes the image
//! down.

use std::alloc::{GlobalAlloc, Layout, System};

pub use astrid_boot::multiboot::FakeMem;

/// The largest single allocation a target may make. The parsers bound what they read
/// (a kv record is at most 2 MiB, a multiboot string 64 KiB, an input a few KiB); the ELF
/// target loads only apps of at most [`MAX_LOADED_APP`] bytes.
pub const MAX_ALLOCATION: usize = 64 << 20;

/// The largest app image the ELF target lets hermit-entry load into memory.
pub const MAX_LOADED_APP: u64 = 16 << 20;

/// The system allocator, refusing any allocation over [`MAX_ALLOCATION`].
pub struct Capped;

// SAFETY: every call is forwarded unchanged to `System`, or refused with a null pointer
// (which `GlobalAlloc` allows for any allocation that cannot be satisfied).
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract for `layout` is the one `System.alloc` needs.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this `layout` (we hand out nothing else).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` with `layout`; the caller's contract holds.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// Cuts a fuzz input into fields, front to back; a field past the end reads as zeros (or
/// empty), so every input decodes to something.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    /// The next `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        let mut b = [0; 2];
        let got = self.bytes(2);
        b[..got.len()].copy_from_slice(got);
        u16::from_le_bytes(b)
    }

    pub fn u32(&mut self) -> u32 {
        let mut b = [0; 4];
        let got = self.bytes(4);
        b[..got.len()].copy_from_slice(got);
        u32::from_le_bytes(b)
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0; 8];
        let got = self.bytes(8);
        b[..got.len()].copy_from_slice(got);
        u64::from_le_bytes(b)
    }

    /// Bytes up to (not including) the next NUL, which is consumed; the rest if none.
    pub fn until_nul(&mut self) -> &'a [u8] {
        match self.data.iter().position(|&b| b == 0) {
            Some(i) => {
                let head = &self.data[..i];
                self.data = &self.data[i + 1..];
                head
            }
            None => self.rest(),
        }
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Physical memory for the multiboot parser from a fuzz input: blocks of `[u32
/// address][u32 length][bytes]`, to the input's end (the loader's own test fake).
pub fn fake_mem_from_blocks(input: &mut Reader<'_>) -> FakeMem {
    let mut mem = FakeMem::default();
    while !input.is_empty() {
        let addr = u64::from(input.u32());
        let len = input.u32() as usize;
        mem.put(addr, input.bytes(len));
    }
    mem
}
