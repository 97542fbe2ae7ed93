//! The audit stream: every io operation becomes a record in one hash-chained log of JSON
//! lines, carried losslessly (bounded queue, backpressure) to a sink, and checkable on
//! the host by `verify`. Seams: `tracing` events in (`layer`), `Sink`s out.

mod chain;
mod console;
mod layer;
mod queue;
mod record;
mod sink;
mod verify;

pub use chain::{Chain, ChainClosed};
pub use console::{ConsoleSink, FRAME_PREFIX, extract, frame};
pub use layer::{AUDIT_TARGET, AuditLayer, MAX_FIELD_BYTES};
pub use queue::{AuditError, AuditHandle, AuditLog, QueueStats};
pub use record::{AuditRecord, FN_CAPSULE_END, FN_CLOSE, GENESIS, IoEvent, Outcome, seal, unseal};
pub use sink::{LinesSink, MemorySink, Sink, TeeSink};
pub use verify::{Break, BreakKind, Summary, verify, verify_open};
