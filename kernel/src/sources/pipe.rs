//! A bounded in-memory pipe as a byte source and sink (the testing package's pipes, and
//! later in-image loopback connections), over the wait primitive's pipe.

use std::sync::Arc;

use super::{ByteSink, ByteSource, StreamFailure};
use crate::wait::{self, Notifier, PipeReader, PipeWriter, Readiness};

pub struct PipeSource(PipeReader);
pub struct PipeSink(PipeWriter);

/// A pipe holding at most `capacity` bytes.
pub fn pipe(capacity: usize) -> (Arc<PipeSink>, Arc<PipeSource>) {
    let (w, r) = wait::byte_pipe(capacity);
    (Arc::new(PipeSink(w)), Arc::new(PipeSource(r)))
}

impl PipeSource {
    pub fn reader(&self) -> &PipeReader {
        &self.0
    }
}

impl PipeSink {
    pub fn writer(&self) -> &PipeWriter {
        &self.0
    }
}

impl Readiness for PipeSource {
    fn is_ready(&self) -> bool {
        self.0.is_ready()
    }
    fn notifier(&self) -> Option<&Notifier> {
        self.0.notifier()
    }
}

impl Readiness for PipeSink {
    fn is_ready(&self) -> bool {
        self.0.is_ready()
    }
    fn notifier(&self) -> Option<&Notifier> {
        self.0.notifier()
    }
}

impl ByteSource for PipeSource {
    fn read(&self, max: usize) -> Result<Vec<u8>, StreamFailure> {
        self.0.read(max).map_err(|_| StreamFailure::Closed)
    }
    fn read_into(&self, buf: &mut [u8]) -> Result<usize, StreamFailure> {
        self.0.read_into(buf).map_err(|_| StreamFailure::Closed)
    }
    fn as_pipe(&self) -> Option<&PipeReader> {
        Some(&self.0)
    }
}

impl ByteSink for PipeSink {
    fn check_write(&self) -> Result<usize, StreamFailure> {
        self.0.writable().map_err(|_| StreamFailure::Closed)
    }
    fn write(&self, bytes: &[u8]) -> Result<(), StreamFailure> {
        let n = self.0.write(bytes).map_err(|_| StreamFailure::Closed)?;
        // The caller stayed within the permit, and only this sink writes the pipe.
        if n == bytes.len() {
            Ok(())
        } else {
            Err(StreamFailure::Failed(format!("pipe took {n} of {} permitted bytes", bytes.len())))
        }
    }
    fn flush(&self) -> Result<(), StreamFailure> {
        self.0.writable().map(|_| ()).map_err(|_| StreamFailure::Closed)
    }
    fn as_pipe(&self) -> Option<&PipeWriter> {
        Some(&self.0)
    }
}
