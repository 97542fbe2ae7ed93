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

use crate::wait::{PipeReader, PipeWriter, Readiness};

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

    /// Up to `buf.len()` bytes available now, into `buf` (what `splice` moves through,
    /// with a buffer it reuses); how many. 0 means "nothing yet", as `read`'s empty
    /// answer does. Sources that hold their bytes override it to skip `read`'s vector.
    fn read_into(&self, buf: &mut [u8]) -> Result<usize, StreamFailure> {
        let bytes = self.read(buf.len())?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        Ok(bytes.len())
    }

    /// The in-memory pipe behind this source, if it is one: a splice from it into a
    /// pipe sink moves bytes pipe to pipe without a buffer in between.
    fn as_pipe(&self) -> Option<&PipeReader> {
        None
    }
}

/// The write end of a byte stream.
pub trait ByteSink: Readiness + Send + Sync {
    /// How many bytes a `write` may take now (0: not writable yet).
    fn check_write(&self) -> Result<usize, StreamFailure>;
    /// Writes `bytes`, which the caller has kept within the last permit.
    fn write(&self, bytes: &[u8]) -> Result<(), StreamFailure>;
    /// Pushes buffered bytes on; our sinks complete a flush before returning.
    fn flush(&self) -> Result<(), StreamFailure>;

    /// The in-memory pipe behind this sink, if it is one (see `ByteSource::as_pipe`).
    fn as_pipe(&self) -> Option<&PipeWriter> {
        None
    }
}
