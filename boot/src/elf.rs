//! Validation of the app ELF before hermit-entry touches it.
//! hermit-entry 0.10.3 unwraps, asserts and slices without bounds checks, so a bad module would
//! panic inside it; this module checks every structure it will read and reports a failure
//! code instead (9: not loadable, 10: no HERMIT note or wrong entry version).

use alloc::format;
use alloc::string::String;
use core::ops::Range;

use crate::{BootError, FailureCode};

/// The Hermit entry version this loader implements (kernel 0.11 / hermit-entry 0.10).
pub const HERMIT_ENTRY_VERSION: u8 = 4;
/// Note type of the entry-version note, named `HERMIT`.
pub const NT_HERMIT_ENTRY_VERSION: u32 = 0x5a00;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const SHDR_SIZE: usize = 64;
const DYN_SIZE: usize = 16;
const RELA_SIZE: usize = 24;
const SYM_SIZE: usize = 24;
const STB_WEAK: u8 = 2;
const SHN_UNDEF: u16 = 0;

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_NOTE: u32 = 4;
const SHT_DYNSYM: u32 = 11;
const DT_NEEDED: u64 = 1;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_RELCOUNT: u64 = 0x6fff_fffa;
const R_X86_64_64: u32 = 1;
const R_X86_64_GLOB_DAT: u32 = 6;
const R_X86_64_RELATIVE: u32 = 8;

const FIX_APP: &str =
    "pass a Hermit application ELF (x86_64, static PIE) as the first module (-initrd)";
const FIX_VERSION: &str =
    "rebuild the app against Hermit kernel 0.11 (entry version 4) so it carries a HERMIT note";

/// What the loader needs to know about a valid app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppSummary {
    /// Bytes from the first loadable byte to the end of the last segment in memory.
    pub mem_size: u64,
    /// Link address for an `ET_EXEC` app; `None` for a relocatable (static PIE) one.
    pub fixed_start: Option<u64>,
    /// Entry point relative to the load address (absolute for `ET_EXEC`).
    pub entry: u64,
}

fn bad(what: impl Into<String>) -> BootError {
    BootError::new(FailureCode::BadApp, what, FIX_APP)
}

/// Bounds-checked little-endian reads from the file.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn get(&self, at: usize, len: usize) -> Result<&[u8], BootError> {
        at.checked_add(len)
            .and_then(|end| self.0.get(at..end))
            .ok_or_else(|| {
                bad(format!(
                    "truncated ELF: {len} bytes at offset {at:#x} are missing"
                ))
            })
    }
    fn u16(&self, at: usize) -> Result<u16, BootError> {
        Ok(u16::from_le_bytes(self.get(at, 2)?.try_into().unwrap()))
    }
    fn u32(&self, at: usize) -> Result<u32, BootError> {
        Ok(u32::from_le_bytes(self.get(at, 4)?.try_into().unwrap()))
    }
    fn u64(&self, at: usize) -> Result<u64, BootError> {
        Ok(u64::from_le_bytes(self.get(at, 8)?.try_into().unwrap()))
    }
    /// The records of `size` bytes in the `bytes` bytes at `offset`, 8-byte aligned as
    /// hermit-entry's `plain` casts require (the module itself is page aligned). All of
    /// `bytes` must lie in the file, a partial record at the end included: hermit-entry
    /// slices the whole length before it casts the records.
    fn table(
        &self,
        offset: u64,
        bytes: u64,
        size: usize,
        what: &str,
    ) -> Result<Range<usize>, BootError> {
        let start = usize::try_from(offset).map_err(|_| bad(format!("{what} offset too large")))?;
        let whole = usize::try_from(bytes).map_err(|_| bad(format!("{what} too large")))?;
        let len = whole - whole % size;
        if start % 8 != 0 {
            return Err(bad(format!(
                "{what} at offset {start:#x} is not 8-byte aligned"
            )));
        }
        self.get(start, whole).map_err(|_| {
            bad(format!(
                "{what} ({whole} bytes at offset {start:#x}) lies outside the file"
            ))
        })?;
        Ok(start..start + len)
    }
}

