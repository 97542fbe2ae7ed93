//! Multiboot2 information parsing (GRUB's `multiboot2`, the path that also works under UEFI).
//! The information is one block of 8-byte-aligned tags; the loader copies it out of memory in
//! one read and parses the copy, so every bound is checked against the block's own size.
//! Besides what multiboot v1 carries (command line, modules, memory map) it carries a copy of
//! the ACPI RSDP, which UEFI firmware does not leave where the kernel would search for it.

use alloc::string::String;
use alloc::vec::Vec;

use crate::multiboot::{MemoryMapEntry, Module, MultibootInfo, PhysMem};
use crate::{BootError, FailureCode};

/// The value a multiboot2 boot loader leaves in EAX.
pub const BOOTLOADER_MAGIC: u32 = 0x36D7_6289;
/// The magic of the multiboot2 header in the OS image.
pub const HEADER_MAGIC: u32 = 0xE852_50D6;

/// Tag types of the boot information (multiboot2 specification, section 3.6).
const TAG_END: u32 = 0;
const TAG_CMDLINE: u32 = 1;
const TAG_MODULE: u32 = 3;
const TAG_MMAP: u32 = 6;
const TAG_ACPI_OLD: u32 = 14;
const TAG_ACPI_NEW: u32 = 15;

/// Size of the fixed part: `total_size` and `reserved`.
const FIXED_SIZE: usize = 8;
/// Bounds that keep a corrupt structure from making the loader read or allocate without end.
const MAX_TOTAL_SIZE: u32 = 1 << 20;
const MAX_MODULES: usize = 64;
const MAX_MMAP_ENTRIES: usize = 512;
/// RSDP sizes: revision 0 (ACPI 1.0) and revision 2 and later.
const RSDP_V1_LEN: usize = 20;
const RSDP_V2_LEN: usize = 36;

const FIX_LOADER: &str =
    "boot astrid-boot with GRUB's `multiboot2` (or QEMU -kernel, multiboot v1)";

fn bad(what: impl Into<String>) -> BootError {
    BootError::new(FailureCode::BadMultiboot, what, FIX_LOADER)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The NUL-terminated UTF-8 string that fills the rest of a tag.
fn tag_string(body: &[u8], what: &str) -> Result<String, BootError> {
    let end = body.iter().position(|&b| b == 0).ok_or_else(|| {
        bad(alloc::format!(
            "{what} is not NUL-terminated inside its tag"
        ))
    })?;
    String::from_utf8(body[..end].to_vec()).map_err(|_| bad(alloc::format!("{what} is not UTF-8")))
}

/// Copies the information block at `addr` out of memory.
fn read_block(addr: u64, mem: &impl PhysMem) -> Result<&[u8], BootError> {
    if addr == 0 || !addr.is_multiple_of(8) {
        return Err(bad(alloc::format!(
            "multiboot2 information at {addr:#x} is not 8-byte aligned"
        )));
    }
    let total = mem
        .bytes(addr, 4)
        .and_then(|b| u32_at(b, 0))
        .ok_or_else(|| {
            bad(alloc::format!(
                "multiboot2 information at {addr:#x} is not readable"
            ))
        })?;
    if (total as usize) < FIXED_SIZE + 8 || total > MAX_TOTAL_SIZE {
        return Err(bad(alloc::format!(
            "multiboot2 information claims a size of {total} bytes"
        )));
    }
    mem.bytes(addr, u64::from(total)).ok_or_else(|| {
        bad(alloc::format!(
            "multiboot2 information at {addr:#x} ({total} bytes) is not readable"
        ))
    })
}

/// One tag: its type and its body (the bytes after the 8-byte tag header).
struct Tag<'a> {
    kind: u32,
    body: &'a [u8],
}

/// The tags of `block` up to the end tag; an error names the first malformed one.
fn tags(block: &[u8]) -> Result<Vec<Tag<'_>>, BootError> {
    let mut out = Vec::new();
    let mut at = FIXED_SIZE;
    loop {
        let (Some(kind), Some(size)) = (u32_at(block, at), u32_at(block, at + 4)) else {
            return Err(bad("multiboot2 information ends without an end tag"));
        };
        let size = size as usize;
        if size < 8 || at + size > block.len() {
            return Err(bad(alloc::format!(
                "multiboot2 tag {kind} at offset {at} has a bad size {size}"
            )));
        }
        if kind == TAG_END {
            return Ok(out);
        }
        out.push(Tag {
            kind,
            body: &block[at + 8..at + size],
        });
        // Tags start at 8-byte boundaries; the size excludes the padding.
        at = (at + size).next_multiple_of(8);
    }
}

