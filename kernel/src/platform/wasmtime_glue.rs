//! wasmtime 50's "custom platform" C API (`vm/sys/custom/capi.rs`) on Hermit: virtual
//! memory on kernel 0.11's `sys_mmap`/`sys_mprotect`/`sys_munmap`, and two TLS slots.
//! Seams: wasmtime calls the `wasmtime_*` symbols; the engine calls `set_budget`, `stats`.
//!
//! Design. The kernel's calls are only correct on a range that is either wholly unbacked
//! or one physically contiguous allocation: `sys_munmap` frees `len` bytes of physical
//! memory from the first page's frame, `sys_mprotect` maps `len` bytes from the first
//! page's frame (or allocates them if it is unbacked). So every mapping is reserved
//! without memory (`sys_mmap(len, 0)`), and this module records which pieces are backed,
//! each piece one kernel allocation of at most `MAX_PIECE` bytes (a large memory never
//! needs a large contiguous run of frames), and splits every request along piece
//! boundaries before calling in. New pieces are zeroed here: the kernel hands out frames
//! as it found them. Running out of frames is a kernel panic, not an error, so backing is
//! refused with ENOMEM beyond a budget (`set_budget`) that the engine sizes below the
//! kernel's free frames; wasmtime then fails the instantiation or the `memory.grow`.
//! The global allocator is no alternative: the kernel maps its heap no-execute.
//!
//! Threat model: the kernel maps every page of a mapping writable whatever `prot` says;
//! only execute permission follows `prot`. Read-only, no-access (`prot` 0) and W^X are
//! therefore not enforced: JIT code stays writable, and backed pages set to `prot` 0 stay
//! readable and writable. A stray access to an unbacked page is a page fault that stops
//! the whole image (kernel 0.11 aborts), never a wasm trap. Wasm isolation rests on
//! wasmtime's explicit bounds and stack checks (no guard pages, no signals), not on the MMU.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ptr;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The kernel's page size (`x86_64` base pages).
const PAGE: usize = 4096;

/// Largest piece backed by one kernel allocation: a grow to 64 MiB needs 32 runs of
/// 2 MiB, never one 64 MiB run that a fragmented free list may not have.
const MAX_PIECE: usize = 2 << 20;

/// Cap on address space reserved through this module: the kernel panics when its
/// virtual free list (64 TiB) runs dry, so stay far below it.
const MAX_RESERVED: usize = 1 << 40;

/// Physical memory mappings may hold until the engine calls `set_budget`: the budget of
/// the smallest guest the image runs in (128 MiB, one 8 MiB runner stack), so an
/// unconfigured engine fails cleanly rather than panicking the kernel.
const DEFAULT_BUDGET: usize = 24 << 20;

/// Error codes returned to wasmtime, which reports them as "os error N".
const ENOMEM: i32 = 12;
const EINVAL: i32 = 22;

unsafe extern "C" {
    fn sys_mmap(size: usize, prot: u32, ret: &mut *mut u8) -> i32;
    fn sys_mprotect(ptr: *mut u8, size: usize, prot: u32) -> i32;
    fn sys_munmap(ptr: *mut u8, size: usize) -> i32;
}

/// What mappings hold now (bytes unless named otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Physical memory mappings may hold in all.
    pub budget: usize,
    /// Physical memory backing mappings now.
    pub backed: usize,
    /// The most `backed` has been.
    pub peak_backed: usize,
    /// Address space reserved (backed or not).
    pub reserved: usize,
    /// Live mappings.
    pub mappings: usize,
    /// Requests refused for the budget or the address-space cap.
    pub refusals: u64,
}

/// Sets how much physical memory all mappings together may hold (rounded down to pages).
/// Memory already backed stays; only new backing is refused beyond it.
pub fn set_budget(bytes: usize) {
    state().budget = bytes & !(PAGE - 1);
}

