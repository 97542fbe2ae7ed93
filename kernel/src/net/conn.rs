//! What the image's loopback (`local.rs`) and its link to the kernel's sockets
//! (`link.rs`) share, so neither needs the other: a connection as a capsule sees it
//! (a pair of pipes, and the kernel socket behind it when it leaves the image), the
//! options a capsule sets on it, a UDP receive queue, and the one allocator of
//! ephemeral ports.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::NetError;
use crate::sources::{PipeSink, PipeSource};
use crate::wait::{Notifier, Readiness};

/// Bytes in flight in each direction of a connection (in the image's pipes).
pub const PIPE_BYTES: usize = 256 << 10;
/// Datagrams a UDP socket queues before further ones are dropped (as UDP does).
pub const UDP_QUEUE: usize = 256;
/// Bytes a UDP socket queues before further datagrams are dropped.
pub const UDP_QUEUE_BYTES: usize = 1 << 20;
/// The largest UDP payload (IPv4's).
pub const MAX_DATAGRAM: usize = 65_507;

/// The first port of the ephemeral range (IANA's dynamic ports).
pub const EPHEMERAL_FIRST: u16 = 49152;
/// The ephemeral range: ports a capsule asks for with `0` come from here (kernel 0.11
/// allocates none).
pub const EPHEMERAL: RangeInclusive<u16> = EPHEMERAL_FIRST..=u16::MAX;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands out ephemeral ports in turn, going round the range.
#[derive(Debug)]
pub struct Ephemeral {
    next: Mutex<u16>,
}

impl Default for Ephemeral {
    fn default() -> Self {
        Ephemeral::new()
    }
}

impl Ephemeral {
    pub const fn new() -> Ephemeral {
        Ephemeral { next: Mutex::new(EPHEMERAL_FIRST) }
    }

    /// Offers `claim` the ports of the range in turn, from where the last allocation
    /// stopped, until it takes one (`Some`); `None` once it refused every port once.
    pub fn allocate<T>(&self, mut claim: impl FnMut(u16) -> Option<T>) -> Option<T> {
        let mut next = lock(&self.next);
        let span = usize::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        for _ in 0..span {
            if !EPHEMERAL.contains(&*next) {
                *next = EPHEMERAL_FIRST;
            }
            let port = *next;
            *next = next.wrapping_add(1);
            if let Some(taken) = claim(port) {
                return Some(taken);
            }
        }
        None
    }

    /// The next port of the range, whatever uses it.
    pub fn next(&self) -> u16 {
        self.allocate(Some).expect("the range is not empty")
    }
}

/// The kernel socket behind a connection that leaves the image: what a capsule can ask
/// of it beyond its bytes.
pub trait KernelStream: Send + Sync {
    fn set_nodelay(&self, on: bool) -> std::io::Result<()>;
    fn set_ttl(&self, ttl: u32) -> std::io::Result<()>;
    /// How long unsent bytes may wait for a peer that stopped reading once the capsule
    /// closed the stream (`None`: the default).
    fn set_linger(&self, linger: Option<Duration>);
    /// The failure that ended the connection, if it did not end cleanly.
    fn failure(&self) -> Option<std::io::ErrorKind>;
}

/// One side of a connected byte stream, as a capsule sees it.
pub struct Conn {
    pub source: Arc<PipeSource>,
    pub sink: Arc<PipeSink>,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// The kernel socket behind it, for connections that leave the image.
    pub kernel: Option<Arc<dyn KernelStream>>,
}

impl Conn {
    /// What the stream's end means: a reset connection, a failed one, or a clean close.
    pub fn end_error(&self) -> NetError {
        match self.kernel.as_ref().and_then(|k| k.failure()) {
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::BrokenPipe) => NetError::ConnectionReset,
            Some(kind) => NetError::Other(format!("connection failed: {kind}")),
            None => NetError::Closed,
        }
    }
}

/// Two connected ends joined by a pair of pipes.
pub fn conn_pair(a: SocketAddr, b: SocketAddr) -> (Conn, Conn) {
    let (to_b, from_a) = crate::sources::pipe(PIPE_BYTES);
    let (to_a, from_b) = crate::sources::pipe(PIPE_BYTES);
    (
        Conn { source: from_b, sink: to_b, local: a, peer: b, kernel: None },
        Conn { source: from_a, sink: to_a, local: b, peer: a, kernel: None },
    )
}

/// Options a capsule set on a stream. The in-image loopback records them (they have no
/// effect on memory pipes); kernel connections apply what kernel 0.11 supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    pub nodelay: bool,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub hop_limit: u32,
    pub keepalive: Option<u64>,
    pub linger: Option<u64>,
    pub reuseaddr: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { nodelay: false, read_timeout: None, write_timeout: None, hop_limit: 64, keepalive: None, linger: None, reuseaddr: false }
    }
}

/// A datagram with its sender.
pub struct Datagram {
    pub data: Vec<u8>,
    pub from: SocketAddr,
}

/// The receive queue of a UDP socket (on the image's loopback, or filled from a kernel
/// socket).
pub struct UdpQueue {
    /// The datagrams, and their bytes together.
    queue: Mutex<(VecDeque<Datagram>, usize)>,
    notifier: Notifier,
    pub addr: SocketAddr,
}

