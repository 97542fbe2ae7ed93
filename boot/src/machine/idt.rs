//! A minimal 64-bit IDT for the loader's own run: every CPU exception prints its vector and
//! fails with code 13, so a loader bug shows as a message instead of a triple fault.
//! The kernel installs its own IDT; this one only lives until the jump.

use core::arch::{asm, global_asm};
use core::ptr::addr_of;

use astrid_boot::FailureCode;

use super::exit;

// One stub per vector pushes a uniform frame (error code or 0, then the vector number).
global_asm!(
    r#"
    .code64
    .section .text.exceptions, "ax"
exception_0:
    push 0
    push 0
    jmp exception_common
exception_1:
    push 0
    push 1
    jmp exception_common
exception_2:
    push 0
    push 2
    jmp exception_common
exception_3:
    push 0
    push 3
    jmp exception_common
exception_4:
    push 0
    push 4
    jmp exception_common
exception_5:
    push 0
    push 5
    jmp exception_common
exception_6:
    push 0
    push 6
    jmp exception_common
exception_7:
    push 0
    push 7
    jmp exception_common
exception_8:
    push 8
    jmp exception_common
exception_9:
    push 0
    push 9
    jmp exception_common
exception_10:
    push 10
    jmp exception_common
exception_11:
    push 11
    jmp exception_common
exception_12:
    push 12
    jmp exception_common
exception_13:
    push 13
    jmp exception_common
exception_14:
    push 14
    jmp exception_common
exception_15:
    push 0
    push 15
    jmp exception_common
exception_16:
    push 0
    push 16
    jmp exception_common
exception_17:
    push 17
    jmp exception_common
exception_18:
    push 0
    push 18
    jmp exception_common
exception_19:
    push 0
    push 19
    jmp exception_common
exception_20:
    push 0
    push 20
    jmp exception_common
exception_21:
    push 21
    jmp exception_common
exception_22:
    push 0
    push 22
    jmp exception_common
exception_23:
    push 0
    push 23
    jmp exception_common
exception_24:
    push 0
    push 24
    jmp exception_common
exception_25:
    push 0
    push 25
    jmp exception_common
exception_26:
    push 0
    push 26
    jmp exception_common
exception_27:
    push 0
    push 27
    jmp exception_common
exception_28:
    push 0
    push 28
    jmp exception_common
exception_29:
    push 29
    jmp exception_common
exception_30:
    push 30
    jmp exception_common
exception_31:
    push 0
    push 31
    jmp exception_common
exception_common:
    mov rdi, [rsp]          /* vector */
    mov rsi, [rsp + 8]      /* error code */
    mov rdx, [rsp + 16]     /* rip */
    mov rcx, cr2
    and rsp, -16
    call {handler}
    ud2

    .section .rodata.exceptions, "a"
    .balign 8
    .global exception_stubs
exception_stubs:
    .quad exception_0
    .quad exception_1
    .quad exception_2
    .quad exception_3
    .quad exception_4
    .quad exception_5
    .quad exception_6
    .quad exception_7
    .quad exception_8
    .quad exception_9
    .quad exception_10
    .quad exception_11
    .quad exception_12
    .quad exception_13
    .quad exception_14
    .quad exception_15
    .quad exception_16
    .quad exception_17
    .quad exception_18
    .quad exception_19
    .quad exception_20
    .quad exception_21
    .quad exception_22
    .quad exception_23
    .quad exception_24
    .quad exception_25
    .quad exception_26
    .quad exception_27
    .quad exception_28
    .quad exception_29
    .quad exception_30
    .quad exception_31
    .text
"#,
    handler = sym exception,
);

unsafe extern "C" {
    static exception_stubs: [u64; 32];
}

/// Gate descriptors: 32 vectors of 16 bytes.
#[repr(C, align(16))]
struct Idt([u64; 64]);

static mut IDT: Idt = Idt([0; 64]);

#[repr(C, packed)]
struct IdtPointer {
    limit: u16,
    base: u64,
}

/// Fills and loads the IDT.
pub fn install() {
    let mut gates = [0u64; 64];
    // SAFETY: `exception_stubs` is the constant table defined in the assembly above.
    let stubs = unsafe { &*addr_of!(exception_stubs) };
    for (vector, &stub) in stubs.iter().enumerate() {
        // Interrupt gate, present, ring 0, selector 0x08, no IST.
        gates[2 * vector] =
            (stub & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((stub >> 16) & 0xffff) << 48;
        gates[2 * vector + 1] = stub >> 32;
    }
    // SAFETY: runs once, single-threaded, before anything can raise an exception we handle;
    // the table lives in the loader's bss for as long as the loader runs.
    unsafe {
        IDT = Idt(gates);
        let pointer = IdtPointer {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: (&raw const IDT) as u64,
        };
        asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags));
    }
}

const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 error",
    "alignment check",
    "machine check",
    "SIMD error",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

extern "C" fn exception(vector: u64, error: u64, rip: u64, cr2: u64) -> ! {
    let name = NAMES.get(vector as usize).copied().unwrap_or("unknown");
    crate::say!(
        "error: CPU exception {vector} ({name}) at rip {rip:#x}, error code {error:#x}, cr2 {cr2:#x} \u{2014} \
         this is a loader bug; please report it with this line"
    );
    exit::fail(FailureCode::Other)
}