/// A budget for a guest with `ram` bytes of RAM whose other threads' stacks take
/// `thread_stacks` bytes. Kernel 0.11 (feature `mmap`) keeps 75% of the RAM after its
/// image as its heap; the rest is the free-frame pool that mappings, task stacks and page
/// tables share, measured at RAM/4 + 16 to 19 MiB when the application starts (128 MiB
/// to 1 GiB guests). The budget is RAM/4 less the stacks, leaving those 16 MiB for page
/// tables, kernel task stacks, device queues and fragments.
pub fn budget_for_guest_ram(ram: u64, thread_stacks: usize) -> usize {
    let quarter = usize::try_from(ram / 4).unwrap_or(usize::MAX);
    quarter.saturating_sub(thread_stacks) & !(PAGE - 1)
}

/// The counters, for the engine's errors and for tests.
pub fn stats() -> Stats {
    let s = state();
    Stats {
        budget: s.budget,
        backed: s.backed,
        peak_backed: s.peak_backed,
        reserved: s.reserved,
        mappings: s.mappings.len(),
        refusals: s.refusals,
    }
}

struct State {
    /// Live mappings by base address.
    mappings: BTreeMap<usize, Mapping>,
    budget: usize,
    backed: usize,
    peak_backed: usize,
    reserved: usize,
    refusals: u64,
}

static STATE: Mutex<State> = Mutex::new(State {
    mappings: BTreeMap::new(),
    budget: DEFAULT_BUDGET,
    backed: 0,
    peak_backed: 0,
    reserved: 0,
    refusals: 0,
});

/// The state, even after a panic elsewhere poisoned the lock: every update below is
/// finished before it can panic, and the C callers cannot take an unwinding panic.
fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One reservation from `sys_mmap`: its length and its backed pieces (offset → length),
/// each piece physically contiguous. Gaps between pieces have no frames.
struct Mapping {
    len: usize,
    pieces: BTreeMap<usize, usize>,
}

/// A run of a mapping that is either one backed piece or unbacked throughout.
struct Segment {
    offset: usize,
    len: usize,
    backed: bool,
}

impl Mapping {
    /// Makes `at` a piece boundary. Both halves of a split piece stay physically
    /// contiguous, so the kernel's calls remain correct on each.
    fn split_at(&mut self, at: usize) {
        if let Some((&start, &len)) = self.pieces.range(..at).next_back()
            && start + len > at
        {
            self.pieces.insert(start, at - start);
            self.pieces.insert(at, start + len - at);
        }
    }

    /// `[start, end)` as segments in address order, splitting pieces at both ends.
    fn segments(&mut self, start: usize, end: usize) -> Vec<Segment> {
        self.split_at(start);
        self.split_at(end);
        let mut out = Vec::new();
        let mut cursor = start;
        for (&offset, &len) in self.pieces.range(start..end) {
            if offset > cursor {
                out.push(Segment { offset: cursor, len: offset - cursor, backed: false });
            }
            out.push(Segment { offset, len, backed: true });
            cursor = offset + len;
        }
        if cursor < end {
            out.push(Segment { offset: cursor, len: end - cursor, backed: false });
        }
        out
    }
}

impl State {
    /// The base of the mapping that holds all of `[start, end)`.
    fn find(&self, start: usize, end: usize) -> Option<usize> {
        let (&base, m) = self.mappings.range(..=start).next_back()?;
        (end <= base + m.len).then_some(base)
    }

    /// Whether `more` bytes of backing fit the budget; counts a refusal if not.
    fn admit(&mut self, more: usize) -> bool {
        let fits = self.backed.checked_add(more).is_some_and(|total| total <= self.budget);
        if !fits {
            self.refusals += 1;
        }
        fits
    }

    /// Backs the unbacked run `[offset, offset + len)` of the mapping at `base` with
    /// frames mapped with `prot` (non-zero), in pieces of at most `MAX_PIECE`, and adds
    /// the run to `dirty`. The caller has admitted `len` bytes.
    fn back(&mut self, base: usize, offset: usize, len: usize, prot: u32, dirty: &mut Dirty) {
        let m = self.mappings.get_mut(&base).expect("caller found the mapping");
        let mut done = 0;
        while done < len {
            let n = (len - done).min(MAX_PIECE);
            // SAFETY: the run is page-aligned, inside our reservation and unbacked, so
            // the kernel allocates `n` contiguous bytes of frames and maps them there
            // (writable always, executable as `prot` says). It returns 0 or panics.
            unsafe { sys_mprotect((base + offset + done) as *mut u8, n, prot) };
            m.pieces.insert(offset + done, n);
            done += n;
        }
        self.backed += len;
        self.peak_backed = self.peak_backed.max(self.backed);
        dirty.0.push((base + offset, len));
    }
}

