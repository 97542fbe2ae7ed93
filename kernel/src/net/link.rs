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
//! Kernel 0.11 gaps handled here: `connect` blocks without a timeout (our kernel patch
//! makes a non-blocking connect answer EINPROGRESS, so the capsule's thread connects
//! without blocking and polls under its own deadline and cancellation); half-close
//! (`shutdown`) is a no-op in the kernel.

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
use crate::quota::{Account, Charge};
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
/// Longest single kernel wait of a connect, or of a UDP send for room: how soon the
/// capsule's cancellation ends it (the kernel cannot wake the wait primitive).
const KERNEL_POLL: Duration = Duration::from_millis(20);
/// Pause after a failed accept on a published port before the next one.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);
/// Accepts on a published port that may fail in a row before it is given up.
const ACCEPT_FAILURES: u32 = 50;
/// How long a UDP send may wait for room in the kernel's socket buffer.
const UDP_SEND_PATIENCE: Duration = Duration::from_secs(1);
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
    // Both pumps' shares first: a connection gets both of its threads or none.
    let (rx, tx) = (thread_charge()?, thread_charge()?);
    SENDING.count.fetch_add(1, Ordering::SeqCst);
    let link = Arc::new(Link { stream: std::mem::ManuallyDrop::new(stream), error: Mutex::new(None), linger_ms: AtomicU64::new(DEFAULT_LINGER.as_millis() as u64) });
    let (to_capsule, capsule_source) = crate::sources::pipe(PIPE_BYTES);
    let (capsule_sink, from_capsule) = crate::sources::pipe(PIPE_BYTES);
    spawn_charged("astrid-net-rx", rx, {
        let link = Arc::clone(&link);
        move || reader_pump(&link, &to_capsule)
    })?;
    spawn_charged("astrid-net-tx", tx, {
        let link = Arc::clone(&link);
        move || writer_pump(&link, &from_capsule)
    })?;
    Ok(Conn { source: capsule_source, sink: capsule_sink, local, peer, kernel: Some(link as Arc<dyn KernelStream>) })
}

/// Threads the image may run for its network at once (two pumps per connection that
/// leaves the image, connect and lookup helpers, UDP receivers, the publish acceptor).
/// One budget for the image: past it a connect or bind answers `quota` instead of the
/// heap or the scheduler running out.
pub const MAX_THREADS: usize = 64;

fn threads() -> &'static Arc<Account> {
    static THREADS: std::sync::OnceLock<Arc<Account>> = std::sync::OnceLock::new();
    THREADS.get_or_init(|| Account::new("network thread", MAX_THREADS))
}

/// One thread's share of the budget (`quota` past it).
fn thread_charge() -> std::io::Result<Charge> {
    threads().charge(1).map_err(|e| std::io::Error::new(std::io::ErrorKind::QuotaExceeded, e))
}

/// Starts a network thread within the image's budget; its charge ends with it.
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    spawn_charged(name, thread_charge()?, f)
}

fn spawn_charged(name: &str, charge: Charge, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let _charge = charge;
            f()
        })
        .map(|_| ())
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
    // One buffer for the connection's life, as the reader pump has: no allocation per chunk.
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match pipe.read_into(&mut buf) {
            Ok(0) => {
                // Nothing written yet: wait for the capsule (or for it to close).
                let _ = wait::wait_one(pipe, &never, None);
                continue;
            }
            Ok(n) => n,
            Err(_) => return,
        };
        let mut rest = &buf[..n];
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

/// Connects to `addr`, waiting until `deadline` or the capsule's cancellation, and
/// wraps the socket as a capsule connection. The connect runs on the capsule's own
/// thread, non-blocking (kernel 0.11 as we patch it answers EINPROGRESS), so nothing
/// outlives the capsule's wait: a connect given up on is closed at once.
pub fn connect(addr: SocketAddr, deadline: Instant, cancel: &CancelToken) -> Result<Conn, NetError> {
    let stream = loop {
        if cancel.is_cancelled() {
            return Err(NetError::Cancelled);
        }
        match platform::connect_start(addr) {
            Ok(stream) => break stream,
            // Kernel 0.11 fails at once while DHCP has not finished: try again shortly.
            Err(e) if retryable(&e) && Instant::now() + CONNECT_RETRY < deadline => {
                if wait::wait_any(&[], cancel, Some(Instant::now() + CONNECT_RETRY)) == Err(WaitError::Cancelled) {
                    return Err(NetError::Cancelled);
                }
            }
            Err(e) => return Err(io_error(&e)),
        }
    };
    let fd = stream.as_raw_fd();
    wait_writable(|slice| platform::poll_fd(fd, POLLOUT | POLLERR | POLLHUP, slice).map(|ev| ev != 0), deadline, cancel)?;
    platform::connect_outcome(&stream).map_err(|e| io_error(&e))?;
    attach(stream).map_err(|e| io_error(&e))
}

