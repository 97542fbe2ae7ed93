//! The envelope every host function goes through: it times the call, lets the body
//! note what it moved and whether its wait was cancelled, turns the answer into one
//! outcome of one vocabulary shared by every package (`ok`, `error`, `cancelled`,
//! `refused`, `trap`), counts the call against the capsule, and writes exactly one audit
//! record. A record the log refuses stops the capsule (a trap): nothing a capsule does
//! goes on unrecorded.
//!
//! Host files declare their functions with `host_fns!`, which derives each audited WIT
//! name from the interface named once per `impl` and the Rust method name (kebab-cased
//! at compile time), so no function name is typed by hand.

use std::fmt;
use std::time::Instant;

use super::context::{Note, View};
use crate::audit::{Call, MAX_FIELD_BYTES, Outcome};

/// One WIT function: `iface` (`astrid:kv/host`, `astrid:io/streams.input-stream`) and
/// its own name (`kv-get`, `blocking-read`).
#[derive(Debug)]
pub struct Func {
    pub iface: &'static str,
    pub name: &'static str,
    /// `iface.name`, made at compile time (`host_fns!`): every audit record carries it,
    /// and the capsule's thread should not build it for every call.
    full: &'static str,
}

impl Func {
    /// `full` must be `iface` + `.` + `name` (`host_fns!` writes it with `kebab!`).
    pub const fn new(iface: &'static str, name: &'static str, full: &'static str) -> Func {
        assert!(full.len() == iface.len() + 1 + name.len(), "a function's full name is its interface, a dot and its name");
        Func { iface, name, full }
    }

    /// The name audit records carry: `astrid:kv/host.kv-get`.
    pub fn full_name(&self) -> &'static str {
        self.full
    }
}

impl fmt::Display for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.iface, self.name)
    }
}

/// `blocking_read` → `blocking-read`, at compile time (see `kebab!`).
pub const fn kebab_bytes<const N: usize>(name: &str) -> [u8; N] {
    let bytes = name.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = if bytes[i] == b'_' { b'-' } else { bytes[i] };
        i += 1;
    }
    out
}

/// A `&'static str` constant: the kebab-case WIT name of a Rust identifier's text.
macro_rules! kebab {
    ($name:expr) => {{
        const NAME: &str = $name;
        const BYTES: [u8; NAME.len()] = $crate::host::envelope::kebab_bytes::<{ NAME.len() }>(NAME);
        const KEBAB: &str = match ::core::str::from_utf8(&BYTES) {
            Ok(s) => s,
            Err(_) => panic!("a Rust identifier is UTF-8"),
        };
        KEBAB
    }};
}
pub(crate) use kebab;

/// Implements a generated `Host…` trait for a view, every method through the envelope:
///
/// ```ignore
/// host_fns! { impl Host for KvView<'_> as "astrid:kv/host" {
///     fn kv_get(cx, key: String) -> Result<Option<Vec<u8>>, ErrorCode> { … }
///     fn drop(cx, this: Resource<Subscription>) -> () { … }
/// } }
/// ```
///
/// A method returning `Result<_, E>` is audited `error` with E's code on `Err`; any
/// other return type is an answer that cannot fail. `cx` is the view inside the body.
macro_rules! host_fns {
    (impl $($trait:ident)::+ for $view:ty as $iface:literal { $($fns:tt)* }) => {
        impl $($trait)::+ for $view {
            $crate::host::envelope::host_fns!(@fns $iface; $($fns)*);
        }
    };
    (@fns $iface:literal;) => {};
    (@fns $iface:literal;
        fn $name:ident($cx:ident $(, $arg:ident : $ty:ty)* $(,)?) -> Result<$ok:ty, $err:ty> $body:block
        $($rest:tt)*
    ) => {
        fn $name(&mut self $(, $arg: $ty)*) -> ::wasmtime::Result<Result<$ok, $err>> {
            const F: $crate::host::envelope::Func =
                $crate::host::envelope::Func::new(
                    $iface,
                    $crate::host::envelope::kebab!(stringify!($name)),
                    // WIT names have no `_`: only the Rust name's change to kebab-case.
                    $crate::host::envelope::kebab!(concat!($iface, ".", stringify!($name))),
                );
            self.call(&F, move |$cx: &mut Self| -> ::wasmtime::Result<Result<$ok, $err>> { $body })
        }
        $crate::host::envelope::host_fns!(@fns $iface; $($rest)*);
    };
    (@fns $iface:literal;
        fn $name:ident($cx:ident $(, $arg:ident : $ty:ty)* $(,)?) -> $ret:ty $body:block
        $($rest:tt)*
    ) => {
        fn $name(&mut self $(, $arg: $ty)*) -> ::wasmtime::Result<$ret> {
            const F: $crate::host::envelope::Func =
                $crate::host::envelope::Func::new(
                    $iface,
                    $crate::host::envelope::kebab!(stringify!($name)),
                    // WIT names have no `_`: only the Rust name's change to kebab-case.
                    $crate::host::envelope::kebab!(concat!($iface, ".", stringify!($name))),
                );
            self.call_infallible(&F, move |$cx: &mut Self| -> ::wasmtime::Result<$ret> { $body })
        }
        $crate::host::envelope::host_fns!(@fns $iface; $($rest)*);
    };
}
pub(crate) use host_fns;

/// A WIT error value as the audit log names it: the case in kebab-case, with its text
/// for cases that carry one (`quota`, `unknown: disk full`). Every generated error type
/// gets this from its `Debug` form; a string a capsule controls stays escaped.
pub trait WitError: fmt::Debug {
    fn code(&self) -> String {
        code_from_debug(&format!("{self:?}"))
    }
}

