//! Multiboot v1 information parsing (QEMU's `-kernel`, GRUB's `multiboot`); `multiboot2.rs`
//! parses the v2 form, and [`parse_any`] picks by the magic.
//! Reads the boot loader's information structure through a [`PhysMem`] view, copies what the
//! loader needs into owned data and records every range the structures occupy.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use crate::{BootError, FailureCode};

/// The value a multiboot v1 boot loader leaves in EAX.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The magic of the multiboot v1 header in the OS image.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// Memory map entry type of usable RAM.
pub const MEMORY_AVAILABLE: u32 = 1;

/// Information flags (bits of the first word of the information structure).
const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;
const FLAG_LOADER_NAME: u32 = 1 << 9;

/// Size of the information structure up to and including the VBE fields.
const INFO_SIZE: u64 = 88;
/// Size of one module list entry.
const MODULE_ENTRY_SIZE: u64 = 16;
/// Limits that keep a corrupt structure from making the loader loop or allocate without end.
const MAX_MODULES: u32 = 64;
const MAX_MMAP_ENTRIES: usize = 512;
/// 64 KiB: room for the application command line, which carries manifests and hook
/// payloads (hex) as well as settings.
const MAX_STRING: u64 = 64 << 10;

const FIX_LOADER: &str =
    "boot astrid-boot with a multiboot loader (QEMU -kernel, GRUB `multiboot2` or `multiboot`)";

/// Read access to physical memory.
pub trait PhysMem {
    /// The bytes at physical `addr..addr + len`, or `None` when that range cannot be read.
    fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]>;
}

/// One entry of the boot loader's memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMapEntry {
    pub base: u64,
    pub len: u64,
    /// 1 = available RAM; everything else is reserved for our purposes.
    pub kind: u32,
}

impl MemoryMapEntry {
    /// The entry as an address range, saturating at the top of the address space.
    pub fn range(&self) -> Range<u64> {
        self.base..self.base.saturating_add(self.len)
    }
}

/// One boot module: its bytes and its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub start: u64,
    pub end: u64,
    pub string: String,
}

impl Module {
    /// The module's bytes as a physical range.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the module is empty.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// The parts of the multiboot information the loader uses, copied out of guest memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MultibootInfo {
    /// Physical address of the information structure.
    pub addr: u64,
    /// The loader's own command line (QEMU: image path followed by `-append`).
    pub cmdline: Option<String>,
    pub modules: Vec<Module>,
    pub memory_map: Vec<MemoryMapEntry>,
    /// Every range the boot loader's structures, strings and modules occupy.
    pub occupied: Vec<Range<u64>>,
    /// A copy of the ACPI RSDP (multiboot2 only: UEFI firmware leaves it nowhere the kernel
    /// searches).
    pub acpi_rsdp: Option<Vec<u8>>,
}

/// The boot information of either protocol, told apart by the magic in EAX.
pub fn parse_any(magic: u32, addr: u64, mem: &impl PhysMem) -> Result<MultibootInfo, BootError> {
    match magic {
        crate::multiboot2::BOOTLOADER_MAGIC => crate::multiboot2::parse(magic, addr, mem),
        _ => parse(magic, addr, mem),
    }
}

/// The loader's own command line under either protocol (see [`command_line`]).
pub fn command_line_any(magic: u32, addr: u64, mem: &impl PhysMem) -> Option<String> {
    match magic {
        crate::multiboot2::BOOTLOADER_MAGIC => crate::multiboot2::command_line(magic, addr, mem),
        _ => command_line(magic, addr, mem),
    }
}

