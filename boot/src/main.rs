//! astrid-boot: the multiboot (v1 and v2) loader that boots a Hermit application ELF (astrid.img).
//! This file is the boot flow on the machine; `machine/` holds the entry code and hardware
//! access, and every decision comes from the host-tested `astrid_boot` library.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod machine;

#[cfg(target_os = "none")]
mod flow {
    use alloc::boxed::Box;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::mem::MaybeUninit;
    use core::num::{NonZeroU16, NonZeroU64};
    use core::ops::Range;
    use core::panic::PanicInfo;
    use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use astrid_boot::cmdline::{self, Capsule};
    use astrid_boot::fdt::{self, FdtParams};
    use astrid_boot::multiboot::{self, PhysMem};
    use astrid_boot::{BootError, FailureCode, MIB, elf, memory, paging};
    use hermit_entry::boot_info::{BootInfo, HardwareInfo, PlatformInfo, RawBootInfo};
    use hermit_entry::elf::KernelObject;
    use linked_list_allocator::LockedHeap;

    use crate::machine::handoff::{self, Entry};
    use crate::machine::phys::LowMemory;
    use crate::machine::{exit, idt, serial, tsc};
    use crate::say;

    /// The loader heap: device tree, command line, boot info and final page tables. It lies in
    /// the loader's bss, below the app, so it survives into the kernel.
    const ARENA_SIZE: usize = 1 << 20;
    #[repr(C, align(4096))]
    struct Arena([MaybeUninit<u8>; ARENA_SIZE]);
    static mut ARENA: Arena = Arena([MaybeUninit::uninit(); ARENA_SIZE]);

    #[global_allocator]
    static HEAP: LockedHeap = LockedHeap::empty();

    /// The kernel's boot stack (kernel 0.11 `KERNEL_STACK_SIZE`).
    const KERNEL_STACK_SIZE: usize = 0x8000;
    #[repr(C, align(4096))]
    struct KernelStack([u8; KERNEL_STACK_SIZE]);
    static mut KERNEL_STACK: KernelStack = KernelStack([0; KERNEL_STACK_SIZE]);

    /// The failure code a panic maps to: 9 while hermit-entry parses or loads the app (its
    /// asserts fire on ELF files our checks let through), 13 otherwise.
    static PANIC_CODE: AtomicU32 = AtomicU32::new(FailureCode::Other as u32);

    unsafe extern "C" {
        static __image_start: u8;
        static __bss_end: u8;
    }

    /// Called by the entry code in 64-bit mode with the multiboot registers.
    #[unsafe(no_mangle)]
    pub extern "C" fn loader_main(magic: u32, info: u32) -> ! {
        serial::init();
        idt::install();
        // SAFETY: runs once, before the first allocation; the arena is used by nothing else.
        unsafe {
            HEAP.lock().init((&raw mut ARENA).cast::<u8>(), ARENA_SIZE);
        }
        match boot(magic, u64::from(info)) {
            Ok(entry) => handoff::enter(&entry),
            Err(error) => exit::report(&error),
        }
    }

    fn loader_image() -> Range<u64> {
        (&raw const __image_start) as u64..(&raw const __bss_end) as u64
    }

    fn range_of<T: ?Sized>(value: &T) -> Range<u64> {
        let start = value as *const T as *const u8 as u64;
        start..start + core::mem::size_of_val(value) as u64
    }

