//! sdk-hello: an Astrid SDK 0.7.2 capsule with a background `run` that logs and
//! round-trips a value through the key-value store.

use astrid_sdk::prelude::*;

#[derive(Default)]
pub struct SdkHello;

#[capsule]
impl SdkHello {
    #[astrid::run]
    fn run(&self) -> Result<(), SysError> {
        log::info("sdk-hello: started");
        kv::set_bytes("greeting", b"hello from the Astrid SDK")?;
        let back = kv::get_bytes("greeting")?;
        log::info(format!("sdk-hello: kv round trip: {}", String::from_utf8_lossy(&back)));
        Ok(())
    }
}
