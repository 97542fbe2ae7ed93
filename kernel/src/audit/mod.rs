//! The audit stream: every io operation becomes a record in one hash-chained log of JSON
//! lines, carried losslessly (bounded queue, backpressure) to a sink, and checkable on
//! the host by `verify`. Seams: `IoEvent`s in (`AuditHandle::record`, called by the
//! host layer's envelope), `Sink`s out.

mod chain;
#[macro_use]
mod console;
mod queue;
mod record;
mod sink;
mod verify;

pub use chain::{CHECKPOINT_EVERY, Chain, ChainClosed, RunBinding, seal_and_hash_only};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use console::{ConsoleSink, FRAME_PREFIX, Untrusted, console_line, escape, extract, frame, needs_escape, panic_line, say_line};
pub use queue::{AuditError, AuditHandle, AuditLog, LANE_SLOTS, Lane, QueueStats};
pub use record::{
    AuditRecord, Call, FN_CAPSULE_END, FN_CAPSULE_LOAD, FN_CHECKPOINT, FN_CLOSE, FN_GENESIS, FN_SINK_FAILED, GENESIS, IoEvent, MAX_FIELD_BYTES, Op,
    Outcome, canonical_json, checkpoint_message, hex, seal, unhex, unseal,
};
pub use sink::{LinesSink, MemorySink, Sink, TeeSink};
pub use verify::{Break, BreakKind, Options, Signing, Summary, verify, verify_open, verify_with};

/// The build id the image was compiled with: xtask sets `ASTRID_BUILD_ID` (the git
/// commit, `-dirty` when the tree had changes) when it builds the image; other builds
/// say `dev`.
pub const BUILD_ID: &str = match option_env!("ASTRID_BUILD_ID") {
    Some(id) => id,
    None => "dev",
};

/// What a genesis record names as the image that wrote the log: the crate's version and
/// [`BUILD_ID`]. (The image cannot hash its own binary: Hermit has no path to it.)
pub fn build_identity() -> String {
    format!("astrid-kernel {} ({BUILD_ID})", env!("CARGO_PKG_VERSION"))
}
