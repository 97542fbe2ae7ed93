//! Connections that leave the image, through the kernel's TCP (smoltcp over virtio-net
//! in the image, the host's sockets in hosted mode). A capsule never touches the kernel
//! socket: each connection is a pair of in-memory pipes, so every capsule-facing wait is
//! the wait primitive's, and two pump threads move bytes between the pipes and the
//! socket:
//! - the reader pump waits in the kernel (`poll` on the socket, which parks the task
//!   until smoltcp's socket waker fires) and writes what arrives into the capsule's
//!   pipe, whose notifier wakes the capsule's wait — that is how socket readiness
//!   reaches the wait primitive; it never spins (each kernel wait is bounded by
//!   `IDLE`, so it notices within that time that the capsule went away);
//! - the writer pump sleeps on the capsule's outgoing pipe and writes into the socket,
//!   draining what the capsule wrote even after it dropped the stream (lossless close),
//!   for at most the linger time when the peer stops reading.
//!
//! Kernel 0.11 gaps handled here: `connect` blocks without a timeout and ignores
//! non-blocking mode (so it runs on a helper thread and the capsule waits for it with
//! its own deadline and cancellation); half-close (`shutdown`) is a no-op in the kernel.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::NetError;
use super::addr;
use super::conn::{Conn, Datagram, EPHEMERAL, Ephemeral, KernelStream, PIPE_BYTES, UdpQueue};
use crate::platform::{self, POLLERR, POLLHUP, POLLIN, POLLOUT};
use crate::sources::{PipeSink, PipeSource};
use crate::wait::{self, CancelToken, Notifier, Readiness, WaitError};

/// Longest single kernel wait of a pump: how soon it notices the capsule went away.
const IDLE: Duration = Duration::from_millis(250);
/// Bytes a pump moves per kernel call.
const CHUNK: usize = 64 << 10;
/// How long unsent bytes may wait for a peer that stopped reading once the capsule has
/// closed the stream (`set-linger` changes it).
pub const DEFAULT_LINGER: Duration = Duration::from_secs(30);
/// How long a name lookup may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Stack of each helper thread (pumps, connects, lookups, receivers): they hold a
/// chunk buffer on the heap and little else.
const THREAD_STACK: usize = 64 << 10;
/// Pause between connect attempts while the kernel has no address yet (before DHCP).
const CONNECT_RETRY: Duration = Duration::from_millis(20);
/// Pause after a failed accept on a published port before the next one.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);
/// Accepts on a published port that may fail in a row before it is given up.
const ACCEPT_FAILURES: u32 = 50;
/// How long a UDP send may wait for room in the kernel's socket buffer.
const UDP_SEND_PATIENCE: Duration = Duration::from_secs(1);
/// Longest single kernel wait of a UDP send for room.
const UDP_SEND_POLL: Duration = Duration::from_millis(50);
/// Receive buffer of a kernel UDP socket: the largest datagram IP carries.
const UDP_RECEIVE_BYTES: usize = 65_536;
/// Hermit 0.11's errno for "no address yet" (EIO) from a connect before DHCP finished.
const HERMIT_EIO: i32 = 5;
/// Hermit 0.11's errno EFAULT from a connect whose handshake ended in a reset (the
/// socket fell back to CLOSED): a refused connection.
const HERMIT_EFAULT: i32 = 14;

/// Kernel connections not yet closed: the image waits for them before it exits, so
/// bytes a capsule wrote are not cut off on their way (a capsule may finish before the
/// network does; a socket is closed once its writer pump has sent everything).
static SENDING: Sending = Sending { count: std::sync::atomic::AtomicUsize::new(0), notifier: Notifier::new() };

struct Sending {
    count: std::sync::atomic::AtomicUsize,
    notifier: Notifier,
}

impl Readiness for Sending {
    fn is_ready(&self) -> bool {
        self.count.load(Ordering::SeqCst) == 0
    }
    fn notifier(&self) -> Option<&Notifier> {
        Some(&self.notifier)
    }
}

/// Kernel connections still open (sending what capsules wrote, or closing).
pub fn sending() -> usize {
    SENDING.count.load(Ordering::SeqCst)
}

/// Waits until every connection has sent what its capsule wrote, or `deadline`.
/// Returns how many are still sending.
pub fn wait_until_sent(deadline: Instant) -> usize {
    let _ = wait::wait_one(&SENDING, &CancelToken::new(), Some(deadline));
    sending()
}

