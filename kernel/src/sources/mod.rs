//! Byte sources and sinks behind astrid:io streams, and the streams capsules hold.
//! A source knows nothing about WIT: it reads or writes bytes without blocking and
//! reports readiness through the wait primitive. A new producer (a socket, an ipc
//! subscription) is one more implementation of these traits.

mod console;
mod null;
mod pipe;
pub mod stream;

pub use console::ConsoleOutput;
pub use null::{NullSink, ZeroSource};
pub use pipe::{PipeSink, PipeSource, pipe};
pub use stream::{Ended, InputStream, IoError, OutputStream, READ_CEILING};

use crate::wait::Readiness;

/// Why a stream operation did not move bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamFailure {
    /// The other end is gone (end of file for a source, a closed sink).
    Closed,
    /// The operation failed; the stream is closed for good afterwards.
    Failed(String),
}

/// The read end of a byte stream.
pub trait ByteSource: Readiness + Send + Sync {
    /// Up to `max` bytes available now. Empty means "nothing yet", never end of file.
    fn read(&self, max: usize) -> Result<Vec<u8>, StreamFailure>;
}

/// The write end of a byte stream.
pub trait ByteSink: Readiness + Send + Sync {
    /// How many bytes a `write` may take now (0: not writable yet).
    fn check_write(&self) -> Result<usize, StreamFailure>;
    /// Writes `bytes`, which the caller has kept within the last permit.
    fn write(&self, bytes: &[u8]) -> Result<(), StreamFailure>;
    /// Pushes buffered bytes on; our sinks complete a flush before returning.
    fn flush(&self) -> Result<(), StreamFailure>;
}