/// Runs of frames to zero once the lock is released (the kernel hands frames out as it
/// found them): a 64 MiB grow takes tens of milliseconds to zero under TCG, and other
/// threads' calls need not wait for it. Nothing else touches the runs meanwhile: they
/// belong to the caller, which has not had our answer yet.
#[derive(Default)]
struct Dirty(Vec<(usize, usize)>);

impl Dirty {
    fn zero(self) {
        for (addr, len) in self.0 {
            // SAFETY: a backed, writable run of the caller's mapping (see above).
            unsafe { ptr::write_bytes(addr as *mut u8, 0, len) };
        }
    }
}

/// `[ptr, ptr + len)` widened to whole pages, or None if it wraps around.
fn page_range(ptr: *mut u8, len: usize) -> Option<(usize, usize)> {
    let start = ptr as usize & !(PAGE - 1);
    let end = (ptr as usize).checked_add(len)?.checked_next_multiple_of(PAGE)?;
    Some((start, end))
}

/// Reserves `size` bytes of address space, backed and zeroed unless `prot` is 0.
///
/// # Safety
/// `ret` must be valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_mmap_new(size: usize, prot: u32, ret: *mut *mut u8) -> i32 {
    let Some(len) = size.checked_next_multiple_of(PAGE).filter(|&len| len > 0) else {
        return EINVAL;
    };
    let mut s = state();
    if s.reserved.checked_add(len).is_none_or(|total| total > MAX_RESERVED) {
        s.refusals += 1;
        return ENOMEM;
    }
    if prot != 0 && !s.admit(len) {
        return ENOMEM;
    }
    let mut base = ptr::null_mut();
    // SAFETY: with `prot` 0 the kernel only takes address space (no frames); `len` is a
    // non-zero page multiple and the cap above keeps the virtual free list from running
    // dry, which the kernel would answer with a panic.
    if unsafe { sys_mmap(len, 0, &mut base) } != 0 || base.is_null() {
        return ENOMEM;
    }
    s.reserved += len;
    s.mappings.insert(base as usize, Mapping { len, pieces: BTreeMap::new() });
    let mut dirty = Dirty::default();
    if prot != 0 {
        s.back(base as usize, 0, len, prot, &mut dirty);
    }
    drop(s);
    dirty.zero();
    // SAFETY: the caller passes a valid out-pointer.
    unsafe { *ret = base };
    0
}

/// Replaces `[addr, addr + size)` with zeroed memory mapped with `prot`. Backed pieces are
/// zeroed in place rather than returned to the kernel: `sys_munmap` would also give the
/// address range back, and the kernel has no call to take a given range again. They are
/// returned when the mapping is unmapped.
///
/// # Safety
/// The range must lie in a mapping from `wasmtime_mmap_new` that nothing else uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_mmap_remap(addr: *mut u8, size: usize, prot: u32) -> i32 {
    reprotect(addr, size, prot, true)
}

/// The one walk behind `mprotect` and `remap`: re-maps the backed pieces of the range
/// with `prot` (zeroing them too when `zero_backed`), and backs and zeroes the unbacked
/// ones when `prot` makes them accessible.
fn reprotect(addr: *mut u8, size: usize, prot: u32, zero_backed: bool) -> i32 {
    let Some((start, end)) = page_range(addr, size) else { return EINVAL };
    if start == end {
        return 0;
    }
    let mut s = state();
    let Some(base) = s.find(start, end) else { return EINVAL };
    let segments = s.mappings.get_mut(&base).expect("found").segments(start - base, end - base);
    let unbacked: usize = segments.iter().filter(|g| !g.backed).map(|g| g.len).sum();
    if prot != 0 && !s.admit(unbacked) {
        return ENOMEM;
    }
    let mut dirty = Dirty::default();
    for g in segments {
        if g.backed {
            // SAFETY: one backed piece of our mapping, physically contiguous: the kernel
            // re-maps exactly its own frames (which stay writable, so zeroing works).
            unsafe { sys_mprotect((base + g.offset) as *mut u8, g.len, prot) };
            if zero_backed {
                dirty.0.push((base + g.offset, g.len));
            }
        } else if prot != 0 {
            s.back(base, g.offset, g.len, prot, &mut dirty);
        }
    }
    drop(s);
    dirty.zero();
    0
}

