//! The example capsule: a tour of what a capsule can do in astrid.img, written with the
//! unmodified Astrid SDK 0.7.2. Every host call it makes is a line in the audit log.

use astrid_sdk::astrid_sys::astrid::io::poll::poll;
use astrid_sdk::astrid_sys::astrid::ipc::host as wit_ipc;
use astrid_sdk::prelude::*;
use std::time::Duration;

#[derive(Default)]
pub struct Hello;

#[capsule]
impl Hello {
    #[astrid::run]
    fn run(&self) -> Result<(), SysError> {
        log::info("hello: running in astrid.img");

        let bytes = runtime::random_bytes(8)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        log::info(format!("hello: 8 random bytes: {hex}"));

        // A counter that survives reboots when the run command is given --kv-dir.
        let visits = kv::get_bytes_opt("visits")?.and_then(|v| String::from_utf8(v).ok()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
        kv::set_bytes("visits", visits.to_string().as_bytes())?;
        log::info(format!("hello: kv says this is visit {visits}"));

        // Publish to ourselves and wait for it on the subscription's pollable.
        let sub = wit_ipc::subscribe("hello.*").map_err(|e| SysError::HostError(format!("subscribe: {e:?}")))?;
        let ready = sub.subscribe_readiness();
        ipc::publish("hello.greeting", "hi from the bus")?;
        poll(&[&ready]).map_err(|e| SysError::HostError(format!("poll: {e:?}")))?;
        let envelope = sub.poll().map_err(|e| SysError::HostError(format!("ipc poll: {e:?}")))?;
        for m in &envelope.messages {
            log::info(format!("hello: ipc {} -> {:?}", m.topic, m.payload));
        }

        // A short sleep: it still goes through the host's wait primitive (and is
        // audited like every call) without making the whole boot wait for it.
        let started = time::monotonic();
        time::sleep(Duration::from_millis(5))?;
        log::info(format!("hello: slept {} ms", (time::monotonic() - started).as_millis()));

        log::info("hello: done");
        Ok(())
    }
}
