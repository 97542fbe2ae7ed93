//! `astrid:sys@1.0.0`: clocks, a cancellable sleep, host-seeded randomness, logging,
//! configuration, caller context and capability queries — each audited like io.
//! Randomness never comes from the guest: TCG has no entropy and kernel 0.11 then
//! returns zeros, so the host hands a seed through the boot path (`ASTRID_SEED`).

pub mod random;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use random::{Seed, SeedError};

use crate::engine::state::CapsuleState;
use crate::io::astrid::sys::host::{CallerContext, CapabilityCheckRequest, CapabilityCheckResponse, ErrorCode, Host, LogLevel};
use crate::io::{Counts, audit};
use crate::wait::{self, WaitError};

/// Longest `sleep-ns` (the contract's 60 s).
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Most bytes one `random-bytes` returns.
pub const MAX_RANDOM: u64 = 4096;

/// Where the monotonic clock starts: the image's first use of it.
fn epoch() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn error_text(e: &ErrorCode) -> String {
    format!("{e:?}")
}

impl Host for CapsuleState {
    fn get_config(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, ErrorCode>> {
        let started = Instant::now();
        // Keys under `astrid.` belong to the runtime, not to capsule configuration.
        let result = if key.starts_with("astrid.") {
            Err(ErrorCode::ConfigKeyReserved)
        } else {
            Ok(self.config.get(&key).cloned())
        };
        audit(self, "astrid:sys/host.get-config", started, Counts::default(), result.as_ref().err().map(error_text).as_deref());
        Ok(result)
    }

    fn get_caller(&mut self) -> wasmtime::Result<Result<CallerContext, ErrorCode>> {
        let started = Instant::now();
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let context = CallerContext {
            principal: Some(self.principal.clone()),
            source_id: self.capsule.clone(),
            timestamp: ms.to_string(),
        };
        audit(self, "astrid:sys/host.get-caller", started, Counts::default(), None);
        Ok(Ok(context))
    }

    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        let started = Instant::now();
        let level = match level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        // One labelled line per message: a capsule cannot start a console line itself.
        let text: String = message.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
        println!("[{}] {level}: {text}", self.capsule);
        let counts = Counts { bytes: Some(message.len() as u64), ..Counts::default() };
        audit(self, "astrid:sys/host.log", started, counts, None);
        Ok(())
    }

    fn signal_ready(&mut self) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.ready_signalled = true;
        audit(self, "astrid:sys/host.signal-ready", started, Counts::default(), None);
        Ok(())
    }

    fn clock_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
    }

    fn clock_monotonic_ns(&mut self) -> wasmtime::Result<u64> {
        Ok(u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn sleep_ns(&mut self, duration_ns: u64) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        let duration = Duration::from_nanos(duration_ns);
        let result = if duration > MAX_SLEEP {
            Err(ErrorCode::TooLarge)
        } else {
            match wait::wait_any(&[], &self.cancel, Some(started + duration)) {
                Err(WaitError::TimedOut) => Ok(()),
                Err(WaitError::Cancelled) => Err(ErrorCode::Cancelled),
                Ok(_) => unreachable!("a wait on no sources ends by deadline or cancellation"),
            }
        };
        audit(self, "astrid:sys/host.sleep-ns", started, Counts::default(), result.as_ref().err().map(error_text).as_deref());
        Ok(result)
    }

    fn random_bytes(&mut self, length: u64) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        let started = Instant::now();
        let result = if length > MAX_RANDOM {
            Err(ErrorCode::TooLarge)
        } else {
            random::bytes(length as usize).map_err(|e| ErrorCode::Unknown(e.to_string()))
        };
        let counts = Counts { bytes: Some(result.as_ref().map(|b| b.len() as u64).unwrap_or(0)), ..Counts::default() };
        audit(self, "astrid:sys/host.random-bytes", started, counts, result.as_ref().err().map(error_text).as_deref());
        Ok(result)
    }

    fn check_capsule_capability(&mut self, request: CapabilityCheckRequest) -> wasmtime::Result<Result<CapabilityCheckResponse, ErrorCode>> {
        let started = Instant::now();
        let allowed = self.capabilities.iter().any(|c| *c == request.capability);
        audit(self, "astrid:sys/host.check-capsule-capability", started, Counts::default(), None);
        Ok(Ok(CapabilityCheckResponse { allowed }))
    }

    fn enumerate_capabilities(&mut self) -> wasmtime::Result<Vec<String>> {
        let started = Instant::now();
        let list = self.capabilities.clone();
        audit(self, "astrid:sys/host.enumerate-capabilities", started, Counts::default(), None);
        Ok(list)
    }
}