/// Unmaps `[ptr, ptr + size)` (a whole mapping or part of one), returning its frames
/// and its address space to the kernel.
///
/// # Safety
/// The range must lie in a mapping from `wasmtime_mmap_new` and be unused from now on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_munmap(ptr: *mut u8, size: usize) -> i32 {
    if !(ptr as usize).is_multiple_of(PAGE) {
        return EINVAL;
    }
    let Some((start, end)) = page_range(ptr, size).filter(|(start, end)| start < end) else {
        return EINVAL;
    };
    let mut s = state();
    let Some(base) = s.find(start, end) else { return EINVAL };
    let mut m = s.mappings.remove(&base).expect("found");
    let (lo, hi) = (start - base, end - base);
    for g in m.segments(lo, hi) {
        // SAFETY: each segment is one physically contiguous piece (the kernel unmaps it
        // and frees exactly its frames) or wholly unbacked (the kernel only frees the
        // address range); either way it also returns the segment's address space.
        unsafe { sys_munmap((base + g.offset) as *mut u8, g.len) };
        if g.backed {
            m.pieces.remove(&g.offset);
            s.backed -= g.len;
        }
    }
    s.reserved -= hi - lo;
    // What is left on either side stays mapped as a mapping of its own.
    let right = m.pieces.split_off(&hi);
    if hi < m.len {
        let pieces = right.into_iter().map(|(offset, len)| (offset - hi, len)).collect();
        s.mappings.insert(end, Mapping { len: m.len - hi, pieces });
    }
    if lo > 0 {
        s.mappings.insert(base, Mapping { len: lo, pieces: m.pieces });
    }
    0
}

/// Sets the protection of `[ptr, ptr + size)` (widened to pages; wasmtime passes
/// unaligned code lengths). Unbacked pages made accessible are backed and zeroed;
/// unbacked pages set to `prot` 0 stay unbacked (the kernel would back them).
///
/// # Safety
/// The range must lie in a mapping from `wasmtime_mmap_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_mprotect(ptr: *mut u8, size: usize, prot: u32) -> i32 {
    reprotect(ptr, size, prot, false)
}

#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_page_size() -> usize {
    PAGE
}

/// wasmtime's opaque memory image; never created here.
pub enum MemoryImage {}

/// Declines to make an image (allowed: NULL means "no image"), so wasmtime initializes
/// memories by copying. Copy-on-write images need page faults the kernel cannot route.
///
/// # Safety
/// `ret` must be valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_memory_image_new(
    _ptr: *const u8,
    _len: usize,
    ret: *mut *mut MemoryImage,
) -> i32 {
    // SAFETY: the caller passes a valid out-pointer.
    unsafe { *ret = ptr::null_mut() };
    0
}

/// Never called: no image is ever handed out.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_memory_image_map_at(
    _image: *mut MemoryImage,
    _addr: *mut u8,
    _len: usize,
) -> i32 {
    EINVAL
}

#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_memory_image_free(_image: *mut MemoryImage) {}

thread_local! {
    /// wasmtime's per-thread pointers: slot 0 the runtime's activation state, slot 1 the
    /// component-model-async state. Const-initialized and without destructor, so access
    /// is a plain `fs`-relative load that works at any point of a thread's life.
    static SLOTS: [Cell<*mut u8>; 2] = const { [Cell::new(ptr::null_mut()), Cell::new(ptr::null_mut())] };
}

#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    SLOTS.with(|slots| slots.get(slot).map_or(ptr::null_mut(), Cell::get))
}

#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_set(slot: usize, value: *mut u8) {
    SLOTS.with(|slots| {
        if let Some(cell) = slots.get(slot) {
            cell.set(value);
        }
    });
}