/// One program header, the fields we use.
#[derive(Clone, Copy)]
struct Phdr {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

/// Checks that `elf` is an app hermit-entry can parse and load without panicking.
pub fn check_app(elf: &[u8]) -> Result<AppSummary, BootError> {
    let b = Bytes(elf);
    if elf.len() < 4 || &elf[..4] != b"\x7fELF" {
        return Err(bad("the app module is not an ELF file"));
    }
    if elf.len() < EHDR_SIZE {
        return Err(bad("the app ELF is truncated"));
    }
    if elf[4] != 2 || elf[5] != 1 {
        return Err(bad("the app ELF is not a 64-bit little-endian object"));
    }
    let e_type = b.u16(16)?;
    if e_type != ET_DYN && e_type != ET_EXEC {
        return Err(bad(format!(
            "the app ELF has type {e_type}, not an executable"
        )));
    }
    let machine = b.u16(18)?;
    if machine != EM_X86_64 {
        return Err(bad(format!(
            "the app ELF is for machine {machine}, not x86_64"
        )));
    }
    let entry = b.u64(24)?;
    let (phoff, shoff) = (b.u64(32)?, b.u64(40)?);
    let (phentsize, phnum) = (b.u16(54)?, b.u16(56)?);
    let (shentsize, shnum) = (b.u16(58)?, b.u16(60)?);
    if phnum > 0 && usize::from(phentsize) != PHDR_SIZE {
        return Err(bad("the app ELF has an unexpected program header size"));
    }
    if shnum > 0 && usize::from(shentsize) != SHDR_SIZE {
        return Err(bad("the app ELF has an unexpected section header size"));
    }
    let phs = b.table(phoff, u64::from(phnum) * PHDR_SIZE as u64, PHDR_SIZE, "program header table")?;
    let shs = b.table(shoff, u64::from(shnum) * SHDR_SIZE as u64, SHDR_SIZE, "section header table")?;

    let phdr = |i: usize| -> Result<Phdr, BootError> {
        let at = phs.start + i * PHDR_SIZE;
        Ok(Phdr {
            p_type: b.u32(at)?,
            offset: b.u64(at + 8)?,
            vaddr: b.u64(at + 16)?,
            filesz: b.u64(at + 32)?,
            memsz: b.u64(at + 40)?,
            align: b.u64(at + 48)?,
        })
    };
    let count = usize::from(phnum);
    let mut loads = (0..count)
        .filter_map(|i| phdr(i).ok())
        .filter(|p| p.p_type == PT_LOAD);

    // The entry-version note comes first in importance: a foreign ELF gets code 10, not 9.
    check_entry_version(&b, (0..count).filter_map(|i| phdr(i).ok()))?;

    let first = loads
        .next()
        .ok_or_else(|| bad("the app ELF has no loadable segment"))?;
    let relocatable = e_type == ET_DYN;
    let mut last = first;
    let mut prev_vaddr = first.vaddr;
    for p in core::iter::once(first).chain(loads) {
        if p.vaddr < prev_vaddr {
            return Err(bad("the app's loadable segments are not sorted by address"));
        }
        prev_vaddr = p.vaddr;
        if p.filesz > p.memsz {
            return Err(bad("an app segment is larger in the file than in memory"));
        }
        p.offset
            .checked_add(p.filesz)
            .filter(|&end| end <= elf.len() as u64)
            .ok_or_else(|| bad("an app segment lies outside the file"))?;
        p.vaddr
            .checked_add(p.memsz)
            .ok_or_else(|| bad("an app segment wraps around the address space"))?;
        last = p;
    }
    let end = last.vaddr + last.memsz;
    let mem_size = end
        .checked_sub(first.vaddr)
        .filter(|&s| s > 0)
        .ok_or_else(|| bad("the app's loadable segments are empty"))?;
    // hermit-entry copies each segment to `vaddr - base` in a buffer of `mem_size` bytes, with
    // base 0 for a static PIE: every segment must land inside that buffer.
    let base = if relocatable { 0 } else { first.vaddr };
    for i in 0..count {
        let p = phdr(i)?;
        if p.p_type == PT_LOAD {
            let ok = p
                .vaddr
                .checked_sub(base)
                .and_then(|s| s.checked_add(p.memsz))
                .is_some_and(|e| e <= mem_size);
            if !ok {
                return Err(bad(
                    "an app segment lies outside the memory image (a static PIE must start at 0)",
                ));
            }
        }
    }

    let dynsyms = dynsym_table(&b, &shs)?;
    check_dynamic(
        &b,
        (0..count).filter_map(|i| phdr(i).ok()),
        mem_size,
        &dynsyms,
        relocatable,
    )?;

    Ok(AppSummary {
        mem_size,
        fixed_start: (!relocatable).then_some(first.vaddr),
        entry,
    })
}

/// Finds the `HERMIT` entry-version note the way hermit-entry does (first `PT_NOTE` segment
/// only) and checks that walking the notes cannot panic there.
fn check_entry_version(
    b: &Bytes<'_>,
    mut phdrs: impl Iterator<Item = Phdr>,
) -> Result<(), BootError> {
    let missing = || {
        BootError::new(
            FailureCode::EntryVersion,
            "the app has no HERMIT entry-version note",
            FIX_VERSION,
        )
    };
    let note = phdrs.find(|p| p.p_type == PT_NOTE).ok_or_else(missing)?;
    let start = usize::try_from(note.offset).map_err(|_| bad("note segment offset too large"))?;
    let len = usize::try_from(note.filesz).map_err(|_| bad("note segment too large"))?;
    let seg = b
        .get(start, len)
        .map_err(|_| bad("the app's note segment lies outside the file"))?;
    if start % 4 != 0 || !matches!(note.align, 4 | 8) {
        return Err(bad("the app's note segment is misaligned"));
    }
    let align = note.align as usize;
    let align_up = |v: usize| v.div_ceil(align) * align;
    let mut version = None;
    let mut off = 0usize;
    // hermit-entry iterates while a 12-byte note header remains.
    while seg.len() - off >= 12 {
        let s = Bytes(&seg[off..]);
        let (namesz, descsz, ty) = (s.u32(0)? as usize, s.u32(4)? as usize, s.u32(8)?);
        let name_end = 12usize.checked_add(namesz).filter(|_| namesz >= 1);
        let desc_start = name_end.map(align_up);
        let desc_end = desc_start.and_then(|d| d.checked_add(descsz));
        let next = desc_end.map(align_up).filter(|&n| n <= seg.len() - off);
        let (Some(name_end), Some(desc_start), Some(next)) = (name_end, desc_start, next) else {
            return Err(bad("the app's note segment is malformed"));
        };
        let name = core::str::from_utf8(&seg[off + 12..off + name_end - 1])
            .map_err(|_| bad("the app has a note whose name is not UTF-8"))?;
        if name == "HERMIT" && ty == NT_HERMIT_ENTRY_VERSION && version.is_none() {
            version = Some(
                *seg[off + desc_start..off + desc_start + descsz]
                    .first()
                    .ok_or_else(missing)?,
            );
        }
        off += next;
    }
    match version {
        None => Err(missing()),
        Some(HERMIT_ENTRY_VERSION) => Ok(()),
        Some(v) => Err(BootError::new(
            FailureCode::EntryVersion,
            format!(
                "the app has Hermit entry version {v}; this loader boots version {HERMIT_ENTRY_VERSION}"
            ),
            FIX_VERSION,
        )),
    }
}

/// The symbols of the `.dynsym` section (none without one); checks its bounds.
fn dynsym_table(b: &Bytes<'_>, shs: &Range<usize>) -> Result<Range<usize>, BootError> {
    for at in shs.clone().step_by(SHDR_SIZE) {
        if b.u32(at + 4)? == SHT_DYNSYM {
            let (offset, size) = (b.u64(at + 24)?, b.u64(at + 32)?);
            return b.table(offset, size, SYM_SIZE, "dynamic symbol table");
        }
    }
    Ok(0..0)
}

/// Checks the dynamic section and every relocation hermit-entry will read (and, for a
/// relocatable app, apply). Mirrors goblin's `DynamicInfo`: every entry counts, even after
/// `DT_NULL`, and an address outside the loadable segments becomes offset 0.
fn check_dynamic(
    b: &Bytes<'_>,
    phdrs: impl Iterator<Item = Phdr> + Clone,
    mem_size: u64,
    dynsyms: &Range<usize>,
    relocatable: bool,
) -> Result<(), BootError> {
    let Some(dynamic) = phdrs.clone().find(|p| p.p_type == PT_DYNAMIC) else {
        return Ok(());
    };
    let table = b.table(dynamic.offset, dynamic.filesz, DYN_SIZE, "dynamic section")?;
    let vm_to_offset = |addr: u64| {
        phdrs
            .clone()
            .filter(|p| p.p_type == PT_LOAD && addr >= p.vaddr && addr - p.vaddr < p.memsz)
            .find_map(|p| p.offset.checked_add(addr - p.vaddr))
            .unwrap_or(0)
    };
    let (mut rela, mut relasz) = (0u64, 0u64);
    for at in table.step_by(DYN_SIZE) {
        let (tag, val) = (b.u64(at)?, b.u64(at + 8)?);
        match tag {
            DT_NEEDED => return Err(bad("the app is linked against shared libraries")),
            DT_RELCOUNT if val != 0 => return Err(bad("the app uses REL relocations")),
            DT_RELA => rela = vm_to_offset(val),
            DT_RELASZ => relasz = val,
            _ => {}
        }
    }
    let relas = b.table(rela, relasz, RELA_SIZE, "relocation table")?;
    if !relocatable {
        return Ok(());
    }
    for at in relas.step_by(RELA_SIZE) {
        let (offset, info, addend) = (b.u64(at)?, b.u64(at + 8)?, b.u64(at + 16)?);
        let (ty, sym) = ((info & 0xffff_ffff) as u32, info >> 32);
        if offset.checked_add(8).is_none_or(|end| end > mem_size) {
            return Err(bad(format!(
                "an app relocation at {offset:#x} lies outside the image"
            )));
        }
        match ty {
            R_X86_64_RELATIVE => {}
            R_X86_64_64 | R_X86_64_GLOB_DAT if sym >= (dynsyms.len() / SYM_SIZE) as u64 => {
                return Err(bad("an app relocation names a symbol that does not exist"));
            }
            // hermit-entry asserts that the 8 bytes such a relocation leaves alone are
            // zero (as loaded, after the relocations before it): refuse it rather than
            // replay the load here. Hermit applications have none.
            R_X86_64_64 | R_X86_64_GLOB_DAT
                if undefined_weak(b, dynsyms.start + sym as usize * SYM_SIZE)? =>
            {
                return Err(bad(
                    "an app relocation names an undefined weak symbol, which the loader does not resolve",
                ));
            }
            R_X86_64_GLOB_DAT if addend != 0 => {
                return Err(bad("an app GLOB_DAT relocation has an addend"));
            }
            R_X86_64_64 | R_X86_64_GLOB_DAT => {}
            other => {
                return Err(bad(format!(
                    "the app has an unsupported relocation type {other}"
                )));
            }
        }
    }
    Ok(())
}

/// Whether the symbol at `at` is undefined (`SHN_UNDEF`) and weak (`STB_WEAK`).
fn undefined_weak(b: &Bytes<'_>, at: usize) -> Result<bool, BootError> {
    let info = b.get(at + 4, 1)?[0];
    Ok(info >> 4 == STB_WEAK && b.u16(at + 6)? == SHN_UNDEF)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A minimal static-PIE-shaped ELF: one PT_NOTE with the HERMIT note, one PT_LOAD,
    /// one PT_DYNAMIC with a RELATIVE relocation, a `.dynsym` section header.
    pub struct ElfBuilder {
        pub e_type: u16,
        pub machine: u16,
        pub version: Option<u8>,
        pub note_name: &'static [u8],
        pub vaddr: u64,
        pub memsz: u64,
        pub rel_type: u32,
        pub rel_offset: u64,
        pub needed: bool,
    }

    impl Default for ElfBuilder {
        fn default() -> Self {
            Self {
                e_type: ET_DYN,
                machine: EM_X86_64,
                version: Some(4),
                note_name: b"HERMIT\0",
                vaddr: 0,
                memsz: 0x3000,
                rel_type: R_X86_64_RELATIVE,
                rel_offset: 0x1000,
                needed: false,
            }
        }
    }

    fn p32(v: &mut [u8], at: usize, x: u32) {
        v[at..at + 4].copy_from_slice(&x.to_le_bytes());
    }
    fn p64(v: &mut [u8], at: usize, x: u64) {
        v[at..at + 8].copy_from_slice(&x.to_le_bytes());
    }

    impl ElfBuilder {
        /// Layout: ehdr 0, phdrs 0x40 (3), notes 0x100, dynamic 0x180, rela 0x200,
        /// dynsym 0x240, shdrs 0x300 (2), file size 0x400; the PT_LOAD maps the whole file.
        pub fn build(&self) -> Vec<u8> {
            let mut v = alloc::vec![0u8; 0x400];
            v[..4].copy_from_slice(b"\x7fELF");
            v[4] = 2;
            v[5] = 1;
            v[6] = 1;
            v[7] = 0xff;
            v[16..18].copy_from_slice(&self.e_type.to_le_bytes());
            v[18..20].copy_from_slice(&self.machine.to_le_bytes());
            p64(&mut v, 24, self.vaddr + 0x120);
            p64(&mut v, 32, 0x40);
            p64(&mut v, 40, 0x300);
            v[52..54].copy_from_slice(&64u16.to_le_bytes());
            v[54..56].copy_from_slice(&56u16.to_le_bytes());
            v[56..58].copy_from_slice(&3u16.to_le_bytes());
            v[58..60].copy_from_slice(&64u16.to_le_bytes());
            v[60..62].copy_from_slice(&2u16.to_le_bytes());
            // PT_NOTE
            let mut ph =
                |i: usize, ty: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64, align: u64| {
                    let at = 0x40 + i * 56;
                    p32(&mut v, at, ty);
                    p64(&mut v, at + 8, off);
                    p64(&mut v, at + 16, vaddr);
                    p64(&mut v, at + 24, vaddr);
                    p64(&mut v, at + 32, filesz);
                    p64(&mut v, at + 40, memsz);
                    p64(&mut v, at + 48, align);
                };
            ph(0, PT_NOTE, 0x100, self.vaddr + 0x100, 0x40, 0x40, 4);
            ph(1, PT_LOAD, 0, self.vaddr, 0x400, self.memsz, 0x1000);
            ph(2, PT_DYNAMIC, 0x180, self.vaddr + 0x180, 0x40, 0x40, 8);
            // A GNU note first, then the HERMIT note.
            p32(&mut v, 0x100, 4);
            p32(&mut v, 0x104, 16);
            p32(&mut v, 0x108, 1);
            v[0x10c..0x110].copy_from_slice(b"GNU\0");
            p32(&mut v, 0x110, 6);
            let n = self.note_name.len();
            p32(&mut v, 0x120, n as u32);
            p32(&mut v, 0x124, u32::from(self.version.is_some()));
            p32(&mut v, 0x128, NT_HERMIT_ENTRY_VERSION);
            v[0x12c..0x12c + n].copy_from_slice(self.note_name);
            if let Some(ver) = self.version {
                v[0x12c + n.div_ceil(4) * 4] = ver;
            }
            // Dynamic: RELA, RELASZ, optional NEEDED, NULL.
            let mut d = 0x180;
            for (tag, val) in [(DT_RELA, self.vaddr + 0x200), (DT_RELASZ, 24)] {
                p64(&mut v, d, tag);
                p64(&mut v, d + 8, val);
                d += 16;
            }
            if self.needed {
                p64(&mut v, d, DT_NEEDED);
                d += 16;
            }
            p64(&mut v, d, 0); // DT_NULL
            p64(&mut v, 0x200, self.rel_offset);
            p64(&mut v, 0x208, u64::from(self.rel_type));
            p64(&mut v, 0x210, 0x120);
            // Section 1: .dynsym with one (null) symbol.
            p32(&mut v, 0x340 + 4, SHT_DYNSYM);
            p64(&mut v, 0x340 + 24, 0x240);
            p64(&mut v, 0x340 + 32, 24);
            v
        }
    }

    #[test]
    fn accepts_a_hermit_app() {
        let s = check_app(&ElfBuilder::default().build()).unwrap();
        assert_eq!(
            s,
            AppSummary {
                mem_size: 0x3000,
                fixed_start: None,
                entry: 0x120
            }
        );
    }

    /// The boot_elf fuzz target starts from this app (and one linked at a fixed address).
    #[test]
    fn fuzz_seeds_are_the_test_apps() {
        crate::fuzz_seed::check("boot_elf/static-pie.elf", &ElfBuilder::default().build());
        let fixed = ElfBuilder {
            e_type: ET_EXEC,
            vaddr: 0x40_0000,
            ..Default::default()
        };
        assert!(check_app(&fixed.build()).is_ok());
        crate::fuzz_seed::check("boot_elf/fixed.elf", &fixed.build());
        let abs64 = ElfBuilder {
            rel_type: R_X86_64_64,
            ..Default::default()
        };
        assert!(check_app(&abs64.build()).is_ok());
        crate::fuzz_seed::check("boot_elf/abs64.elf", &abs64.build());
    }

    #[test]
    fn non_elf_is_code_9() {
        for bytes in [&b""[..], b"\0asm\x01\0\0\0", b"\x7fEL"] {
            assert_eq!(check_app(bytes).unwrap_err().code, FailureCode::BadApp);
        }
        let mut v = ElfBuilder::default().build();
        v.truncate(0x30);
        assert_eq!(check_app(&v).unwrap_err().code, FailureCode::BadApp);
    }

    #[test]
    fn wrong_machine_or_type_is_code_9() {
        let e = ElfBuilder {
            machine: 183,
            ..Default::default()
        };
        assert_eq!(check_app(&e.build()).unwrap_err().code, FailureCode::BadApp);
        let e = ElfBuilder {
            e_type: 1,
            ..Default::default()
        };
        assert_eq!(check_app(&e.build()).unwrap_err().code, FailureCode::BadApp);
        let mut v = ElfBuilder::default().build();
        v[4] = 1;
        assert_eq!(check_app(&v).unwrap_err().code, FailureCode::BadApp);
    }

    #[test]
    fn entry_version_is_checked() {
        let e = ElfBuilder {
            version: Some(3),
            ..Default::default()
        };
        let err = check_app(&e.build()).unwrap_err();
        assert_eq!(err.code, FailureCode::EntryVersion);
        assert!(err.what.contains("version 3"));
        let e = ElfBuilder {
            note_name: b"HERMIX\0",
            ..Default::default()
        };
        assert_eq!(
            check_app(&e.build()).unwrap_err().code,
            FailureCode::EntryVersion
        );
        let e = ElfBuilder {
            version: None,
            ..Default::default()
        };
        assert_eq!(
            check_app(&e.build()).unwrap_err().code,
            FailureCode::EntryVersion
        );
    }

    #[test]
    fn malformed_notes_are_code_9() {
        let mut v = ElfBuilder::default().build();
        p32(&mut v, 0x100, 0); // GNU note with namesz 0
        assert_eq!(check_app(&v).unwrap_err().code, FailureCode::BadApp);
        let mut v = ElfBuilder::default().build();
        p32(&mut v, 0x104, 0x1000); // descsz beyond the segment
        assert_eq!(check_app(&v).unwrap_err().code, FailureCode::BadApp);
    }

    #[test]
    fn out_of_bounds_tables_are_code_9() {
        let mut v = ElfBuilder::default().build();
        p64(&mut v, 32, 0x3f8); // program headers past the end
        assert_eq!(check_app(&v).unwrap_err().code, FailureCode::BadApp);
        let mut v = ElfBuilder::default().build();
        p64(&mut v, 40, 0x301); // misaligned section headers
        assert_eq!(check_app(&v).unwrap_err().code, FailureCode::BadApp);
    }

    /// Found by the boot_elf fuzz target: hermit-entry slices a table's whole byte length
    /// (`p_filesz`, `DT_RELASZ`, `sh_size`) before it casts the records, so a length that
    /// is not a multiple of the record size and ends past the file made it panic after
    /// the check had counted only the whole records.
    #[test]
    fn a_partial_record_past_the_end_is_code_9() {
        // The dynamic section (program header 2): 9 bytes at 0x3f8 in a 0x400-byte file.
        let mut v = ElfBuilder::default().build();
        p64(&mut v, 0x40 + 2 * 56 + 8, 0x3f8);
        p64(&mut v, 0x40 + 2 * 56 + 32, 9);
        let e = check_app(&v).unwrap_err();
        assert!(e.what.contains("dynamic section") && e.what.contains("outside the file"), "{}", e.what);
        // The relocation table: 16 bytes (no whole record) at 0x3f8.
        let mut v = ElfBuilder::default().build();
        p64(&mut v, 0x188, 0x3f8);
        p64(&mut v, 0x198, 16);
        let e = check_app(&v).unwrap_err();
        assert!(e.what.contains("relocation table"), "{}", e.what);
        // The dynamic symbol table (section 1): 30 bytes at 0x3f0.
        let mut v = ElfBuilder::default().build();
        p64(&mut v, 0x340 + 24, 0x3f0);
        p64(&mut v, 0x340 + 32, 30);
        let e = check_app(&v).unwrap_err();
        assert!(e.what.contains("dynamic symbol table"), "{}", e.what);
    }

    #[test]
    fn bad_relocations_are_code_9() {
        let e = ElfBuilder {
            rel_type: 37,
            ..Default::default()
        };
        assert!(
            check_app(&e.build())
                .unwrap_err()
                .what
                .contains("relocation type")
        );
        let e = ElfBuilder {
            rel_offset: 0x2ffc,
            ..Default::default()
        };
        assert!(
            check_app(&e.build())
                .unwrap_err()
                .what
                .contains("outside the image")
        );
        let e = ElfBuilder {
            rel_type: R_X86_64_64,
            ..Default::default()
        };
        assert!(check_app(&e.build()).is_ok());
        let e = ElfBuilder {
            needed: true,
            ..Default::default()
        };
        assert!(
            check_app(&e.build())
                .unwrap_err()
                .what
                .contains("shared libraries")
        );
    }

    /// Found reading hermit-entry's loader for the boot_elf fuzz target (which replays
    /// the input in its differential): hermit-entry asserts that the target of a
    /// relocation against an undefined weak symbol is zero, so a nonzero one made it
    /// panic after the check had passed.
    #[test]
    fn a_relocation_against_an_undefined_weak_symbol_is_code_9() {
        let e = ElfBuilder {
            rel_type: R_X86_64_64,
            rel_offset: 0x100,
            ..Default::default()
        };
        let mut v = e.build();
        assert!(check_app(&v).is_ok()); // symbol 0 is local
        v[0x240 + 4] = STB_WEAK << 4;
        let err = check_app(&v).unwrap_err();
        assert_eq!(err.code, FailureCode::BadApp);
        assert!(err.what.contains("undefined weak symbol"), "{}", err.what);
        // Defined (any section but SHN_UNDEF): fine.
        v[0x240 + 6] = 1;
        assert!(check_app(&v).is_ok());
    }

    #[test]
    fn static_pie_must_start_at_zero_but_exec_need_not() {
        let e = ElfBuilder {
            vaddr: 0x20_0000,
            ..Default::default()
        };
        assert_eq!(check_app(&e.build()).unwrap_err().code, FailureCode::BadApp);
        let e = ElfBuilder {
            vaddr: 0x20_0000,
            e_type: ET_EXEC,
            ..Default::default()
        };
        let s = check_app(&e.build()).unwrap();
        assert_eq!(s.fixed_start, Some(0x20_0000));
        assert_eq!(s.entry, 0x20_0120);
    }

    /// The builder's ELF also goes through hermit-entry itself: validation and loader agree.
    #[test]
    fn hermit_entry_loads_what_we_accept() {
        use core::mem::MaybeUninit;
        use hermit_entry::elf::KernelObject;
        let bytes = ElfBuilder::default().build();
        // hermit-entry casts the header in place: give it 8-byte aligned storage.
        let mut words = alloc::vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `words` owns at least `bytes.len()` initialised bytes (rounded up to
        // whole words), u8 has no alignment or validity requirement, and the byte view
        // is the only access to `words` while it lives.
        let aligned: &mut [u8] =
            unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), bytes.len()) };
        aligned.copy_from_slice(&bytes);
        let object = KernelObject::parse(aligned).unwrap();
        let summary = check_app(aligned).unwrap();
        assert_eq!(object.mem_size() as u64, summary.mem_size);
        assert_eq!(object.start_addr(), None);
        let mut memory = alloc::vec![MaybeUninit::<u8>::uninit(); object.mem_size()];
        let loaded = object.load_kernel(&mut memory, 0x60_0000);
        assert_eq!(loaded.entry_point, 0x60_0120);
        assert_eq!(
            loaded.load_info.kernel_image_addr_range,
            0x60_0000..0x60_3000
        );
        // SAFETY: the one PT_LOAD spans the whole of `memory` (file bytes, then zeroed
        // bss), so `load_kernel` initialised every byte, these 8 included (then relocated);
        // `read_unaligned` asks nothing of the address's alignment.
        let reloc = unsafe {
            memory[0x1000..0x1008]
                .as_ptr()
                .cast::<u64>()
                .read_unaligned()
        };
        assert_eq!(reloc, 0x60_0120);
    }
}
