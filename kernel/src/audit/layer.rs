//! The `tracing` side: io operations are events with target `astrid.audit.io`; this
//! layer turns each into an `IoEvent` and records it. Other events pass by untouched,
//! so the layer stacks with any others (a log formatter, a filter).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::queue::AuditHandle;
use super::record::{IoEvent, Outcome};

/// The target every audited io event uses.
pub const AUDIT_TARGET: &str = "astrid.audit.io";

/// Longest string a record keeps from an event field; guest-supplied text (error
/// messages, ids) is cut there, at a character boundary.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Records `astrid.audit.io` events. Event fields it reads:
/// `capsule_id` (or `capsule`), `principal`, `fn` (or `function`), `outcome` (`"ok"`,
/// anything else is an error; absent: error iff `error` is present), `elapsed_ns` (or
/// `elapsed_us`, `elapsed_ms`), `bytes`, `pollable_count`, `ready_count`, `error`.
/// Missing strings are recorded empty, missing counters left out; others are ignored.
///
/// A record the log refuses (closed, or its sink failed) is counted in the log's
/// `refused` statistic: the io glue checks that before any action that must not go
/// ahead unaudited.
pub struct AuditLayer {
    handle: AuditHandle,
}

impl AuditLayer {
    pub fn new(handle: AuditHandle) -> Self {
        AuditLayer { handle }
    }
}

impl<S: Subscriber> Layer<S> for AuditLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != AUDIT_TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        // Refusals are counted by the log itself.
        let _ = self.handle.record(fields.into_event());
    }
}

#[derive(Default)]
struct Fields {
    capsule: Option<String>,
    principal: Option<String>,
    function: Option<String>,
    outcome: Option<String>,
    elapsed_ns: Option<u64>,
    bytes: Option<u64>,
    pollable_count: Option<u32>,
    ready_count: Option<u32>,
    error: Option<String>,
}

impl Fields {
    fn into_event(self) -> IoEvent {
        let outcome = match self.outcome.as_deref() {
            Some("ok") => Outcome::Ok,
            Some(_) => Outcome::Error,
            None if self.error.is_some() => Outcome::Error,
            None => Outcome::Ok,
        };
        // An outcome other than "ok" with no error text: keep the outcome as the text.
        let error = match (&self.error, outcome, self.outcome) {
            (None, Outcome::Error, Some(o)) => Some(o),
            _ => self.error,
        };
        IoEvent {
            capsule: self.capsule.unwrap_or_default(),
            principal: self.principal.unwrap_or_default(),
            function: self.function.unwrap_or_default(),
            outcome,
            elapsed_ns: self.elapsed_ns.unwrap_or(0),
            bytes: self.bytes,
            pollable_count: self.pollable_count,
            ready_count: self.ready_count,
            error,
        }
    }

    fn string(&mut self, name: &str, value: &str) {
        let slot = match name {
            "capsule_id" | "capsule" => &mut self.capsule,
            "principal" => &mut self.principal,
            "fn" | "function" => &mut self.function,
            "outcome" => &mut self.outcome,
            "error" => &mut self.error,
            _ => return,
        };
        *slot = Some(truncate(value).to_owned());
    }