/// The kernel socket behind a connection.
struct Link {
    /// Closed in `drop`, before the count of open connections goes down.
    stream: std::mem::ManuallyDrop<TcpStream>,
    /// Why the connection failed (reset, I/O error), for the capsule's next read.
    error: Mutex<Option<std::io::ErrorKind>>,
    linger_ms: AtomicU64,
}

impl Drop for Link {
    fn drop(&mut self) {
        // SAFETY: dropped exactly once, here; nothing uses the stream afterwards.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.stream) };
        SENDING.count.fetch_sub(1, Ordering::SeqCst);
        SENDING.notifier.notify();
    }
}

impl KernelStream for Link {
    fn set_nodelay(&self, on: bool) -> std::io::Result<()> {
        self.stream.set_nodelay(on)
    }

    fn set_ttl(&self, ttl: u32) -> std::io::Result<()> {
        self.stream.set_ttl(ttl)
    }

    fn set_linger(&self, linger: Option<Duration>) {
        let ms = linger.unwrap_or(DEFAULT_LINGER).as_millis().min(u128::from(u64::MAX)) as u64;
        self.linger_ms.store(ms, Ordering::Relaxed);
    }

    fn failure(&self) -> Option<std::io::ErrorKind> {
        *self.error.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Link {
    fn fail(&self, kind: std::io::ErrorKind) {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(kind);
    }

    fn wait(&self, events: i16) -> std::io::Result<i16> {
        platform::poll_fd(self.stream.as_raw_fd(), events | POLLERR | POLLHUP, IDLE)
    }
}

/// Wraps a connected kernel socket as a capsule connection and starts its pumps.
pub fn attach(stream: TcpStream) -> std::io::Result<Conn> {
    stream.set_nonblocking(true)?;
    let peer = stream.peer_addr()?;
    // Kernel 0.11 answers `getsockname` on connected sockets; fall back to the
    // unspecified address where it cannot.
    let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::new(addr::loopback_like(peer.ip()), 0));
    SENDING.count.fetch_add(1, Ordering::SeqCst);
    let link = Arc::new(Link { stream: std::mem::ManuallyDrop::new(stream), error: Mutex::new(None), linger_ms: AtomicU64::new(DEFAULT_LINGER.as_millis() as u64) });
    let (to_capsule, capsule_source) = crate::sources::pipe(PIPE_BYTES);
    let (capsule_sink, from_capsule) = crate::sources::pipe(PIPE_BYTES);
    spawn("astrid-net-rx", {
        let link = Arc::clone(&link);
        move || reader_pump(&link, &to_capsule)
    })?;
    spawn("astrid-net-tx", {
        let link = Arc::clone(&link);
        move || writer_pump(&link, &from_capsule)
    })?;
    Ok(Conn { source: capsule_source, sink: capsule_sink, local, peer, kernel: Some(link as Arc<dyn KernelStream>) })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name(name.into()).stack_size(THREAD_STACK).spawn(f).map(|_| ())
}

/// Socket → capsule. Ends at the peer's end of file, a failure, or when the capsule
/// closed its read side; dropping `to_capsule` then gives the capsule end of file.
fn reader_pump(link: &Link, to_capsule: &PipeSink) {
    let pipe = to_capsule.writer();
    let never = CancelToken::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let room = match pipe.writable() {
            Err(_) => return,
            Ok(0) => {
                // The capsule is behind: wait for room (or for it to go away).
                let _ = wait::wait_one(pipe, &never, None);
                continue;
            }
            Ok(room) => room.min(CHUNK),
        };
        match (&*link.stream).read(&mut buf[..room]) {
            Ok(0) => return,
            Ok(n) => {
                let _ = pipe.write(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(e) = link.wait(POLLIN) {
                    link.fail(e.kind());
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                link.fail(e.kind());
                return;
            }
        }
    }
}

/// Capsule → socket. Ends when the capsule closed its write side and everything it
/// wrote is sent, on a failure, or when the linger time passes with the capsule gone
/// and the peer not reading.
fn writer_pump(link: &Link, from_capsule: &PipeSource) {
    let pipe = from_capsule.reader();
    let never = CancelToken::new();
    let mut gone_since: Option<Instant> = None;
    loop {
        let bytes = match pipe.read_blocking(CHUNK, &never, None) {
            Ok(b) => b,
            Err(_) => return,
        };
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match (&*link.stream).write(rest) {
                Ok(0) => {
                    link.fail(std::io::ErrorKind::BrokenPipe);
                    pipe.close();
                    return;
                }
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !pipe.writer_open() {
                        let since = *gone_since.get_or_insert_with(Instant::now);
                        if since.elapsed().as_millis() as u64 >= link.linger_ms.load(Ordering::Relaxed) {
                            return;
                        }
                    }
                    if let Err(e) = link.wait(POLLOUT) {
                        link.fail(e.kind());
                        pipe.close();
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    link.fail(e.kind());
                    pipe.close();
                    return;
                }
            }
        }
    }
}

/// A connect running on a helper thread, which the capsule waits for.
struct PendingConnect {
    slot: Mutex<Option<std::io::Result<TcpStream>>>,
    notifier: Notifier,
}

impl Readiness for PendingConnect {
    fn is_ready(&self) -> bool {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
    fn notifier(&self) -> Option<&Notifier> {
        Some(&self.notifier)
    }
}

impl PendingConnect {
    fn take(&self) -> Option<std::io::Result<TcpStream>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Connects to `addr`, waiting until `deadline` or the capsule's cancellation, and
/// wraps the socket as a capsule connection.
pub fn connect(addr: SocketAddr, deadline: Instant, cancel: &CancelToken) -> Result<Conn, NetError> {
    let pending = start_connect(addr, deadline).map_err(|e| io_error(&e))?;
    match wait::wait_one(&*pending, cancel, Some(deadline)) {
        Ok(()) => {}
        Err(WaitError::Cancelled) => return Err(NetError::Cancelled),
        Err(WaitError::TimedOut) => return Err(NetError::Timeout),
    }
    match pending.take() {
        Some(Ok(stream)) => attach(stream).map_err(|e| io_error(&e)),
        Some(Err(e)) => Err(io_error(&e)),
        None => Err(NetError::other("the connect finished without a result")),
    }
}

/// What a kernel socket's error means to a capsule.
pub fn io_error(e: &std::io::Error) -> NetError {
    use std::io::ErrorKind as K;
    if cfg!(target_os = "hermit") && e.raw_os_error() == Some(HERMIT_EFAULT) {
        return NetError::ConnectionRefused;
    }
    match e.kind() {
        K::ConnectionRefused => NetError::ConnectionRefused,
        K::ConnectionReset | K::ConnectionAborted => NetError::ConnectionReset,
        K::TimedOut => NetError::Timeout,
        K::AddrInUse => NetError::AddressInUse,
        K::AddrNotAvailable => NetError::AddressNotAvailable,
        _ => NetError::Other(e.to_string()),
    }
}

/// Starts connecting to `addr` until `deadline`. Kernel 0.11 fails a connect at once
/// while DHCP has not finished (EIO): that is retried until the deadline. A connect the
/// capsule gave up on finishes on its own and its socket is closed.
fn start_connect(addr: SocketAddr, deadline: Instant) -> std::io::Result<Arc<PendingConnect>> {
    let pending = Arc::new(PendingConnect { slot: Mutex::new(None), notifier: Notifier::new() });
    let result = Arc::clone(&pending);
    spawn("astrid-net-connect", move || {
        let outcome = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break Ok(s),
                Err(e) if retryable(&e) && Instant::now() + CONNECT_RETRY < deadline => {
                    std::thread::sleep(CONNECT_RETRY);
                }
                Err(e) => break Err(e),
            }
        };
        *result.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        result.notifier.notify();
    })?;
    Ok(pending)
}

/// Kernel 0.11 answers EIO (no address yet) before DHCP completes.
fn retryable(e: &std::io::Error) -> bool {
    cfg!(target_os = "hermit") && e.kind() != std::io::ErrorKind::ConnectionRefused && e.raw_os_error() == Some(HERMIT_EIO)
}

/// Resolves a name through the platform (the kernel's resolver in the image, where it
/// has one), on a helper thread bounded by `deadline`. `None` when it did not answer.
pub fn resolve(name: &str, deadline: Instant, cancel: &CancelToken) -> Option<Vec<std::net::IpAddr>> {
    use std::net::ToSocketAddrs;
    let slot: Arc<(Mutex<Option<Vec<std::net::IpAddr>>>, Notifier)> = Arc::new((Mutex::new(None), Notifier::new()));
    let result = Arc::clone(&slot);
    let name = name.to_string();
    spawn("astrid-net-resolve", move || {
        let ips = (name.as_str(), 0).to_socket_addrs().map(|it| it.map(|a| a.ip()).collect()).unwrap_or_default();
        *result.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(ips);
        result.1.notify();
    })
    .ok()?;
    struct Done<'a>(&'a (Mutex<Option<Vec<std::net::IpAddr>>>, Notifier));
    impl Readiness for Done<'_> {
        fn is_ready(&self) -> bool {
            self.0.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
        }
        fn notifier(&self) -> Option<&Notifier> {
            Some(&self.0.1)
        }
    }
    wait::wait_one(&Done(&slot), cancel, Some(deadline)).ok()?;
    slot.0.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Publishes loopback port `port` on the NIC (what `--publish` asks for): a thread