impl UdpQueue {
    pub fn new(addr: SocketAddr) -> UdpQueue {
        UdpQueue { queue: Mutex::new((VecDeque::new(), 0)), notifier: Notifier::new(), addr }
    }

    /// Queues a datagram; a full queue (by count or bytes) drops it, as a full socket
    /// buffer would.
    pub fn deliver(&self, datagram: Datagram) -> bool {
        {
            let mut q = lock(&self.queue);
            let (queue, bytes) = &mut *q;
            if queue.len() >= UDP_QUEUE || *bytes + datagram.data.len() > UDP_QUEUE_BYTES {
                return false;
            }
            *bytes += datagram.data.len();
            queue.push_back(datagram);
        }
        self.notifier.notify();
        true
    }

    /// The first queued datagram that `filter` accepts; others before it are discarded
    /// (a connected socket drops datagrams from other peers).
    pub fn take(&self, filter: impl Fn(&Datagram) -> bool) -> Option<Datagram> {
        let mut q = lock(&self.queue);
        let (queue, bytes) = &mut *q;
        while let Some(d) = queue.pop_front() {
            *bytes -= d.data.len();
            if filter(&d) {
                return Some(d);
            }
        }
        None
    }
}

impl Readiness for UdpQueue {
    fn is_ready(&self) -> bool {
        !lock(&self.queue).0.is_empty()
    }
    fn notifier(&self) -> Option<&Notifier> {
        Some(&self.notifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{ByteSink, ByteSource};

    #[test]
    fn ports_start_at_the_range_and_go_round_it() {
        let ports = Ephemeral::new();
        assert_eq!(ports.next(), EPHEMERAL_FIRST);
        assert_eq!(ports.next(), EPHEMERAL_FIRST + 1);
        // Skips what the claimer refuses.
        assert_eq!(ports.allocate(|p| (p % 2 == 0).then_some(p)), Some(EPHEMERAL_FIRST + 2));
        assert_eq!(ports.allocate(|p| (p % 2 == 0).then_some(p)), Some(EPHEMERAL_FIRST + 4));
        // Wraps from the top of the range back to its start.
        let ports = Ephemeral::new();
        assert_eq!(ports.allocate(|p| (p == u16::MAX).then_some(p)), Some(u16::MAX));
        assert_eq!(ports.next(), EPHEMERAL_FIRST);
    }

    #[test]
    fn a_full_range_is_tried_once_then_refused() {
        let ports = Ephemeral::new();
        let mut offered = Vec::new();
        let got: Option<u16> = ports.allocate(|p| {
            offered.push(p);
            None
        });
        assert_eq!(got, None);
        assert_eq!(offered.len(), EPHEMERAL.len());
        offered.sort_unstable();
        offered.dedup();
        assert_eq!(offered.len(), EPHEMERAL.len(), "every port exactly once");
        assert!(offered.iter().all(|p| EPHEMERAL.contains(p)));
    }

    #[test]
    fn a_pair_is_joined_both_ways() {
        let (a, b) = conn_pair("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        assert_eq!((a.local, a.peer), (b.peer, b.local));
        a.sink.write(b"x").unwrap();
        assert_eq!(b.source.read(8).unwrap(), b"x");
        assert_eq!(a.end_error(), NetError::Closed);
    }

    #[test]
    fn the_kernel_socket_tells_a_reset_from_a_close() {
        struct Failed(Option<std::io::ErrorKind>);
        impl KernelStream for Failed {
            fn set_nodelay(&self, _: bool) -> std::io::Result<()> {
                Ok(())
            }
            fn set_ttl(&self, _: u32) -> std::io::Result<()> {
                Ok(())
            }
            fn set_linger(&self, _: Option<Duration>) {}
            fn failure(&self) -> Option<std::io::ErrorKind> {
                self.0
            }
        }
        let (mut a, _b) = conn_pair("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        for (kind, want) in [
            (None, NetError::Closed),
            (Some(std::io::ErrorKind::ConnectionReset), NetError::ConnectionReset),
            (Some(std::io::ErrorKind::BrokenPipe), NetError::ConnectionReset),
            (Some(std::io::ErrorKind::TimedOut), NetError::Other("connection failed: timed out".into())),
        ] {
            a.kernel = Some(Arc::new(Failed(kind)));
            assert_eq!(a.end_error(), want, "{kind:?}");
        }
    }

    #[test]
    fn a_full_udp_queue_drops() {
        let q = UdpQueue::new("127.0.0.1:9".parse().unwrap());
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for _ in 0..UDP_QUEUE {
            assert!(q.deliver(Datagram { data: vec![1], from }));
        }
        assert!(!q.deliver(Datagram { data: vec![2], from }));
        assert!(q.is_ready());
    }

    #[test]
    fn a_udp_queue_holds_at_most_its_bytes() {
        let q = UdpQueue::new("127.0.0.1:9".parse().unwrap());
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let big = || Datagram { data: vec![0; MAX_DATAGRAM], from };
        let fits = UDP_QUEUE_BYTES / MAX_DATAGRAM;
        for _ in 0..fits {
            assert!(q.deliver(big()));
        }
        assert!(!q.deliver(big()), "over {UDP_QUEUE_BYTES} bytes");
        assert!(q.take(|_| true).is_some());
        assert!(q.deliver(big()), "taking one makes room again");
    }
}
