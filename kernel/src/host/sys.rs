//! `astrid:sys@1.0.0`: clocks, a cancellable sleep, host-seeded randomness, logging,
//! configuration, caller context and capability queries.

use std::time::{Duration, Instant};

use super::bindings::astrid::sys::host::{CallerContext, CapabilityCheckRequest, CapabilityCheckResponse, ErrorCode, Host, LogLevel};
use super::context::{SysCtx, View};
use super::envelope::host_fns;
use crate::sys::{self, MAX_RANDOM, MAX_SLEEP, random};
use crate::wait::{self, WaitError};

pub type SysView<'a> = View<'a, SysCtx>;

/// Configuration keys under this prefix belong to the runtime, not to capsules.
const RESERVED_CONFIG_PREFIX: &str = "astrid.";

host_fns! { impl Host for SysView<'_> as "astrid:sys/host" {
    fn get_config(cx, key: String) -> Result<Option<String>, ErrorCode> {
        Ok(if key.starts_with(RESERVED_CONFIG_PREFIX) {
            Err(ErrorCode::ConfigKeyReserved)
        } else {
            Ok(cx.pkg.config.get(&key).cloned())
        })
    }

    fn get_caller(cx) -> Result<CallerContext, ErrorCode> {
        let id = &cx.core.identity;
        Ok(Ok(CallerContext {
            principal: Some(id.principal.to_string()),
            source_id: id.capsule.to_string(),
            timestamp: sys::wall_clock_ms().to_string(),
        }))
    }

    fn log(cx, level: LogLevel, message: String) -> () {
        let level = match level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        let (shown, more) = sys::clip_log(&message);
        // The console's one path: the message cannot start a line of its own.
        say!("[{}] {level}: {shown}{more}", cx.core.identity.capsule);
        cx.core.moved(message.len() as u64);
        Ok(())
    }

    fn signal_ready(cx) -> () {
        let _ = cx;
        Ok(())
    }

    fn clock_ms(cx) -> u64 {
        let _ = cx;
        Ok(sys::wall_clock_ms())
    }

    fn clock_monotonic_ns(cx) -> u64 {
        let _ = cx;
        Ok(sys::monotonic_ns())
    }

    fn sleep_ns(cx, duration_ns: u64) -> Result<(), ErrorCode> {
        let duration = Duration::from_nanos(duration_ns);
        if duration > MAX_SLEEP {
            return Ok(Err(ErrorCode::TooLarge));
        }
        Ok(match wait::wait_any(&[], &cx.core.cancel, Some(Instant::now() + duration)) {
            Err(WaitError::TimedOut) => Ok(()),
            Err(WaitError::Cancelled) => {
                cx.core.cancelled();
                Err(ErrorCode::Cancelled)
            }
            Ok(_) => unreachable!("a wait on no sources ends by deadline or cancellation"),
        })
    }

    fn random_bytes(cx, length: u64) -> Result<Vec<u8>, ErrorCode> {
        if length > MAX_RANDOM {
            return Ok(Err(ErrorCode::TooLarge));
        }
        let result = random::bytes(length as usize).map_err(|e| ErrorCode::Unknown(e.to_string()));
        cx.core.moved(result.as_ref().map_or(0, |b| b.len() as u64));
        Ok(result)
    }

    fn check_capsule_capability(cx, request: CapabilityCheckRequest) -> Result<CapabilityCheckResponse, ErrorCode> {
        let allowed = cx.pkg.capabilities.contains(&request.capability);
        Ok(Ok(CapabilityCheckResponse { allowed }))
    }

    fn enumerate_capabilities(cx) -> Vec<String> {
        Ok(cx.pkg.capabilities.clone())
    }
} }
