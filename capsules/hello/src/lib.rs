//! The example capsule. Until the engine lands it only has to be a valid component;
//! its export is what the engine will call first.

#![no_std]

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// Returns the answer the example's run is checked against.
#[unsafe(no_mangle)]
pub extern "C" fn answer() -> u32 {
    42
}