    /// Everything up to the jump; any error ends the boot with its failure code.
    fn boot(magic: u32, info_addr: u64) -> Result<Entry, BootError> {
        let mem = LowMemory;
        let loader_cmdline = multiboot::command_line_any(magic, info_addr, &mem);
        exit::set_debug_exit(loader_cmdline.as_deref().and_then(cmdline::debug_exit_port));

        let info = multiboot::parse_any(magic, info_addr, &mem)?;
        memory::check_modules(&info.memory_map, &info.modules)?;
        let (app, capsule_modules) = info.modules.split_first().ok_or_else(|| {
            BootError::new(
                FailureCode::NoApp,
                "no app module: the boot loader passed no multiboot modules",
                "pass the Hermit app ELF as the first module (QEMU: -initrd \"app.elf [args]\")",
            )
        })?;
        let app_path = cmdline::split_module_string(&app.string).0;
        let app_name = cmdline::basename(app_path);
        let app_bytes = mem.bytes(app.start, app.len()).ok_or_else(|| {
            BootError::new(
                FailureCode::BadMultiboot,
                format!("the app module at {:#x} is not readable", app.start),
                "place modules below 4 GiB",
            )
        })?;
        if app.start % 8 != 0 {
            // hermit-entry casts the ELF header in place; the header's flag 0 asks for pages.
            return Err(BootError::new(
                FailureCode::BadMultiboot,
                format!("the app module at {:#x} is not 8-byte aligned", app.start),
                "use a boot loader that honours the multiboot page-align flag",
            ));
        }
        let object = parse_app(app_bytes)?;
        let mem_size = object.mem_size() as u64;

        let ram = memory::usable_ram(&info.memory_map);
        let loader = loader_image();
        let mut occupied = info.occupied.clone();
        occupied.push(loader.clone());
        // Capsules the boot loader put below 2 MiB move up, where the kernel maps them.
        let ranges: Vec<Range<u64>> = capsule_modules.iter().map(|m| m.range()).collect();
        let moved = memory::relocate_low_modules(&ram, &occupied, &ranges)?;
        let mut capsules: Vec<Capsule<'_>> = Vec::with_capacity(capsule_modules.len());
        for (m, to) in capsule_modules.iter().zip(moved) {
            let addr = match to {
                Some(to) => {
                    // SAFETY: both ranges lie in RAM under the boot identity map of [0, 4 GiB);
                    // the destination is above everything occupied, so nothing else lives
                    // there and it does not overlap the source, which starts below 2 MiB.
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            m.start as *const u8,
                            to as *mut u8,
                            m.len() as usize,
                        )
                    };
                    occupied.push(to..to + m.len());
                    to
                }
                None => m.start,
            };
            capsules.push(Capsule {
                addr,
                len: m.len(),
                name: cmdline::basename(cmdline::split_module_string(&m.string).0),
            });
        }
        let load = memory::place_app(&ram, &occupied, mem_size, object.start_addr())?;
        let nodes = memory::select_memory_nodes(&ram, load);
        let report = memory::check_memory(&nodes, load, mem_size)?;
        let ram_mib = nodes.iter().map(|r| r.end - r.start).sum::<u64>() / MIB;
        let command_line = cmdline::kernel_command_line(&app.string, &capsules, ram_mib)?;
        // The RSDP copy goes to the loader heap, which stays mapped and untouched.
        let rsdp: Option<&'static [u8]> = info.acpi_rsdp.as_ref().map(|r| &*Vec::leak(r.clone()));

        let tsc_khz = tsc::calibrate_khz();
        let command_line: &'static str = String::leak(command_line);
        let fdt: &'static [u8] = Vec::leak(fdt::build(&FdtParams {
            memory: &nodes,
            bootargs: command_line,
            tsc_khz,
            rsdp: rsdp.map(range_of),
        })?);

        // SAFETY: [load, load + mem_size) is RAM (placement checked it), identity-mapped below
        // 4 GiB, and above everything the loader and boot loader use, so nothing aliases it.
        let image = unsafe {
            core::slice::from_raw_parts_mut(load as *mut MaybeUninit<u8>, mem_size as usize)
        };
        let loaded = with_panic_code(FailureCode::BadApp, || object.load_kernel(image, load));

        let ram_range = nodes.first().map_or(0, |r| r.start)..nodes.last().map_or(0, |r| r.end);
        let boot_info = BootInfo {
            hardware_info: HardwareInfo {
                phys_addr_range: ram_range.clone(),
                serial_port_base: NonZeroU16::new(serial::COM1),
                device_tree: NonZeroU64::new(fdt.as_ptr() as u64),
            },
            load_info: loaded.load_info,
            platform_info: PlatformInfo::Multiboot {
                command_line: Some(command_line),
                multiboot_info_addr: NonZeroU64::new(info.addr)
                    .expect("multiboot::parse rejects a zero address"),
            },
        };
        let raw: &'static RawBootInfo = Box::leak(Box::new(RawBootInfo::from(boot_info)));
        let stack = (&raw const KERNEL_STACK) as u64;

        let must_map = [
            loader,
            load..load + mem_size,
            range_of(fdt),
            range_of(raw),
            range_of(command_line),
            stack..stack + KERNEL_STACK_SIZE as u64,
        ];
        let pml4 = handoff::build_page_tables(&paging::identity_frames(&ram), &must_map)?;

        let tsc = tsc_khz.map_or(String::from("not calibrated"), |k| format!("{k} kHz"));
        say!(
            "app {app_name} ({} bytes at {:#x}) loaded at {load:#x} ({mem_size} bytes), entry {:#x}; \
             capsules: {}; RAM {ram_mib} MiB ({:#x}..{:#x}), {} MiB free for the kernel; TSC {tsc}; {}",
            app.len(),
            app.start,
            loaded.entry_point,
            cmdline::describe_capsules(&capsules),
            ram_range.start,
            ram_range.end,
            report.free / MIB,
            match rsdp {
                Some(r) => format!("ACPI RSDP from the boot loader at {:#x}", r.as_ptr() as u64),
                None => String::from("ACPI RSDP left to the kernel's search"),
            },
        );
        Ok(Entry {
            pml4,
            entry_point: loaded.entry_point,
            boot_info: raw as *const RawBootInfo as u64,
            stack_low: stack,
        })
    }

    /// Validates the app ELF, then lets hermit-entry parse it (its panics count as code 9).
    fn parse_app(bytes: &[u8]) -> Result<KernelObject<'_>, BootError> {
        let summary = elf::check_app(bytes)?;
        let object =
            with_panic_code(FailureCode::BadApp, || KernelObject::parse(bytes)).map_err(|e| {
                let text = format!("{e}");
                let code = if text.contains("entry version") {
                    FailureCode::EntryVersion
                } else {
                    FailureCode::BadApp
                };
                BootError::new(
                    code,
                    format!("hermit-entry rejects the app: {text}"),
                    "pass a Hermit application ELF built for kernel 0.11",
                )
            })?;
        if object.mem_size() as u64 != summary.mem_size {
            return Err(BootError::new(
                FailureCode::Other,
                "the loader and hermit-entry disagree on the app's size",
                "this is a loader bug; please report it with this line",
            ));
        }
        Ok(object)
    }

    /// Runs `f` with panics mapped to `code`.
    fn with_panic_code<T>(code: FailureCode, f: impl FnOnce() -> T) -> T {
        PANIC_CODE.store(code.value(), Ordering::Relaxed);
        let result = f();
        PANIC_CODE.store(FailureCode::Other.value(), Ordering::Relaxed);
        result
    }

    #[panic_handler]
    fn panic(info: &PanicInfo<'_>) -> ! {
        static PANICKING: AtomicBool = AtomicBool::new(false);
        if PANICKING.swap(true, Ordering::Relaxed) {
            exit::fail(FailureCode::Other);
        }
        let (code, fix) = if PANIC_CODE.load(Ordering::Relaxed) == FailureCode::BadApp.value() {
            (
                FailureCode::BadApp,
                "the app ELF is malformed; pass a Hermit application ELF built for kernel 0.11",
            )
        } else {
            (
                FailureCode::Other,
                "this is a loader bug; please report it with this line",
            )
        };
        match info.location() {
            Some(at) => say!("error: panic at {at}: {} — {fix}", info.message()),
            None => say!("error: panic: {} — {fix}", info.message()),
        }
        exit::fail(code)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "astrid-boot is a bare-metal multiboot image: build it with \
         `cargo build --release --target x86_64-unknown-none` (see boot/README.md)"
    );
    std::process::exit(2);
}