fn parse_mmap(body: &[u8]) -> Result<Vec<MemoryMapEntry>, BootError> {
    let (Some(entry_size), Some(_version)) = (u32_at(body, 0), u32_at(body, 4)) else {
        return Err(bad("the multiboot2 memory map tag is truncated"));
    };
    let entry_size = entry_size as usize;
    if entry_size < 24 || !entry_size.is_multiple_of(8) {
        return Err(bad(alloc::format!(
            "the multiboot2 memory map has a bad entry size {entry_size}"
        )));
    }
    let entries = &body[8..];
    if entries.len() / entry_size > MAX_MMAP_ENTRIES {
        return Err(bad("memory map has more than 512 entries"));
    }
    Ok(entries
        .chunks_exact(entry_size)
        .map(|e| MemoryMapEntry {
            base: u64_at(e, 0).unwrap_or(0),
            len: u64_at(e, 8).unwrap_or(0),
            kind: u32_at(e, 16).unwrap_or(0),
        })
        .collect())
}

/// The RSDP copy a tag carries, checked: signature, length for its revision, checksums.
fn parse_rsdp(body: &[u8], new: bool) -> Result<Vec<u8>, BootError> {
    let need = if new { RSDP_V2_LEN } else { RSDP_V1_LEN };
    let rsdp = body.get(..need).ok_or_else(|| {
        bad(alloc::format!(
            "the ACPI RSDP tag holds {} bytes, fewer than {need}",
            body.len()
        ))
    })?;
    let sum = |bytes: &[u8]| bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    if &rsdp[..8] != b"RSD PTR " || sum(&rsdp[..RSDP_V1_LEN]) != 0 || (new && sum(rsdp) != 0) {
        return Err(bad(
            "the ACPI RSDP the boot loader passed has a bad signature or checksum",
        ));
    }
    Ok(rsdp.to_vec())
}

/// Parses the multiboot2 information at `addr`, handed over with `magic` in EAX.
pub fn parse(magic: u32, addr: u64, mem: &impl PhysMem) -> Result<MultibootInfo, BootError> {
    if magic != BOOTLOADER_MAGIC {
        return Err(bad(alloc::format!(
            "bad multiboot2 magic {magic:#x} (expected {BOOTLOADER_MAGIC:#x})"
        )));
    }
    let block = read_block(addr, mem)?;
    let mut info = MultibootInfo {
        addr,
        occupied: alloc::vec![addr..addr + block.len() as u64],
        ..MultibootInfo::default()
    };
    let mut saw_mmap = false;
    let (mut acpi_old, mut acpi_new) = (None, None);
    for tag in tags(block)? {
        match tag.kind {
            TAG_CMDLINE => info.cmdline = Some(tag_string(tag.body, "the loader command line")?),
            TAG_MODULE => {
                let n = info.modules.len() + 1;
                if n > MAX_MODULES {
                    return Err(bad(alloc::format!(
                        "more than the {MAX_MODULES} modules the loader accepts"
                    )));
                }
                let (Some(start), Some(end)) = (u32_at(tag.body, 0), u32_at(tag.body, 4)) else {
                    return Err(bad(alloc::format!("module {n}'s tag is truncated")));
                };
                let (start, end) = (u64::from(start), u64::from(end));
                if end < start {
                    return Err(bad(alloc::format!(
                        "module {n} ends at {end:#x} before it starts at {start:#x}"
                    )));
                }
                let string = tag_string(&tag.body[8..], &alloc::format!("module {n} string"))?;
                info.occupied.push(start..end);
                info.modules.push(Module { start, end, string });
            }
            TAG_MMAP => {
                info.memory_map = parse_mmap(tag.body)?;
                saw_mmap = true;
            }
            TAG_ACPI_OLD => acpi_old = Some(parse_rsdp(tag.body, false)?),
            TAG_ACPI_NEW => acpi_new = Some(parse_rsdp(tag.body, true)?),
            _ => {}
        }
    }
    if !saw_mmap {
        return Err(bad(
            "the boot loader passed no memory map (multiboot2 tag 6)",
        ));
    }
    if !info
        .memory_map
        .iter()
        .any(|e| e.kind == crate::multiboot::MEMORY_AVAILABLE && e.len > 0)
    {
        return Err(bad("memory map lists no available RAM"));
    }
    // ACPI 2.0's RSDP (it names the 64-bit XSDT) wins over the 1.0 one.
    info.acpi_rsdp = acpi_new.or(acpi_old);
    Ok(info)
}