/// Reads a little-endian `u32`.
fn read_u32(mem: &impl PhysMem, addr: u64) -> Option<u32> {
    let b = mem.bytes(addr, 4)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// Reads a little-endian `u64`.
fn read_u64(mem: &impl PhysMem, addr: u64) -> Option<u64> {
    let b = mem.bytes(addr, 8)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

fn bad(what: impl Into<String>) -> BootError {
    BootError::new(FailureCode::BadMultiboot, what, FIX_LOADER)
}

/// Reads a NUL-terminated UTF-8 string of at most [`MAX_STRING`] bytes; returns it and the
/// range it occupies (including the NUL).
fn read_cstr(mem: &impl PhysMem, addr: u64, what: &str) -> Result<(String, Range<u64>), BootError> {
    let mut bytes = Vec::new();
    loop {
        let at = addr
            .checked_add(bytes.len() as u64)
            .ok_or_else(|| bad(alloc::format!("{what} wraps around the address space")))?;
        let byte = mem
            .bytes(at, 1)
            .ok_or_else(|| bad(alloc::format!("{what} at {addr:#x} is not readable")))?[0];
        if byte == 0 {
            break;
        }
        bytes.push(byte);
        if bytes.len() as u64 >= MAX_STRING {
            return Err(bad(alloc::format!(
                "{what} at {addr:#x} is longer than {MAX_STRING} bytes"
            )));
        }
    }
    let len = bytes.len() as u64 + 1;
    let string = String::from_utf8(bytes)
        .map_err(|_| bad(alloc::format!("{what} at {addr:#x} is not UTF-8")))?;
    Ok((string, addr..addr + len))
}

/// Parses the multiboot information at `addr`, handed over with `magic` in EAX.
pub fn parse(magic: u32, addr: u64, mem: &impl PhysMem) -> Result<MultibootInfo, BootError> {
    if magic != BOOTLOADER_MAGIC {
        return Err(bad(alloc::format!(
            "bad multiboot magic {magic:#x} (expected {BOOTLOADER_MAGIC:#x})"
        )));
    }
    if addr == 0 || mem.bytes(addr, INFO_SIZE).is_none() {
        return Err(bad(alloc::format!(
            "multiboot information at {addr:#x} is not readable"
        )));
    }
    let field = |offset: u64| read_u32(mem, addr + offset).unwrap_or(0);
    let flags = field(0);

    let mut info = MultibootInfo {
        addr,
        occupied: alloc::vec![addr..addr + INFO_SIZE],
        ..MultibootInfo::default()
    };

    if flags & FLAG_CMDLINE != 0 && field(16) != 0 {
        let (cmdline, range) = read_cstr(mem, u64::from(field(16)), "loader command line")?;
        info.cmdline = Some(cmdline);
        info.occupied.push(range);
    }

    if flags & FLAG_LOADER_NAME != 0 && field(64) != 0 {
        // Only its footprint matters: the app must not be loaded over it while we run.
        let (_, range) = read_cstr(mem, u64::from(field(64)), "boot loader name")?;
        info.occupied.push(range);
    }

    if flags & FLAG_MMAP == 0 {
        return Err(bad(
            "the boot loader passed no memory map (multiboot flag 6)",
        ));
    }
    info.memory_map = parse_memory_map(mem, u64::from(field(48)), u64::from(field(44)))?;
    let mmap_addr = u64::from(field(48));
    info.occupied
        .push(mmap_addr..mmap_addr + u64::from(field(44)));

    if flags & FLAG_MODS != 0 {
        let count = field(20);
        let list = u64::from(field(24));
        if count > MAX_MODULES {
            return Err(bad(alloc::format!(
                "{count} modules is more than the {MAX_MODULES} the loader accepts"
            )));
        }
        let list_len = u64::from(count) * MODULE_ENTRY_SIZE;
        if count > 0 {
            if mem.bytes(list, list_len).is_none() {
                return Err(bad(alloc::format!(
                    "module list at {list:#x} is not readable"
                )));
            }
            info.occupied.push(list..list + list_len);
        }
        for i in 0..u64::from(count) {
            let entry = list + i * MODULE_ENTRY_SIZE;
            let start = u64::from(read_u32(mem, entry).unwrap_or(0));
            let end = u64::from(read_u32(mem, entry + 4).unwrap_or(0));
            let string_addr = u64::from(read_u32(mem, entry + 8).unwrap_or(0));
            if end < start {
                return Err(bad(alloc::format!(
                    "module {} ends at {end:#x} before it starts at {start:#x}",
                    i + 1
                )));
            }
            let string = if string_addr == 0 {
                String::new()
            } else {
                let (string, range) =
                    read_cstr(mem, string_addr, &alloc::format!("module {} string", i + 1))?;
                info.occupied.push(range);
                string
            };
            info.occupied.push(start..end);
            info.modules.push(Module { start, end, string });
        }
    }
    Ok(info)
}

/// Just the loader's own command line, read before anything else can fail so that even a
/// failure to parse the rest can honour `debug-exit=`. `None` when there is none or when the
/// magic says the information cannot be trusted.
pub fn command_line(magic: u32, addr: u64, mem: &impl PhysMem) -> Option<String> {
    if magic != BOOTLOADER_MAGIC || addr == 0 {
        return None;
    }
    let flags = read_u32(mem, addr)?;
    let cmdline = read_u32(mem, addr + 16)?;
    if flags & FLAG_CMDLINE == 0 || cmdline == 0 {
        return None;
    }
    read_cstr(mem, u64::from(cmdline), "loader command line")
        .ok()
        .map(|(s, _)| s)
}

/// Parses the memory map buffer at `addr` of `len` bytes.
fn parse_memory_map(
    mem: &impl PhysMem,
    addr: u64,
    len: u64,
) -> Result<Vec<MemoryMapEntry>, BootError> {
    if len == 0 || mem.bytes(addr, len).is_none() {
        return Err(bad(alloc::format!(
            "memory map at {addr:#x} ({len} bytes) is empty or not readable"
        )));
    }
    let mut entries = Vec::new();
    let mut offset = 0u64;
    // Each entry is preceded by its size, which excludes the size field itself.
    while offset + 4 <= len {
        let at = addr + offset;
        let size = u64::from(read_u32(mem, at).unwrap_or(0));
        if size < 20 || offset + 4 + size > len {
            return Err(bad(alloc::format!(
                "memory map entry at {at:#x} has a bad size {size}"
            )));
        }
        let base = read_u64(mem, at + 4).unwrap_or(0);
        let entry_len = read_u64(mem, at + 12).unwrap_or(0);
        let kind = read_u32(mem, at + 20).unwrap_or(0);
        entries.push(MemoryMapEntry {
            base,
            len: entry_len,
            kind,
        });
        if entries.len() > MAX_MMAP_ENTRIES {
            return Err(bad("memory map has more than 512 entries"));
        }
        offset += 4 + size;
    }
    if !entries
        .iter()
        .any(|e| e.kind == MEMORY_AVAILABLE && e.len > 0)
    {
        return Err(bad("memory map lists no available RAM"));
    }
    Ok(entries)
}

/// A sparse fake of physical memory made of byte blocks at fixed addresses, everything
/// else unreadable: what the unit tests and the fuzz targets (feature `fake-mem`) give
/// the parsers to read through.
#[cfg(any(test, feature = "fake-mem"))]
#[derive(Default)]
pub struct FakeMem {
    blocks: Vec<(u64, Vec<u8>)>,
}

#[cfg(any(test, feature = "fake-mem"))]
impl FakeMem {
    pub fn put(&mut self, addr: u64, bytes: &[u8]) {
        self.blocks.push((addr, bytes.to_vec()));
    }

    /// The ranges the blocks cover.
    pub fn ranges(&self) -> impl Iterator<Item = core::ops::Range<u64>> + '_ {
        self.blocks.iter().map(|(a, b)| *a..a + b.len() as u64)
    }
}

#[cfg(any(test, feature = "fake-mem"))]
impl PhysMem for FakeMem {
    fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]> {
        self.blocks.iter().find_map(|(base, data)| {
            let off = addr.checked_sub(*base)?;
            let end = off.checked_add(len)?;
            (end <= data.len() as u64).then(|| &data[off as usize..end as usize])
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub use super::FakeMem;

    /// Builds multiboot information the way QEMU 7.2 lays it out: info and memory map in low
    /// memory, module list and strings after the kernel image, modules after that.
    pub struct InfoBuilder {
        pub flags: u32,
        pub cmdline: Option<&'static str>,
        pub mmap: Vec<(u64, u64, u32)>,
        pub modules: Vec<(u64, u64, &'static str)>,
    }

    pub const INFO_ADDR: u64 = 0x9500;
    pub const MMAP_ADDR: u64 = 0x8000;
    pub const STRINGS_ADDR: u64 = 0x30_0000;
    pub const MODLIST_ADDR: u64 = 0x2f_f000;

    impl InfoBuilder {
        pub fn qemu(modules: Vec<(u64, u64, &'static str)>) -> Self {
            Self {
                flags: 0x0000_0a4f,
                cmdline: Some("/tmp/astrid-boot debug-exit=0xf4"),
                mmap: alloc::vec![
                    (0, 0x9fc00, 1),
                    (0x9fc00, 0x400, 2),
                    (0xf0000, 0x10000, 2),
                    (0x10_0000, 0x1fee_0000, 1),
                    (0x1ffe_0000, 0x20000, 2),
                    (0xfffc_0000, 0x40000, 2),
                ],
                modules,
            }
        }

        pub fn build(&self) -> FakeMem {
            let mut mem = FakeMem::default();
            let mut info = [0u8; INFO_SIZE as usize];
            let mut put32 =
                |off: usize, v: u32| info[off..off + 4].copy_from_slice(&v.to_le_bytes());
            put32(0, self.flags);
            put32(4, 639);
            put32(8, 523_136);
            let mut strings = Vec::new();
            let mut add_string = |s: &str| {
                let addr = STRINGS_ADDR + strings.len() as u64;
                strings.extend_from_slice(s.as_bytes());
                strings.push(0);
                addr as u32
            };
            if let Some(c) = self.cmdline {
                put32(16, add_string(c));
            }
            put32(20, self.modules.len() as u32);
            put32(24, MODLIST_ADDR as u32);
            let mut mmap = Vec::new();
            for &(base, len, kind) in &self.mmap {
                mmap.extend_from_slice(&20u32.to_le_bytes());
                mmap.extend_from_slice(&base.to_le_bytes());
                mmap.extend_from_slice(&len.to_le_bytes());
                mmap.extend_from_slice(&kind.to_le_bytes());
            }
            put32(44, mmap.len() as u32);
            put32(48, MMAP_ADDR as u32);
            put32(64, add_string("qemu"));
            let mut list = Vec::new();
            for &(start, end, s) in &self.modules {
                let string = add_string(s);
                list.extend_from_slice(&(start as u32).to_le_bytes());
                list.extend_from_slice(&(end as u32).to_le_bytes());
                list.extend_from_slice(&string.to_le_bytes());
                list.extend_from_slice(&0u32.to_le_bytes());
            }
            mem.put(INFO_ADDR, &info);
            mem.put(MMAP_ADDR, &mmap);
            mem.put(MODLIST_ADDR, &list);
            mem.put(STRINGS_ADDR, &strings);
            mem
        }
    }

    #[test]
    fn parses_qemu_style_information() {
        let b = InfoBuilder::qemu(alloc::vec![
            (0x40_0000, 0x50_0000, "/images/hello.img -freq 2000 -- a b"),
            (0x50_0000, 0x50_1234, "/capsules/echo.wasm"),
        ]);
        let info = parse(BOOTLOADER_MAGIC, INFO_ADDR, &b.build()).unwrap();
        assert_eq!(
            info.cmdline.as_deref(),
            Some("/tmp/astrid-boot debug-exit=0xf4")
        );
        assert_eq!(info.memory_map.len(), 6);
        assert_eq!(
            info.memory_map[3],
            MemoryMapEntry {
                base: 0x10_0000,
                len: 0x1fee_0000,
                kind: 1
            }
        );
        assert_eq!(info.modules.len(), 2);
        assert_eq!(info.modules[0].range(), 0x40_0000..0x50_0000);
        assert_eq!(
            info.modules[0].string,
            "/images/hello.img -freq 2000 -- a b"
        );
        assert_eq!(info.modules[1].len(), 0x1234);
        // Info, cmdline, loader name, mmap, module list, two strings, two modules.
        assert_eq!(info.occupied.len(), 9);
        assert!(info.occupied.contains(&(INFO_ADDR..INFO_ADDR + INFO_SIZE)));
        assert!(info.occupied.contains(&(0x50_0000..0x50_1234)));
        assert!(info.occupied.contains(&(MODLIST_ADDR..MODLIST_ADDR + 32)));
    }

    /// The boot_multiboot fuzz target's input for `mem`: the app's size (4 KiB pages), no
    /// fixed address, then each block as `[u32 address][u32 length][bytes]`, the
    /// information structure first.
    fn fuzz_input(mem: &FakeMem, app_pages: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&app_pages.to_le_bytes());
        out.push(0);
        out.extend_from_slice(&0u32.to_le_bytes());
        let mut blocks: Vec<&(u64, Vec<u8>)> = mem.blocks.iter().collect();
        blocks.sort_by_key(|(addr, _)| *addr != INFO_ADDR);
        for (addr, bytes) in blocks {
            out.extend_from_slice(&(*addr as u32).to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// The boot_multiboot fuzz target starts from QEMU's layout with an app and a capsule,
    /// and with the app alone.
    #[test]
    fn fuzz_seeds_are_qemu_layouts() {
        let two = InfoBuilder::qemu(alloc::vec![
            (0x40_0000, 0x50_0000, "/images/astrid.img -freq 2000 -- a"),
            (0x50_0000, 0x50_1234, "/capsules/hello.wasm"),
        ]);
        assert!(parse(BOOTLOADER_MAGIC, INFO_ADDR, &two.build()).is_ok());
        crate::fuzz_seed::check("boot_multiboot/qemu-app-and-capsule.bin", &fuzz_input(&two.build(), 2560));
        let one = InfoBuilder::qemu(alloc::vec![(0x40_0000, 0x48_0000, "astrid.img")]);
        crate::fuzz_seed::check("boot_multiboot/qemu-app.bin", &fuzz_input(&one.build(), 512));
    }

    #[test]
    fn reads_the_command_line_alone() {
        let mut b = InfoBuilder::qemu(alloc::vec![]);
        b.flags &= !FLAG_MMAP; // the full parse fails, the command line is still there
        let mem = b.build();
        assert!(parse(BOOTLOADER_MAGIC, INFO_ADDR, &mem).is_err());
        assert_eq!(
            command_line(BOOTLOADER_MAGIC, INFO_ADDR, &mem).as_deref(),
            Some("/tmp/astrid-boot debug-exit=0xf4")
        );
        assert_eq!(command_line(0, INFO_ADDR, &mem), None);
        b.flags &= !FLAG_CMDLINE;
        assert_eq!(command_line(BOOTLOADER_MAGIC, INFO_ADDR, &b.build()), None);
    }

    #[test]
    fn rejects_bad_magic() {
        let b = InfoBuilder::qemu(alloc::vec![]);
        let err = parse(0x1234, INFO_ADDR, &b.build()).unwrap_err();
        assert_eq!(err.code, FailureCode::BadMultiboot);
        assert!(err.what.contains("magic"));
    }

    #[test]
    fn rejects_unreadable_info() {
        let b = InfoBuilder::qemu(alloc::vec![]);
        let err = parse(BOOTLOADER_MAGIC, 0x7000_0000, &b.build()).unwrap_err();
        assert_eq!(err.code, FailureCode::BadMultiboot);
        let err = parse(BOOTLOADER_MAGIC, 0, &b.build()).unwrap_err();
        assert_eq!(err.code, FailureCode::BadMultiboot);
    }

    #[test]
    fn requires_a_memory_map() {
        let mut b = InfoBuilder::qemu(alloc::vec![]);
        b.flags &= !FLAG_MMAP;
        let err = parse(BOOTLOADER_MAGIC, INFO_ADDR, &b.build()).unwrap_err();
        assert_eq!(err.code, FailureCode::BadMultiboot);
        assert!(err.what.contains("memory map"));
    }

    #[test]
    fn requires_available_ram_in_the_map() {
        let mut b = InfoBuilder::qemu(alloc::vec![]);
        b.mmap = alloc::vec![(0, 0x9fc00, 2)];
        let err = parse(BOOTLOADER_MAGIC, INFO_ADDR, &b.build()).unwrap_err();
        assert_eq!(err.code, FailureCode::BadMultiboot);
    }

    #[test]
    fn rejects_a_corrupt_memory_map_entry() {
        let b = InfoBuilder::qemu(alloc::vec![]);
        let mut mem = b.build();
        // Overwrite the first entry's size with 4, smaller than an entry.
        let block = mem
            .blocks
            .iter_mut()
            .find(|(a, _)| *a == MMAP_ADDR)
            .unwrap();
        block.1[0..4].copy_from_slice(&4u32.to_le_bytes());
        let err = parse(BOOTLOADER_MAGIC, INFO_ADDR, &mem).unwrap_err();
        assert!(err.what.contains("bad size"));
    }

    #[test]
    fn no_module_flag_means_no_modules() {
        let mut b = InfoBuilder::qemu(alloc::vec![(0x40_0000, 0x50_0000, "x")]);
        b.flags &= !FLAG_MODS;
        let info = parse(BOOTLOADER_MAGIC, INFO_ADDR, &b.build()).unwrap();
        assert!(info.modules.is_empty());
    }

    #[test]
    fn rejects_inverted_module() {
        let b = InfoBuilder::qemu(alloc::vec![(0x50_0000, 0x40_0000, "x")]);
        let err = parse(BOOTLOADER_MAGIC, INFO_ADDR, &b.build()).unwrap_err();
        assert_eq!(err.code, FailureCode::BadMultiboot);
    }

    #[test]
    fn missing_cmdline_is_none() {
        let mut b = InfoBuilder::qemu(alloc::vec![]);
        b.cmdline = None;
        b.flags &= !FLAG_CMDLINE;
        let info = parse(BOOTLOADER_MAGIC, INFO_ADDR, &b.build()).unwrap();
        assert_eq!(info.cmdline, None);
    }

    #[test]
    fn rejects_non_utf8_strings() {
        let b = InfoBuilder::qemu(alloc::vec![]);
        let mut mem = b.build();
        let block = mem
            .blocks
            .iter_mut()
            .find(|(a, _)| *a == STRINGS_ADDR)
            .unwrap();
        block.1[1] = 0xff;
        let err = parse(BOOTLOADER_MAGIC, INFO_ADDR, &mem).unwrap_err();
        assert!(err.what.contains("UTF-8"));
    }
}
