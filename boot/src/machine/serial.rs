//! Output on the first serial port (COM1, 0x3f8), the console of QEMU `-serial stdio` and of
//! most bare-metal setups. Every line starts with `astrid-boot: `.

use core::fmt::{self, Write};

use super::{inb, outb};

/// COM1's I/O base, also handed to the kernel as its console.
pub const COM1: u16 = 0x3f8;

/// Sets 115200 baud, 8N1, FIFOs on, no interrupts.
pub fn init() {
    outb(COM1 + 1, 0x00); // no interrupts
    outb(COM1 + 3, 0x80); // DLAB: the next two writes set the divisor
    outb(COM1, 0x01); // 115200 baud
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); // 8 bits, no parity, one stop bit
    outb(COM1 + 2, 0xc7); // FIFOs on and cleared
    outb(COM1 + 4, 0x03); // DTR, RTS
}

fn put(byte: u8) {
    // Bounded wait for the transmitter: a missing UART must not hang the loader.
    for _ in 0..100_000 {
        if inb(COM1 + 5) & 0x20 != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    outb(COM1, byte);
}

/// The serial port as a `fmt::Write` sink.
pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(put);
        Ok(())
    }
}

/// Prints one `astrid-boot: ` line.
pub fn say(args: fmt::Arguments<'_>) {
    let _ = writeln!(Serial, "astrid-boot: {args}");
}

/// Prints one line on the serial console, prefixed with `astrid-boot: `.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::machine::serial::say(format_args!($($arg)*)) };
}