/// `ErrorCode::CapabilityDenied` → `capability-denied`;
/// `ErrorCode::Unknown("x \"y\"")` → `unknown: x \"y\"` (still escaped).
pub fn code_from_debug(debug: &str) -> String {
    let (case, payload) = match debug.find('(') {
        Some(i) => (&debug[..i], Some(&debug[i + 1..debug.len().saturating_sub(1).max(i + 1)])),
        None => (debug, None),
    };
    let case = case.rsplit("::").next().unwrap_or(case).trim();
    let mut out = String::with_capacity(case.len() + 8);
    for (i, c) in case.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    if let Some(p) = payload {
        let p = p.strip_prefix('"').and_then(|p| p.strip_suffix('"')).unwrap_or(p);
        out.push_str(": ");
        out.push_str(p);
    }
    out
}

/// The trap of a capsule whose call could not be recorded.
#[derive(Debug)]
pub struct AuditUnavailable(pub String);

impl fmt::Display for AuditUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the audit log refused the record of this call ({}): the capsule is stopped", self.0)
    }
}

impl std::error::Error for AuditUnavailable {}

impl<P> View<'_, P> {
    /// Runs a fallible host function's body inside the envelope.
    pub fn call<T, E: WitError>(
        &mut self,
        func: &'static Func,
        body: impl FnOnce(&mut Self) -> wasmtime::Result<Result<T, E>>,
    ) -> wasmtime::Result<Result<T, E>> {
        let started = Instant::now();
        self.core.note = Note::default();
        let answer = body(self);
        let (outcome, error) = match &answer {
            Ok(Ok(_)) => (Outcome::Ok, None),
            Ok(Err(e)) => (Outcome::Error, Some(e.code())),
            Err(trap) => (Outcome::Trap, Some(trap.root_cause().to_string())),
        };
        self.core.settle(func, started, outcome, error)?;
        answer
    }

    /// Runs the body of a host function whose WIT result cannot fail.
    pub fn call_infallible<T>(
        &mut self,
        func: &'static Func,
        body: impl FnOnce(&mut Self) -> wasmtime::Result<T>,
    ) -> wasmtime::Result<T> {
        let started = Instant::now();
        self.core.note = Note::default();
        let answer = body(self);
        let (outcome, error) = match &answer {
            Ok(_) => (Outcome::Ok, None),
            Err(trap) => (Outcome::Trap, Some(trap.root_cause().to_string())),
        };
        self.core.settle(func, started, outcome, error)?;
        answer
    }
}

impl super::context::Core {
    /// Counts the call and writes its one record.
    fn settle(&mut self, func: &Func, started: Instant, outcome: Outcome, error: Option<String>) -> wasmtime::Result<()> {
        self.calls += 1;
        let note = std::mem::take(&mut self.note);
        let (outcome, error) = match (outcome, note.refused) {
            (Outcome::Trap, _) => (Outcome::Trap, error),
            (_, Some(why)) => (Outcome::Refused, Some(why.to_string())),
            (Outcome::Error, None) if note.cancelled => (Outcome::Cancelled, error),
            (other, None) => (other, error),
        };
        let error = match (error, note.detail) {
            (Some(code), Some(detail)) => Some(format!("{code}: {detail:?}")),
            (error, _) => error,
        };
        let Some(audit) = &mut self.audit else { return Ok(()) };
        // The clock is read once: the call's duration and its record's time.
        let ended = Instant::now();
        let call = Call {
            capsule: &self.identity.capsule,
            principal: &self.identity.principal,
            op: crate::audit::Op {
                function: std::borrow::Cow::Borrowed(func.full_name()),
                outcome,
                elapsed_ns: u64::try_from(ended.saturating_duration_since(started).as_nanos()).unwrap_or(u64::MAX),
                bytes: note.bytes,
                pollable_count: note.pollable_count,
                ready_count: note.ready_count,
                error: error.map(|e| clip(e, MAX_FIELD_BYTES)),
            },
            ended: Some(ended),
        };
        match audit.record_call(call, Some(&self.cancel)) {
            Ok(_) => Ok(()),
            Err(e) => Err(AuditUnavailable(e.to_string()).into()),
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
pub fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_names_become_wit_names_at_compile_time() {
        const N: &str = kebab!("blocking_write_zeroes_and_flush");
        assert_eq!(N, "blocking-write-zeroes-and-flush");
        assert_eq!(kebab!("drop"), "drop");
        assert_eq!(Func::new("astrid:kv/host", kebab!("kv_get"), kebab!(concat!("astrid:kv/host", ".", "kv_get"))).full_name(), "astrid:kv/host.kv-get");
    }

    #[test]
    fn error_codes_are_named_in_one_vocabulary() {
        for (debug, code) in [
            ("ErrorCode::Closed", "closed"),
            ("ErrorCode::CapabilityDenied", "capability-denied"),
            ("StreamError::Closed", "closed"),
            ("ErrorCode::Unknown(\"not persisted: disk full\")", "unknown: not persisted: disk full"),
            ("ErrorCode::Unknown(\"two\\nlines\")", "unknown: two\\nlines"),
            ("ErrorCode::Unknown(\"\")", "unknown: "),
            ("Quota", "quota"),
        ] {
            assert_eq!(code_from_debug(debug), code, "{debug}");
        }
    }

    #[test]
    fn clipping_respects_character_boundaries() {
        assert_eq!(clip("ééé".into(), 3), "é");
        assert_eq!(clip("abc".into(), 10), "abc");
    }
}