/// Waits until `writable` says a kernel socket is (a connect's handshake ended, a send
/// buffer has room), until `until` (`timeout`) or the capsule's cancellation
/// (`cancelled`). `writable` waits in the kernel for at most the slice it is given,
/// never more than `KERNEL_POLL`, so the cancellation ends the wait within one slice.
fn wait_writable(mut writable: impl FnMut(Duration) -> std::io::Result<bool>, until: Instant, cancel: &CancelToken) -> Result<(), NetError> {
    loop {
        if cancel.is_cancelled() {
            return Err(NetError::Cancelled);
        }
        let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
            return Err(NetError::Timeout);
        };
        if writable(left.min(KERNEL_POLL)).map_err(|e| io_error(&e))? {
            return Ok(());
        }
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
        K::QuotaExceeded => NetError::Quota,
        _ => NetError::Other(e.to_string()),
    }
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
    // Sends must never park the capsule's thread in the kernel (see `send_to`).
    socket.set_nonblocking(true)?;
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
    /// Sends one datagram. While the kernel's send buffer is full the send waits for
    /// room, at most `UDP_SEND_PATIENCE` (then `timeout`), and the capsule's
    /// cancellation ends the wait (`cancelled`).
    pub fn send_to(&self, data: &[u8], to: SocketAddr, cancel: &CancelToken) -> Result<usize, NetError> {
        let until = Instant::now() + UDP_SEND_PATIENCE;
        loop {
            match self.socket.send_to(data, to) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(&e)),
                Ok(n) => return Ok(n),
            }
            let fd = self.socket.as_raw_fd();
            wait_writable(|slice| platform::poll_fd(fd, POLLOUT, slice).map(|ev| ev != 0), until, cancel)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel that never says writable: the wait ends at the capsule's cancellation,
    /// which lands in the middle of the third slice, and every slice is short.
    #[test]
    fn a_kernel_wait_ends_on_cancellation_in_the_next_slice() {
        let cancel = CancelToken::new();
        let mut slices = 0;
        let got = wait_writable(
            |slice| {
                assert!(slice <= KERNEL_POLL, "a slice of {slice:?}");
                slices += 1;
                if slices == 3 {
                    cancel.cancel();
                }
                Ok(false)
            },
            Instant::now() + Duration::from_secs(3600),
            &cancel,
        );
        assert_eq!(got, Err(NetError::Cancelled));
        assert_eq!(slices, 3);
    }

    #[test]
    fn a_kernel_wait_ends_at_its_deadline_or_when_writable() {
        let never = CancelToken::new();
        let mut asked = false;
        let past = wait_writable(
            |_| {
                asked = true;
                Ok(true)
            },
            Instant::now(),
            &never,
        );
        assert_eq!(past, Err(NetError::Timeout));
        assert!(!asked, "a deadline already past still waited in the kernel");
        let soon = Instant::now() + Duration::from_millis(30);
        let slept = |slice: Duration| {
            std::thread::sleep(slice);
            Ok(false)
        };
        assert_eq!(wait_writable(slept, soon, &never), Err(NetError::Timeout));
        assert_eq!(wait_writable(|_| Ok(true), soon + Duration::from_secs(60), &never), Ok(()));
        let failed = wait_writable(|_| Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)), soon + Duration::from_secs(60), &never);
        assert_eq!(failed, Err(NetError::ConnectionReset));
    }

    /// A listener on this host's loopback whose accept queue (backlog 0) is already
    /// full: further handshakes get no answer, so a connect to it stays in progress.
    fn unanswering_listener() -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: listen() on a socket we own, bound above.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let addr = listener.local_addr().unwrap();
        // Fill the queue: the first handshake completes, later ones are dropped.
        let fillers: Vec<_> = (0..2).map(|_| platform::connect_start(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(50));
        (listener, fillers)
    }

    #[test]
    fn a_connect_without_an_answer_ends_on_cancellation_or_at_its_deadline() {
        let (listener, _fillers) = unanswering_listener();
        let addr = listener.local_addr().unwrap();
        let cancel = CancelToken::new();
        let canceller = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                cancel.cancel();
            })
        };
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(matches!(connect(addr, far, &cancel), Err(NetError::Cancelled)));
        canceller.join().unwrap();
        let soon = Instant::now() + Duration::from_millis(100);
        assert!(matches!(connect(addr, soon, &CancelToken::new()), Err(NetError::Timeout)));
    }

    #[test]
    fn a_connect_reaches_a_listener_and_is_refused_by_a_closed_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let conn = connect(addr, far, &CancelToken::new()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(conn.peer, addr);
        drop(listener);
        assert!(matches!(connect(addr, far, &CancelToken::new()), Err(NetError::ConnectionRefused)));
    }
}
