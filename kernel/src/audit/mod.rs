//! The audit stream: every io operation becomes a record in one hash-chained log of JSON
//! lines, carried losslessly (bounded queue, backpressure) to a sink, and checkable on
//! the host by `verify`. Seams: `IoEvent`s in (`AuditHandle::record`, called by the
//! host layer's envelope), `Sink`s out.

mod chain;
mod console;
mod queue;
mod record;
mod sink;
mod verify;

pub use chain::{Chain, ChainClosed};
pub use console::{ConsoleSink, FRAME_PREFIX, extract, frame};
pub use queue::{AuditError, AuditHandle, AuditLog, QueueStats};
pub use record::{AuditRecord, FN_CAPSULE_END, FN_CLOSE, FN_SINK_FAILED, GENESIS, IoEvent, MAX_FIELD_BYTES, Outcome, seal, unseal};
pub use sink::{LinesSink, MemorySink, Sink, TeeSink};
pub use verify::{Break, BreakKind, Summary, verify, verify_open};