/// accepts kernel connections on `bind_ip:port` and gives each to `hand_over` (which
/// passes it to the capsule listening on 127.0.0.1:`port` in the image, or drops it).
pub fn publish(port: u16, bind_ip: std::net::IpAddr, hand_over: impl Fn(Conn) + Send + 'static) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(SocketAddr::new(bind_ip, port))?;
    spawn("astrid-net-publish", move || {
        // A failed accept is retried a little later; a listener that keeps failing is
        // given up, with a message, rather than retried for ever.
        let mut failures = 0u32;
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => {
                    failures = 0;
                    stream
                }
                Err(e) => {
                    failures += 1;
                    if failures >= ACCEPT_FAILURES {
                        say!("astrid: error: published port {port} stopped accepting: {e}");
                        return;
                    }
                    std::thread::sleep(ACCEPT_RETRY);
                    continue;
                }
            };
            let Ok(conn) = attach(stream) else { continue };
            hand_over(conn);
        }
    })
}

/// A UDP socket on the kernel's stack (a capsule bound to the unspecified address, to
/// talk to the world outside the image). A receive thread waits in the kernel (`poll`)
/// and queues each datagram for the capsule; sends go straight to the kernel.
pub struct UdpLink {
    socket: std::net::UdpSocket,
    pub queue: Arc<UdpQueue>,
}

