//! A sink that takes everything and keeps nothing: for benchmarks and for exercising
//! segmented writes without a reader.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{ByteSink, ByteSource, StreamFailure};
use crate::wait::{Notifier, Readiness};

const PERMIT: usize = 64 << 10;

#[derive(Default)]
pub struct NullSink {
    taken: AtomicU64,
}

impl NullSink {
    /// Bytes written so far.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }
}

impl Readiness for NullSink {
    fn is_ready(&self) -> bool {
        true
    }
    fn notifier(&self) -> Option<&Notifier> {
        None
    }
}

impl ByteSink for NullSink {
    fn check_write(&self) -> Result<usize, StreamFailure> {
        Ok(PERMIT)
    }
    fn write(&self, bytes: &[u8]) -> Result<(), StreamFailure> {
        self.taken.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn flush(&self) -> Result<(), StreamFailure> {
        Ok(())
    }
}

/// A source of `len` zero bytes, always ready, then closed.
pub struct ZeroSource {
    remaining: AtomicU64,
}

impl ZeroSource {
    pub fn new(len: u64) -> Self {
        ZeroSource { remaining: AtomicU64::new(len) }
    }
}

impl Readiness for ZeroSource {
    fn is_ready(&self) -> bool {
        true
    }
    fn notifier(&self) -> Option<&Notifier> {
        None
    }
}

impl ByteSource for ZeroSource {
    fn read(&self, max: usize) -> Result<Vec<u8>, StreamFailure> {
        let left = self.remaining.load(Ordering::Relaxed);
        if left == 0 {
            return Err(StreamFailure::Closed);
        }
        let n = (max as u64).min(left);
        self.remaining.fetch_sub(n, Ordering::Relaxed);
        Ok(vec![0; n as usize])
    }
    fn read_into(&self, buf: &mut [u8]) -> Result<usize, StreamFailure> {
        let left = self.remaining.load(Ordering::Relaxed);
        if left == 0 {
            return Err(StreamFailure::Closed);
        }
        let n = (buf.len() as u64).min(left) as usize;
        self.remaining.fetch_sub(n as u64, Ordering::Relaxed);
        // The bytes are written, as a source holding real data would copy them.
        buf[..n].fill(0);
        Ok(n)
    }
}
