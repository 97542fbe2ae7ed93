//! The multiboot v1 and v2 headers and the 32-bit entry (both protocols enter the same way,
//! told apart by the magic in EAX, which `loader_main` receives): temporary identity map of the first 4 GiB
//! in 2 MiB pages, GDT, PAE, EFER.LME|NXE, paging, far jump to 64-bit code, `loader_main`.
//! Kept minimal because a fault here, before the IDT exists, would reset the machine.

use core::arch::global_asm;

/// Multiboot header flags: bit 0 page-aligned modules (hermit-entry casts the ELF header in
/// place), bit 1 memory information, bit 16 address fields (QEMU refuses a 64-bit ELF without).
pub const HEADER_FLAGS: u32 = (1 << 0) | (1 << 1) | (1 << 16);

global_asm!(
    r#"
    .section .multiboot_header, "a"
    .balign 4
multiboot_header:
    .long {magic}
    .long {flags}
    .long -({magic} + {flags})
    .long multiboot_header      /* header_addr */
    .long __image_start         /* load_addr */
    .long __load_end            /* load_end_addr */
    .long __bss_end             /* bss_end_addr */
    .long _start32              /* entry_addr */

    /* The multiboot2 header (GRUB `multiboot2`, needed under UEFI for the ACPI RSDP): 8-byte
       aligned in the first 32 KiB, every tag 8-byte aligned. */
    .balign 8
multiboot2_header:
    .long {magic2}
    .long 0                     /* architecture: i386 protected mode */
    .long multiboot2_end - multiboot2_header
    .long 0x100000000 - ({magic2} + (multiboot2_end - multiboot2_header))
    /* Information request, optional: the ACPI RSDP (old and new). */
    .short 1, 1
    .long 16
    .long 14, 15
    /* Address tag: load the file at its link address (GRUB need not parse the ELF). */
    .short 2, 0
    .long 24
    .long multiboot2_header, __image_start, __load_end, __bss_end
    /* Entry address tag. */
    .short 3, 0
    .long 12
    .long _start32
    .balign 8
    /* Module alignment: page-aligned modules (hermit-entry casts the ELF header in place). */
    .short 6, 0
    .long 8
    /* End tag. */
    .short 0, 0
    .long 8
multiboot2_end:

    .section .text.boot32, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov esp, offset __boot_stack_top
    mov dword ptr [mb_magic], eax
    mov dword ptr [mb_info], ebx

    /* Long mode and NX are required; without them setting EFER would fault. */
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb .Lno_long_mode
    mov eax, 0x80000001
    cpuid
    test edx, 1 << 29
    jz .Lno_long_mode
    test edx, 1 << 20
    jz .Lno_long_mode

    /* Zero the six temporary table pages (PML4, PDPT, 4 PDs); bss is not trusted to be zero. */
    mov edi, offset boot_pml4
    mov ecx, 6 * 1024
    xor eax, eax
    rep stosd

    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    mov eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 8], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 16], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 24], eax

    /* 2048 PD entries: present, writable, 2 MiB page, covering [0, 4 GiB). */
    mov edi, offset boot_pd
    mov eax, 0x83
    mov ecx, 2048
.Lfill_pd:
    mov dword ptr [edi], eax
    mov dword ptr [edi + 4], 0
    add eax, 0x200000
    add edi, 8
    dec ecx
    jnz .Lfill_pd

    mov eax, cr4
    or eax, 1 << 5                  /* PAE */
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xC0000080             /* EFER */
    rdmsr
    or eax, (1 << 8) | (1 << 11)    /* LME | NXE */
    wrmsr
    mov eax, 0x80000031             /* PG | NE | ET | PE */
    mov cr0, eax

    lgdt [gdt_pointer]
    /* jmp far 0x08:.Llong_mode, encoded by hand: the assembler's Intel syntax has no
       unambiguous 32-bit form of it. */
    .byte 0xea
    .long .Llong_mode
    .word 0x08

    /* No long mode: say so on COM1, exit through debug-exit if asked for, else halt. */
.Lno_long_mode:
    mov esi, offset no_long_mode_msg
.Lputc:
    mov bl, byte ptr [esi]
    test bl, bl
    jz .Ldebug_exit
    mov dx, 0x3fd
    mov ecx, 100000
.Lwait_thre:
    in al, dx
    test al, 0x20
    jnz .Lsend
    dec ecx
    jnz .Lwait_thre
.Lsend:
    mov dx, 0x3f8
    mov al, bl
    out dx, al
    inc esi
    jmp .Lputc

    /* Search the loader command line (multiboot flag 2) for "debug-exit=0xf4". */
.Ldebug_exit:
    cmp dword ptr [mb_magic], 0x2BADB002
    jne .Lhalt32
    mov ebx, dword ptr [mb_info]
    test dword ptr [ebx], 1 << 2
    jz .Lhalt32
    mov esi, dword ptr [ebx + 16]
    test esi, esi
    jz .Lhalt32
.Lscan:
    cmp byte ptr [esi], 0
    je .Lhalt32
    mov edi, offset debug_exit_token
    mov ecx, esi
.Lcompare:
    mov al, byte ptr [edi]
    test al, al
    jz .Lfound
    cmp al, byte ptr [ecx]
    jne .Lnext
    inc edi
    inc ecx
    jmp .Lcompare
.Lnext:
    inc esi
    jmp .Lscan
.Lfound:
    mov dx, 0xf4
    mov eax, 13
    out dx, eax
.Lhalt32:
    cli
    hlt
    jmp .Lhalt32

    .code64
.Llong_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rsp, [rip + __boot_stack_top]
    mov edi, dword ptr [rip + mb_magic]
    mov esi, dword ptr [rip + mb_info]
    call {main}
    ud2

    .section .rodata.boot32, "a"
no_long_mode_msg:
    .ascii "astrid-boot: error: the CPU has no 64-bit long mode or no NX bit \xe2\x80\x94 "
    .asciz "use a 64-bit CPU (QEMU: -cpu qemu64 or max)\n"
debug_exit_token:
    .asciz "debug-exit=0xf4"

    .section .data.boot32, "aw"
    .balign 16
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08: 64-bit code, ring 0 */
    .quad 0x00CF92000000FFFF    /* 0x10: data, ring 0 */
boot_gdt_end:
    .balign 8
gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt
mb_magic:
    .long 0
mb_info:
    .long 0

    .section .bss.boot32, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
    .global __boot_stack_bottom
__boot_stack_bottom:
    .skip 64 * 1024
    .global __boot_stack_top
__boot_stack_top:
    .text
"#,
    magic = const astrid_boot::multiboot::HEADER_MAGIC,
    magic2 = const astrid_boot::multiboot2::HEADER_MAGIC,
    flags = const HEADER_FLAGS,
    main = sym crate::flow::loader_main,
);
