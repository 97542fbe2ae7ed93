//! TSC frequency calibration against PIT channel 2 (the speaker channel, gated via port 0x61),
//! so the kernel gets `/hermit,tsc` instead of guessing (qboot gives it nothing else).

use core::arch::x86_64::_rdtsc;

use super::{inb, outb};

const PIT_HZ: u64 = 1_193_182;
/// About 10 ms of PIT ticks.
const TICKS: u16 = 11_932;
/// Plausible TSC rates; anything else means the measurement went wrong.
const KHZ_RANGE: core::ops::RangeInclusive<u64> = 100_000..=20_000_000;

/// Measures the TSC rate in kHz; `None` when there is no working PIT.
pub fn calibrate_khz() -> Option<u32> {
    let saved = inb(0x61);
    // Gate off and speaker off while programming channel 2: mode 0, lobyte/hibyte, binary.
    outb(0x61, saved & !0x03);
    outb(0x43, 0b1011_0000);
    outb(0x42, TICKS as u8);
    outb(0x42, (TICKS >> 8) as u8);
    // Gate on: the count starts; OUT2 (port 0x61 bit 5) rises when it reaches zero.
    outb(0x61, (saved & !0x02) | 0x01);
    // SAFETY: RDTSC exists on every x86_64 CPU.
    let start = unsafe { _rdtsc() };
    let mut done = false;
    // Bounded: a machine without a PIT must not hang here.
    for _ in 0..50_000_000u32 {
        if inb(0x61) & 0x20 != 0 {
            done = true;
            break;
        }
    }
    // SAFETY: as above.
    let end = unsafe { _rdtsc() };
    outb(0x61, saved);
    let khz = end.checked_sub(start)? * PIT_HZ / (u64::from(TICKS) * 1000);
    (done && KHZ_RANGE.contains(&khz)).then_some(khz as u32)
}