    fn number(&mut self, name: &str, value: u64) {
        let sat32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        match name {
            "elapsed_ns" => self.elapsed_ns = Some(value),
            "elapsed_us" => self.elapsed_ns = Some(value.saturating_mul(1_000)),
            "elapsed_ms" => self.elapsed_ns = Some(value.saturating_mul(1_000_000)),
            "bytes" => self.bytes = Some(value),
            "pollable_count" => self.pollable_count = Some(sat32(value)),
            "ready_count" => self.ready_count = Some(sat32(value)),
            // A number where text is expected (a numeric capsule id): keep it as text.
            _ => self.string(name, &value.to_string()),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        // Counters are never negative; a negative value is recorded as 0.
        self.number(field.name(), u64::try_from(value).unwrap_or(0));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.number(field.name(), u64::try_from(value).unwrap_or(u64::MAX));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.string(field.name(), if value { "true" } else { "false" });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field.name(), &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields arrive here too, formatted with Display.
        if field.name() != "message" {
            self.string(field.name(), &format!("{value:?}"));
        }
    }
}

fn truncate(s: &str) -> &str {
    if s.len() <= MAX_FIELD_BYTES {
        return s;
    }
    let mut end = MAX_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::super::queue::AuditLog;
    use super::super::record::{AuditRecord, GENESIS, unseal};
    use super::super::sink::MemorySink;
    use super::super::verify::verify;
    use super::*;

    fn parse(line: &str) -> (AuditRecord, String) {
        let (body, hash) = unseal(line).unwrap();
        (serde_json::from_str(&body).unwrap(), hash.to_owned())
    }

    #[test]
    fn audit_events_become_chained_records() {
        let memory = MemorySink::new();
        let log = AuditLog::start(memory.clone(), 16);
        let subscriber = tracing_subscriber::registry().with(AuditLayer::new(log.handle()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(
                target: "astrid.audit.io",
                capsule_id = "hello",
                principal = "alice",
                fn = "astrid:io/poll.poll",
                pollable_count = 3u32,
                ready_count = 2u32,
                elapsed_ns = 1500u64,
                "audit"
            );
            tracing::info!("an ordinary log line is not audited");
            tracing::debug!(target: "astrid.other", fn = "x", "nor is another target");
            tracing::debug!(
                target: "astrid.audit.io",
                capsule_id = %"hello",
                principal = "alice",
                fn = "astrid:io/streams.input-stream.blocking-read",
                bytes = 4096u64,
                elapsed_ms = 2u64,
                error = "cancelled",
                "audit"
            );
        });
        assert_eq!(log.close(), Ok(3));
        let lines = memory.lines().clone();
        assert_eq!(lines.len(), 3);
        verify(lines.iter().map(String::as_str)).unwrap();

        let (poll, poll_hash) = parse(&lines[0]);
        assert_eq!(poll.seq, 0);
        assert_eq!(poll.prev, GENESIS);
        assert_eq!(
            (poll.capsule.as_str(), poll.principal.as_str(), poll.function.as_str()),
            ("hello", "alice", "astrid:io/poll.poll")
        );
        assert_eq!((poll.pollable_count, poll.ready_count, poll.bytes), (Some(3), Some(2), None));
        assert_eq!((poll.outcome, poll.elapsed_ns, poll.error), (Outcome::Ok, 1500, None));

        let (read, _) = parse(&lines[1]);
        assert_eq!(read.seq, 1);
        assert_eq!(read.prev, poll_hash);
        assert_eq!(read.capsule, "hello", "a %display field is recorded without quotes");
        assert_eq!((read.bytes, read.elapsed_ns), (Some(4096), 2_000_000));
        assert_eq!((read.outcome, read.error.as_deref()), (Outcome::Error, Some("cancelled")));
        assert!(read.t_ns >= poll.t_ns);
    }

    #[test]
    fn guest_strings_are_truncated_at_a_char_boundary() {
        let memory = MemorySink::new();
        let log = AuditLog::start(memory.clone(), 4);
        let long = "é".repeat(MAX_FIELD_BYTES); // 2 bytes per char
        let subscriber = tracing_subscriber::registry().with(AuditLayer::new(log.handle()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "astrid.audit.io", capsule_id = "c", fn = "f", outcome = "closed", error = long.as_str(), "audit");
            tracing::debug!(target: "astrid.audit.io", capsule_id = 42u64, fn = "f", outcome = "closed", "audit");
        });
        log.close().unwrap();
        let lines = memory.lines();
        let (first, _) = parse(&lines[0]);
        assert_eq!(first.error.as_deref().map(str::len), Some(MAX_FIELD_BYTES));
        let (second, _) = parse(&lines[1]);
        assert_eq!(second.capsule, "42");
        assert_eq!((second.outcome, second.error.as_deref()), (Outcome::Error, Some("closed")));
    }
}