/// Just the loader's own command line, read before anything else can fail (see
/// `multiboot::command_line`).
pub fn command_line(magic: u32, addr: u64, mem: &impl PhysMem) -> Option<String> {
    if magic != BOOTLOADER_MAGIC {
        return None;
    }
    let block = read_block(addr, mem).ok()?;
    tags(block)
        .ok()?
        .into_iter()
        .find(|t| t.kind == TAG_CMDLINE)
        .and_then(|t| tag_string(t.body, "the loader command line").ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::multiboot::tests::FakeMem;

    pub const INFO_ADDR: u64 = 0x10_000;

    /// The ACPI 2.0 RSDP of QEMU's firmware, with valid checksums.
    pub fn rsdp_v2() -> Vec<u8> {
        let mut r = Vec::from(&b"RSD PTR "[..]);
        r.push(0); // checksum, fixed below
        r.extend_from_slice(b"BOCHS ");
        r.push(2); // revision
        r.extend_from_slice(&0x7fe_1234u32.to_le_bytes()); // RSDT
        r.extend_from_slice(&36u32.to_le_bytes()); // length
        r.extend_from_slice(&0x7fe_5678u64.to_le_bytes()); // XSDT
        r.push(0); // extended checksum, fixed below
        r.extend_from_slice(&[0; 3]);
        let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        r[8] = 0u8.wrapping_sub(sum(&r[..20]));
        r[32] = 0u8.wrapping_sub(sum(&r));
        r
    }

    /// Builds a multiboot2 information block tag by tag, the way GRUB lays it out.
    #[derive(Default)]
    pub struct Builder {
        tags: Vec<(u32, Vec<u8>)>,
    }

    impl Builder {
        pub fn tag(mut self, kind: u32, body: Vec<u8>) -> Self {
            self.tags.push((kind, body));
            self
        }

        pub fn string(self, kind: u32, s: &str) -> Self {
            let mut body = s.as_bytes().to_vec();
            body.push(0);
            self.tag(kind, body)
        }

        pub fn module(self, start: u32, end: u32, s: &str) -> Self {
            let mut body = Vec::new();
            body.extend_from_slice(&start.to_le_bytes());
            body.extend_from_slice(&end.to_le_bytes());
            body.extend_from_slice(s.as_bytes());
            body.push(0);
            self.tag(TAG_MODULE, body)
        }

        pub fn mmap(self, entries: &[(u64, u64, u32)]) -> Self {
            let mut body = Vec::new();
            body.extend_from_slice(&24u32.to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
            for &(base, len, kind) in entries {
                body.extend_from_slice(&base.to_le_bytes());
                body.extend_from_slice(&len.to_le_bytes());
                body.extend_from_slice(&kind.to_le_bytes());
                body.extend_from_slice(&0u32.to_le_bytes());
            }
            self.tag(TAG_MMAP, body)
        }

        /// GRUB on a UEFI machine: command line, loader name, two modules, a memory map with
        /// firmware holes, the ACPI 2.0 RSDP.
        pub fn grub_efi() -> Self {
            Builder::default()
                .string(TAG_CMDLINE, "/boot/astrid-boot.bin debug-exit=0xf4")
                .string(2, "GRUB 2.06")
                .module(
                    0x0100_0000,
                    0x0200_0000,
                    "astrid.img env=ASTRID_NET=none --",
                )
                .module(0x0200_0000, 0x0200_1234, "hello.wasm")
                .mmap(&[
                    (0, 0xa0000, 1),
                    (0x10_0000, 0x7ef_0000, 1),
                    (0x7ff_0000, 0x10000, 3),
                    (0xffc0_0000, 0x40_0000, 2),
                ])
                .tag(TAG_ACPI_NEW, rsdp_v2())
        }

        pub fn bytes(&self) -> Vec<u8> {
            let mut out = alloc::vec![0u8; 8];
            for (kind, body) in self
                .tags
                .iter()
                .chain(core::iter::once(&(TAG_END, Vec::new())))
            {
                out.extend_from_slice(&kind.to_le_bytes());
                out.extend_from_slice(&(8 + body.len() as u32).to_le_bytes());
                out.extend_from_slice(body);
                out.resize(out.len().next_multiple_of(8), 0);
            }
            let total = out.len() as u32;
            out[..4].copy_from_slice(&total.to_le_bytes());
            out
        }

        pub fn mem(&self) -> FakeMem {
            let mut mem = FakeMem::default();
            mem.put(INFO_ADDR, &self.bytes());
            mem
        }
    }

    #[test]
    fn parses_grub_style_information() {
        let b = Builder::grub_efi();
        let info = parse(BOOTLOADER_MAGIC, INFO_ADDR, &b.mem()).unwrap();
        assert_eq!(
            info.cmdline.as_deref(),
            Some("/boot/astrid-boot.bin debug-exit=0xf4")
        );
        assert_eq!(info.modules.len(), 2);
        assert_eq!(info.modules[0].range(), 0x0100_0000..0x0200_0000);
        assert_eq!(info.modules[0].string, "astrid.img env=ASTRID_NET=none --");
        assert_eq!(info.modules[1].len(), 0x1234);
        assert_eq!(info.memory_map.len(), 4);
        assert_eq!(
            info.memory_map[1],
            MemoryMapEntry {
                base: 0x10_0000,
                len: 0x7ef_0000,
                kind: 1
            }
        );
        assert_eq!(info.acpi_rsdp, Some(rsdp_v2()));
        // The whole block and both modules are occupied.
        let total = b.bytes().len() as u64;
        assert_eq!(
            info.occupied,
            [
                INFO_ADDR..INFO_ADDR + total,
                0x0100_0000..0x0200_0000,
                0x0200_0000..0x0200_1234
            ]
        );
        assert_eq!(
            command_line(BOOTLOADER_MAGIC, INFO_ADDR, &b.mem()).as_deref(),
            Some("/boot/astrid-boot.bin debug-exit=0xf4")
        );
    }

    #[test]
    fn the_acpi_2_rsdp_wins_and_1_0_is_taken_alone() {
        let mut v1 = rsdp_v2()[..20].to_vec();
        v1[15] = 0; // revision 0
        v1[8] = v1[8].wrapping_add(2); // keep the checksum: revision went from 2 to 0
        let both = Builder::grub_efi().tag(TAG_ACPI_OLD, v1.clone());
        assert_eq!(
            parse(BOOTLOADER_MAGIC, INFO_ADDR, &both.mem())
                .unwrap()
                .acpi_rsdp,
            Some(rsdp_v2())
        );
        let old = Builder::default()
            .mmap(&[(0x10_0000, 0x100_0000, 1)])
            .tag(TAG_ACPI_OLD, v1.clone());
        assert_eq!(
            parse(BOOTLOADER_MAGIC, INFO_ADDR, &old.mem())
                .unwrap()
                .acpi_rsdp,
            Some(v1)
        );
        let none = Builder::default().mmap(&[(0x10_0000, 0x100_0000, 1)]);
        assert_eq!(
            parse(BOOTLOADER_MAGIC, INFO_ADDR, &none.mem())
                .unwrap()
                .acpi_rsdp,
            None
        );
    }

    /// Every malformed structure is refused with code 12 and a message naming it.
    #[test]
    fn malformed_information_is_refused_by_name() {
        let mut bad_sum = rsdp_v2();
        bad_sum[9] ^= 1;
        let mut truncated_tag = Builder::grub_efi().bytes();
        let len = truncated_tag.len();
        truncated_tag[len - 4..].copy_from_slice(&64u32.to_le_bytes()); // end tag claims 64 bytes
        let mut no_end = Builder::grub_efi().bytes();
        no_end.truncate(no_end.len() - 8);
        let n = no_end.len() as u32;
        no_end[..4].copy_from_slice(&n.to_le_bytes());
        let mut huge = Builder::grub_efi().bytes();
        huge[..4].copy_from_slice(&(2u32 << 20).to_le_bytes());
        let raw = |bytes: Vec<u8>| {
            let mut m = FakeMem::default();
            m.put(INFO_ADDR, &bytes);
            m
        };
        let mmap_ok = [(0x10_0000u64, 0x100_0000u64, 1u32)];
        let cases: Vec<(&str, u32, u64, FakeMem, &str)> = alloc::vec![
            (
                "wrong magic",
                0x2BAD_B002,
                INFO_ADDR,
                Builder::grub_efi().mem(),
                "magic"
            ),
            (
                "misaligned",
                BOOTLOADER_MAGIC,
                INFO_ADDR + 4,
                Builder::grub_efi().mem(),
                "aligned"
            ),
            (
                "unreadable",
                BOOTLOADER_MAGIC,
                0x7000_0000,
                Builder::grub_efi().mem(),
                "not readable"
            ),
            ("too large", BOOTLOADER_MAGIC, INFO_ADDR, raw(huge), "size"),
            (
                "tag past the end",
                BOOTLOADER_MAGIC,
                INFO_ADDR,
                raw(truncated_tag),
                "bad size"
            ),
            (
                "no end tag",
                BOOTLOADER_MAGIC,
                INFO_ADDR,
                raw(no_end),
                "end tag"
            ),
            (
                "no memory map",
                BOOTLOADER_MAGIC,
                INFO_ADDR,
                Builder::default().string(TAG_CMDLINE, "x").mem(),
                "memory map"
            ),
            (
                "no available RAM",
                BOOTLOADER_MAGIC,
                INFO_ADDR,
                Builder::default().mmap(&[(0, 0xa0000, 2)]).mem(),
                "no available RAM"
            ),
            (
                "bad entry size",
                BOOTLOADER_MAGIC,
                INFO_ADDR,
                Builder::default()
                    .tag(TAG_MMAP, alloc::vec![20, 0, 0, 0, 0, 0, 0, 0])
                    .mem(),
                "entry size"
            ),
            (
                "inverted module",
                BOOTLOADER_MAGIC,
                INFO_ADDR,
                Builder::default()
                    .mmap(&mmap_ok)
                    .module(0x50_0000, 0x40_0000, "x")
                    .mem(),
                "before it starts"
            ),
            (
                "unterminated string",
                BOOTLOADER_MAGIC,
                INFO_ADDR,
                Builder::default()
                    .mmap(&mmap_ok)
                    .tag(TAG_CMDLINE, b"abc".to_vec())
                    .mem(),
                "NUL"
            ),
            (
                "non-UTF-8 string",
                BOOTLOADER_MAGIC,
                INFO_ADDR,
                Builder::default()
                    .mmap(&mmap_ok)
                    .tag(TAG_CMDLINE, alloc::vec![0xff, 0])
                    .mem(),
                "UTF-8"
            ),
            (
                "short RSDP",
                BOOTLOADER_MAGIC,
                INFO_ADDR,
                Builder::default()
                    .mmap(&mmap_ok)
                    .tag(TAG_ACPI_NEW, rsdp_v2()[..20].to_vec())
                    .mem(),
                "fewer than 36"
            ),
            (
                "RSDP checksum",
                BOOTLOADER_MAGIC,
                INFO_ADDR,
                Builder::default()
                    .mmap(&mmap_ok)
                    .tag(TAG_ACPI_NEW, bad_sum)
                    .mem(),
                "checksum"
            ),
        ];
        for (name, magic, addr, mem, says) in cases {
            let err = parse(magic, addr, &mem).expect_err(name);
            assert_eq!(err.code, FailureCode::BadMultiboot, "{name}");
            assert!(err.what.contains(says), "{name}: {}", err.what);
        }
    }

    #[test]
    fn unknown_tags_are_skipped_and_padding_respected() {
        // A 13-byte body forces padding before the next tag.
        let b = Builder::default()
            .tag(21, alloc::vec![7; 5])
            .string(TAG_CMDLINE, "odd length cmd")
            .mmap(&[(0x10_0000, 0x100_0000, 1)])
            .module(0x20_0000, 0x20_1000, "app");
        let info = parse(BOOTLOADER_MAGIC, INFO_ADDR, &b.mem()).unwrap();
        assert_eq!(info.cmdline.as_deref(), Some("odd length cmd"));
        assert_eq!(info.modules[0].string, "app");
        assert_eq!(command_line(0x2BAD_B002, INFO_ADDR, &b.mem()), None);
    }
}