/// Ports for kernel UDP binds to port 0 (kernel 0.11 allocates none).
static UDP_PORTS: Ephemeral = Ephemeral::new();

/// Binds a kernel UDP socket on `ip:port` (port 0: the first free one of the ephemeral
/// range) and starts its receive thread.
pub fn udp_bind(ip: std::net::IpAddr, port: u16) -> std::io::Result<Arc<UdpLink>> {
    let socket = if port != 0 {
        std::net::UdpSocket::bind(SocketAddr::new(ip, port))?
    } else {
        UDP_PORTS.allocate(|p| std::net::UdpSocket::bind(SocketAddr::new(ip, p)).ok()).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("no free UDP port in {}-{}", EPHEMERAL.start(), EPHEMERAL.end())))?
    };
    let local = socket.local_addr().unwrap_or(SocketAddr::new(ip, port));
    let link = Arc::new(UdpLink { socket, queue: Arc::new(UdpQueue::new(local)) });
    let weak = Arc::downgrade(&link);
    spawn("astrid-net-udp", move || udp_receiver(&weak))?;
    Ok(link)
}

/// Queues arriving datagrams until the capsule drops the socket.
fn udp_receiver(link: &std::sync::Weak<UdpLink>) {
    let mut buf = vec![0u8; UDP_RECEIVE_BYTES];
    loop {
        let Some(l) = link.upgrade() else { return };
        match platform::poll_fd(l.socket.as_raw_fd(), POLLIN, IDLE) {
            Ok(ev) if ev & POLLIN != 0 => {
                if let Ok((n, from)) = l.socket.recv_from(&mut buf) {
                    l.queue.deliver(Datagram { data: buf[..n].to_vec(), from });
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

impl UdpLink {
    /// Sends one datagram; a send that cannot go within a second fails.
    pub fn send_to(&self, data: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        let until = Instant::now() + UDP_SEND_PATIENCE;
        loop {
            match self.socket.send_to(data, to) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < until => {
                    platform::poll_fd(self.socket.as_raw_fd(), POLLOUT, UDP_SEND_POLL)?;
                }
                other => return other,
            }
        }
    }
}
