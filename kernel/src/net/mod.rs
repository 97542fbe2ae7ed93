//! `astrid:net@1.0.0` (and `astrid:request-context`, which asks about its streams).
//!
//! - Loopback (`localhost`, 127.0.0.0/8, ::1) belongs to the image (`local.rs`):
//!   listeners, connections and datagrams between capsules of one image are joined in
//!   memory and never reach the kernel's network stack.
//! - Everything else leaves through the kernel's TCP (`kernel.rs`) where the capsule's
//!   policy (its manifest's `net_connect`) allows it and the airlock (`addr.rs`) does
//!   not stop it. Listeners are loopback-only, as the WIT says; the run command's
//!   `--publish PORT` carries outside connections to a capsule listening on
//!   127.0.0.1:PORT.
//! - Every call that can block waits on the wait primitive with the image's own
//!   deadline (read/write timeouts, a connect timeout) and the capsule's cancellation;
//!   a cancelled wait answers `closed`, and the audit record says `cancelled`.
//! - Per capsule: 8 TCP streams, 4 listeners, 4 UDP sockets (`quota` beyond).
//! - Unix-domain sockets do not exist in the image: `bind-unix` is `capability-denied`.

pub mod addr;
pub mod kernel;
pub mod local;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Resource;

use crate::engine::state::CapsuleState;
use crate::io::astrid::net::host::{ErrorCode, Host, HostTcpListener, HostTcpStream, HostUdpSocket, HostUnixListener, NetReadStatus, ShutdownHow, UdpDatagram};
use crate::io::{Counts, InputStream, OutputStream, Pollable, audit};
use crate::sources::{PipeSink, PipeSource};
use crate::wait::{self, Readiness, WaitError};
use addr::{Destination, Pattern};
use local::{AcceptQueue, BindError, Conn, Datagram, Loopback, UdpQueue};

/// Streams, listeners and UDP sockets one capsule may hold.
pub const MAX_STREAMS: usize = 8;
pub const MAX_LISTENERS: usize = 4;
pub const MAX_UDP: usize = 4;
/// Longest `poll-accept` wait (the WIT's cap).
pub const MAX_POLL_ACCEPT: Duration = Duration::from_secs(60);
/// Largest length-prefixed frame (the WIT's 10 MB).
pub const MAX_FRAME: usize = 10 * 1024 * 1024;
/// How long a name lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The network of one image: its loopback, and whether a NIC (or the host, in hosted
/// mode) is there for connections that leave.
pub struct Network {
    pub loopback: Arc<Loopback>,
    pub external: bool,
}

impl Default for Network {
    fn default() -> Self {
        Network { loopback: Arc::default(), external: false }
    }
}

/// What a capsule may do on the network: its manifest's `net_bind`, `net_connect` and
/// `net_udp`. Without a manifest: loopback only (binds, connects and datagrams inside
/// the image), nothing outside it.
#[derive(Clone, Debug)]
pub struct NetPolicy {
    pub bind: Vec<Pattern>,
    pub connect: Vec<Pattern>,
    pub udp_bind: Vec<Pattern>,
    pub udp_send: Vec<Pattern>,
    pub connect_timeout: Duration,
}

impl Default for NetPolicy {
    fn default() -> Self {
        let lo = || vec![Pattern { host: Some("localhost".into()), port: None }];
        NetPolicy { bind: lo(), connect: lo(), udp_bind: lo(), udp_send: lo(), connect_timeout: Duration::from_secs(10) }
    }
}

/// Waits up to `linger` for the kernel connections still sending what capsules wrote;
/// returns how many are still open after it. Temporary: a thin wrapper over `kernel`
/// until the net split brings its own.
pub fn drain(linger: Duration) -> usize {
    let open = kernel::sending();
    if open == 0 {
        return 0;
    }
    println!("astrid: waiting for {open} connection(s) to finish sending (at most {} s)", linger.as_secs());
    kernel::wait_until_sent(Instant::now() + linger)
}

fn allowed(patterns: &[Pattern], host: &str, port: u16) -> bool {
    patterns.iter().any(|p| p.matches(host, port))
}

/// Live counts of one capsule's network resources.
#[derive(Default, Debug)]
pub struct NetCounts {
    streams: usize,
    listeners: usize,
    udp: usize,
}

/// `astrid:net/host.tcp-listener`.
pub struct TcpListener {
    queue: Arc<AcceptQueue>,
    loopback: Arc<Loopback>,
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.loopback.unlisten(&self.queue);
    }
}

/// Options a capsule set on a stream. The in-image loopback records them (they have no
/// effect on memory pipes); kernel connections apply what kernel 0.11 supports.
#[derive(Debug)]
struct StreamOptions {
    nodelay: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    hop_limit: u32,
    keepalive: Option<u64>,
    linger: Option<u64>,
    reuseaddr: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { nodelay: false, read_timeout: None, write_timeout: None, hop_limit: 64, keepalive: None, linger: None, reuseaddr: false }
    }
}

/// `astrid:net/host.tcp-stream`.
pub struct TcpStream {
    conn: Conn,
    options: StreamOptions,
    /// A length-prefixed frame being assembled by `read`.
    frame: Vec<u8>,
    read_shut: bool,
    write_shut: bool,
}

/// `astrid:net/host.udp-socket`.
pub struct UdpSocket {
    queue: Arc<UdpQueue>,
    /// The kernel socket, for a socket bound outside the image's loopback.
    kernel: Option<Arc<kernel::UdpLink>>,
    peer: Option<SocketAddr>,
    read_timeout: Option<Duration>,
}

/// `astrid:net/host.unix-listener`: the image has no Unix-domain sockets, so none is
/// ever handed out.
pub enum UnixListener {}

fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

/// Where a stream's end of file came from: a reset connection, or a clean close.
fn closed_code(conn: &Conn) -> ErrorCode {
    match conn.kernel.as_ref().and_then(|k| k.failure()) {
        Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::BrokenPipe) => ErrorCode::ConnectionReset,
        Some(kind) => ErrorCode::Unknown(format!("connection failed: {kind}")),
        None => ErrorCode::Closed,
    }
}

fn error_text(e: &ErrorCode) -> String {
    match e {
        ErrorCode::Unknown(m) => format!("unknown: {m}"),
        other => format!("{other:?}"),
    }
}

impl CapsuleState {
    fn net_done<T>(&mut self, function: &str, started: Instant, bytes: Option<u64>, result: Result<T, ErrorCode>) -> wasmtime::Result<Result<T, ErrorCode>> {
        let counts = Counts { bytes, ..Counts::default() };
        audit(self, function, started, counts, result.as_ref().err().map(error_text).as_deref());
        Ok(result)
    }

    fn net_cancelled<T>(&mut self, function: &str, started: Instant) -> wasmtime::Result<Result<T, ErrorCode>> {
        audit(self, function, started, Counts::default(), Some("cancelled"));
        Ok(Err(ErrorCode::Closed))
    }

    fn push_stream(&mut self, conn: Conn) -> wasmtime::Result<Resource<TcpStream>> {
        let stream = self.push(TcpStream { conn, options: StreamOptions::default(), frame: Vec::new(), read_shut: false, write_shut: false })?;
        self.net_counts.streams += 1;
        Ok(stream)
    }

    /// Takes a queued connection for `accept`, within the stream quota.
    fn accept_from(&mut self, queue: &AcceptQueue) -> wasmtime::Result<Result<Option<Resource<TcpStream>>, ErrorCode>> {
        if self.net_counts.streams >= MAX_STREAMS {
            return Ok(Err(ErrorCode::Quota));
        }
        match queue.take() {
            Some(conn) => Ok(Ok(Some(self.push_stream(conn)?))),
            None if queue.is_ready() => Ok(Err(ErrorCode::Closed)),
            None => Ok(Ok(None)),
        }
    }

    /// Waits for a connection until `deadline` (none: until one comes).
    fn accept_wait(&mut self, this: &Resource<TcpListener>, until: Option<Instant>) -> wasmtime::Result<Result<Option<Resource<TcpStream>>, WaitOr>> {
        let queue = self.table.get(this)?.queue.clone();
        loop {
            match self.accept_from(&queue)? {
                Ok(Some(s)) => return Ok(Ok(Some(s))),
                Err(e) => return Ok(Err(WaitOr::Code(e))),
                Ok(None) => {}
            }
            match wait::wait_one(&*queue, &self.cancel, until) {
                Ok(()) => {}
                Err(WaitError::TimedOut) => return Ok(Ok(None)),
                Err(WaitError::Cancelled) => return Ok(Err(WaitOr::Cancelled)),
            }
        }
    }

    /// Reads (or peeks) up to `max` bytes, waiting up to the read timeout.
    fn stream_read(&mut self, this: &Resource<TcpStream>, max: u32, consume: bool) -> wasmtime::Result<Result<Vec<u8>, WaitOr>> {
        let s = self.table.get(this)?;
        if s.read_shut {
            return Ok(Err(WaitOr::Code(ErrorCode::Closed)));
        }
        let source: Arc<PipeSource> = s.conn.source.clone();
        let until = deadline(s.options.read_timeout);
        let max = (max as usize).min(crate::io::READ_CEILING);
        loop {
            let got = if consume { source.reader().read(max) } else { source.reader().peek(max) };
            match got {
                Ok(bytes) if !bytes.is_empty() || max == 0 => return Ok(Ok(bytes)),
                Ok(_) => {}
                Err(_) => return Ok(Err(WaitOr::Code(closed_code(&self.table.get(this)?.conn)))),
            }
            match wait::wait_one(&*source, &self.cancel, until) {
                Ok(()) => {}
                Err(WaitError::TimedOut) => return Ok(Ok(Vec::new())),
                Err(WaitError::Cancelled) => return Ok(Err(WaitOr::Cancelled)),
            }
        }
    }

    /// Writes what fits of `data` once the stream has room, waiting up to the write
    /// timeout; `all` keeps going until every byte is in.
    fn stream_write(&mut self, this: &Resource<TcpStream>, data: &[u8], all: bool) -> wasmtime::Result<Result<usize, WaitOr>> {
        let s = self.table.get(this)?;
        if s.write_shut {
            return Ok(Err(WaitOr::Code(ErrorCode::Closed)));
        }
        let sink: Arc<PipeSink> = s.conn.sink.clone();
        let until = deadline(s.options.write_timeout);
        let mut done = 0;
        loop {
            match sink.writer().write(&data[done..]) {
                Ok(n) => done += n,
                Err(_) => return Ok(Err(WaitOr::Code(closed_code(&self.table.get(this)?.conn)))),
            }
            if done == data.len() || (done > 0 && !all) {
                return Ok(Ok(done));
            }
            match wait::wait_one(&*sink, &self.cancel, until) {
                Ok(()) => {}
                Err(WaitError::TimedOut) => return Ok(Err(WaitOr::Code(ErrorCode::Timeout))),
                Err(WaitError::Cancelled) => return Ok(Err(WaitOr::Cancelled)),
            }
        }
    }

    /// Where a connect to `host:port` leads, after the policy and the airlock.
    fn route(&mut self, host: &str, port: u16) -> Result<Route, ErrorCode> {
        let dest = addr::classify(host).ok_or(ErrorCode::AddressNotAvailable)?;
        if !allowed(&self.net_policy.connect, host, port) {
            return Err(ErrorCode::CapabilityDenied);
        }
        let ip = match dest {
            Destination::Loopback(ip) => return Ok(Route::Loopback(SocketAddr::new(ip, port))),
            Destination::External(ip) => {
                if addr::airlock_blocks(ip) && !self.net_policy.connect.iter().any(|p| p.names_address(ip)) {
                    return Err(ErrorCode::AirlockRejected);
                }
                ip
            }
            Destination::Name(name) => {
                if !self.network.external {
                    return Err(ErrorCode::NameUnresolvable);
                }
                let ips = kernel::resolve(&name, Instant::now() + RESOLVE_TIMEOUT, &self.cancel).unwrap_or_default();
                if ips.is_empty() {
                    return Err(ErrorCode::NameUnresolvable);
                }
                // A name never leads to the image's loopback or past the airlock.
                let policy = &self.net_policy.connect;
                *ips.iter()
                    .find(|ip| !addr::airlock_blocks(**ip) || policy.iter().any(|p| p.names_address(**ip)))
                    .ok_or(ErrorCode::AirlockRejected)?
            }
        };
        if !self.network.external {
            return Err(ErrorCode::Unknown("this image has no network interface: run it with networking (scripts/run attaches one unless --net none)".into()));
        }
        Ok(Route::External(SocketAddr::new(ip, port)))
    }
}

enum Route {
    Loopback(SocketAddr),
    External(SocketAddr),
}

/// A blocking call's end: an error code, or the capsule's cancellation.
enum WaitOr {
    Code(ErrorCode),
    Cancelled,
}

fn io_code(e: &std::io::Error) -> ErrorCode {
    use std::io::ErrorKind as K;
    // Kernel 0.11's connect answers EFAULT when the handshake ends in a reset (the
    // socket fell back to CLOSED): that is a refused connection.
    if cfg!(target_os = "hermit") && e.raw_os_error() == Some(14) {
        return ErrorCode::ConnectionRefused;
    }
    match e.kind() {
        K::ConnectionRefused => ErrorCode::ConnectionRefused,
        K::ConnectionReset | K::ConnectionAborted => ErrorCode::ConnectionReset,
        K::TimedOut => ErrorCode::Timeout,
        K::AddrInUse => ErrorCode::AddressInUse,
        K::AddrNotAvailable => ErrorCode::AddressNotAvailable,
        _ => ErrorCode::Unknown(e.to_string()),
    }
}

fn show(addr: SocketAddr) -> String {
    addr::show(addr)
}

/// The outcome of a blocking call, audited: cancellation says so in the log.
macro_rules! finish {
    ($state:expr, $function:expr, $started:expr, $bytes:expr, $result:expr) => {
        match $result {
            Ok(v) => $state.net_done($function, $started, $bytes, Ok(v)),
            Err(WaitOr::Code(e)) => $state.net_done($function, $started, None, Err(e)),
            Err(WaitOr::Cancelled) => $state.net_cancelled($function, $started),
        }
    };
}

impl Host for CapsuleState {
    fn bind_unix(&mut self) -> wasmtime::Result<Result<Resource<UnixListener>, ErrorCode>> {
        // No Unix-domain sockets (and no session handshake) exist in the image.
        self.net_done("astrid:net/host.bind-unix", Instant::now(), None, Err(ErrorCode::CapabilityDenied))
    }

    fn bind_tcp(&mut self, host: String, port: u16) -> wasmtime::Result<Result<Resource<TcpListener>, ErrorCode>> {
        let started = Instant::now();
        let result = match addr::classify(&host) {
            // Listeners are confined to loopback (the WIT's rule); outside clients reach
            // them through the run command's --publish.
            Some(Destination::Loopback(ip)) => {
                if !allowed(&self.net_policy.bind, &host, port) {
                    Err(ErrorCode::CapabilityDenied)
                } else if self.net_counts.listeners >= MAX_LISTENERS {
                    Err(ErrorCode::Quota)
                } else {
                    match self.network.loopback.listen(ip, port) {
                        Ok(queue) => {
                            let listener = self.push(TcpListener { queue, loopback: self.network.loopback.clone() })?;
                            self.net_counts.listeners += 1;
                            Ok(listener)
                        }
                        Err(BindError::InUse | BindError::NoFreePort) => Err(ErrorCode::AddressInUse),
                    }
                }
            }
            _ => Err(ErrorCode::AddressNotAvailable),
        };
        self.net_done("astrid:net/host.bind-tcp", started, None, result)
    }

    fn connect_tcp(&mut self, host: String, port: u16) -> wasmtime::Result<Result<Resource<TcpStream>, ErrorCode>> {
        const F: &str = "astrid:net/host.connect-tcp";
        let started = Instant::now();
        if self.net_counts.streams >= MAX_STREAMS {
            return self.net_done(F, started, None, Err(ErrorCode::Quota));
        }
        let route = match self.route(&host, port) {
            Ok(r) => r,
            Err(e) => return self.net_done(F, started, None, Err(e)),
        };
        match route {
            Route::Loopback(to) => {
                let result = match self.network.loopback.connect(local::loopback_like(to.ip()), to) {
                    Some(conn) => Ok(self.push_stream(conn)?),
                    None => Err(ErrorCode::ConnectionRefused),
                };
                self.net_done(F, started, None, result)
            }
            Route::External(to) => {
                let until = Instant::now() + self.net_policy.connect_timeout;
                let pending = match kernel::connect(to, until) {
                    Ok(p) => p,
                    Err(e) => return self.net_done(F, started, None, Err(io_code(&e))),
                };
                match wait::wait_one(&*pending, &self.cancel, Some(until)) {
                    Ok(()) => {}
                    Err(WaitError::Cancelled) => return self.net_cancelled(F, started),
                    Err(WaitError::TimedOut) => return self.net_done(F, started, None, Err(ErrorCode::Timeout)),
                }
                let result = match pending.take() {
                    Some(Ok(stream)) => match kernel::attach(stream) {
                        Ok(conn) => Ok(self.push_stream(conn)?),
                        Err(e) => Err(io_code(&e)),
                    },
                    Some(Err(e)) => Err(io_code(&e)),
                    None => Err(ErrorCode::Unknown("the connect finished without a result".into())),
                };
                self.net_done(F, started, None, result)
            }
        }
    }

    fn udp_bind(&mut self, host: String, port: u16) -> wasmtime::Result<Result<Resource<UdpSocket>, ErrorCode>> {
        let started = Instant::now();
        let result = match addr::classify(&host) {
            Some(Destination::Loopback(ip)) => {
                if !allowed(&self.net_policy.udp_bind, &host, port) {
                    Err(ErrorCode::CapabilityDenied)
                } else if self.net_counts.udp >= MAX_UDP {
                    Err(ErrorCode::Quota)
                } else {
                    match self.network.loopback.bind_udp(ip, port) {
                        Ok(queue) => {
                            let socket = self.push(UdpSocket { queue, kernel: None, peer: None, read_timeout: None })?;
                            self.net_counts.udp += 1;
                            Ok(socket)
                        }
                        Err(_) => Err(ErrorCode::AddressInUse),
                    }
                }
            }
            // Outside the image: the unspecified address (a socket that talks to the
            // world through the NIC), where the manifest grants it.
            Some(Destination::External(ip)) if ip.is_unspecified() => {
                if !allowed(&self.net_policy.udp_bind, &host, port) {
                    Err(ErrorCode::CapabilityDenied)
                } else if !self.network.external {
                    Err(ErrorCode::Unknown("this image has no network interface for UDP outside it (scripts/run --net)".into()))
                } else if self.net_counts.udp >= MAX_UDP {
                    Err(ErrorCode::Quota)
                } else {
                    match kernel::udp_bind(ip, port) {
                        Ok(link) => {
                            let socket = self.push(UdpSocket { queue: link.queue.clone(), kernel: Some(link), peer: None, read_timeout: None })?;
                            self.net_counts.udp += 1;
                            Ok(socket)
                        }
                        Err(e) => Err(io_code(&e)),
                    }
                }
            }
            Some(_) if !allowed(&self.net_policy.udp_bind, &host, port) => Err(ErrorCode::CapabilityDenied),
            // A specific non-loopback address: the guest's address is DHCP's to give.
            Some(_) => Err(ErrorCode::AddressNotAvailable),
            None => Err(ErrorCode::AddressNotAvailable),
        };
        self.net_done("astrid:net/host.udp-bind", started, None, result)
    }

    fn lookup_host(&mut self, host: String) -> wasmtime::Result<Result<Vec<String>, ErrorCode>> {
        let started = Instant::now();
        // "name" or "name:port" (an IPv6 literal keeps its colons).
        let (name, port) = match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
                Ok(p) => (h.to_string(), Some(p)),
                Err(_) => (host.clone(), None),
            },
            _ => (host.clone(), None),
        };
        // Allowed when an entry of net_connect or net_udp could reach the name (on the
        // port given, or on any of its ports when none is).
        let permitted = self.net_policy.connect.iter().chain(&self.net_policy.udp_send).any(|p| p.matches(&name, port.or(p.port).unwrap_or(0)));
        let result = if !permitted {
            Err(ErrorCode::CapabilityDenied)
        } else {
            match addr::classify(&name) {
                None => Err(ErrorCode::NameUnresolvable),
                // Loopback and blocked ranges are stripped, as the contract says.
                Some(Destination::Loopback(_)) => Ok(Vec::new()),
                Some(Destination::External(ip)) => Ok(if addr::airlock_blocks(ip) { Vec::new() } else { vec![ip] }),
                Some(Destination::Name(n)) if self.network.external => {
                    match kernel::resolve(&n, Instant::now() + RESOLVE_TIMEOUT, &self.cancel) {
                        Some(ips) if !ips.is_empty() => Ok(ips.into_iter().filter(|ip| !addr::airlock_blocks(*ip)).collect()),
                        _ => Err(ErrorCode::NameUnresolvable),
                    }
                }
                Some(Destination::Name(_)) => Err(ErrorCode::NameUnresolvable),
            }
            .map(|ips: Vec<IpAddr>| {
                ips.into_iter()
                    .map(|ip| match port {
                        Some(p) => show(SocketAddr::new(ip, p)),
                        None => ip.to_string(),
                    })
                    .collect()
            })
        };
        self.net_done("astrid:net/host.lookup-host", started, None, result)
    }
}

impl HostUnixListener for CapsuleState {
    fn accept(&mut self, _: Resource<UnixListener>) -> wasmtime::Result<Result<Resource<TcpStream>, ErrorCode>> {
        wasmtime::bail!("no unix-listener is ever handed out by astrid.img")
    }
    fn poll_accept(&mut self, _: Resource<UnixListener>, _: u64) -> wasmtime::Result<Result<Option<Resource<TcpStream>>, ErrorCode>> {
        wasmtime::bail!("no unix-listener is ever handed out by astrid.img")
    }
    fn subscribe_readiness(&mut self, _: Resource<UnixListener>) -> wasmtime::Result<Resource<Pollable>> {
        wasmtime::bail!("no unix-listener is ever handed out by astrid.img")
    }
    fn drop(&mut self, _: Resource<UnixListener>) -> wasmtime::Result<()> {
        wasmtime::bail!("no unix-listener is ever handed out by astrid.img")
    }
}

impl HostTcpListener for CapsuleState {
    fn accept(&mut self, this: Resource<TcpListener>) -> wasmtime::Result<Result<Resource<TcpStream>, ErrorCode>> {
        let started = Instant::now();
        let result = self.accept_wait(&this, None)?.map(|s| s.expect("an accept without a deadline returns a stream"));
        finish!(self, "astrid:net/host.tcp-listener.accept", started, None, result)
    }

    fn poll_accept(&mut self, this: Resource<TcpListener>, timeout_ms: u64) -> wasmtime::Result<Result<Option<Resource<TcpStream>>, ErrorCode>> {
        let started = Instant::now();
        let timeout = Duration::from_millis(timeout_ms).min(MAX_POLL_ACCEPT);
        let result = self.accept_wait(&this, Some(started + timeout))?;
        finish!(self, "astrid:net/host.tcp-listener.poll-accept", started, None, result)
    }

    fn local_addr(&mut self, this: Resource<TcpListener>) -> wasmtime::Result<Result<String, ErrorCode>> {
        let addr = show(self.table.get(&this)?.queue.addr);
        self.net_done("astrid:net/host.tcp-listener.local-addr", Instant::now(), None, Ok(addr))
    }

    fn subscribe_readiness(&mut self, this: Resource<TcpListener>) -> wasmtime::Result<Resource<Pollable>> {
        let started = Instant::now();
        let queue = self.table.get(&this)?.queue.clone();
        let pollable = self.push(Pollable::new(queue))?;
        audit(self, "astrid:net/host.tcp-listener.subscribe-readiness", started, Counts::default(), None);
        Ok(pollable)
    }

    fn drop(&mut self, this: Resource<TcpListener>) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.delete(this)?;
        self.net_counts.listeners -= 1;
        audit(self, "astrid:net/host.tcp-listener.drop", started, Counts::default(), None);
        Ok(())
    }
}

/// A stream option setter/getter pair over the in-image record.
macro_rules! option_accessors {
    ($set:ident, $get:ident, $field:ident, $ty:ty, $setname:literal, $getname:literal) => {
        fn $set(&mut self, this: Resource<TcpStream>, value: $ty) -> wasmtime::Result<Result<(), ErrorCode>> {
            self.table.get_mut(&this)?.options.$field = value;
            self.net_done(concat!("astrid:net/host.tcp-stream.", $setname), Instant::now(), None, Ok(()))
        }
        fn $get(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<$ty, ErrorCode>> {
            let value = self.table.get(&this)?.options.$field;
            self.net_done(concat!("astrid:net/host.tcp-stream.", $getname), Instant::now(), None, Ok(value))
        }
    };
}

impl HostTcpStream for CapsuleState {
    fn read(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<NetReadStatus, ErrorCode>> {
        const F: &str = "astrid:net/host.tcp-stream.read";
        let started = Instant::now();
        let s = self.table.get_mut(&this)?;
        if s.read_shut {
            return self.net_done(F, started, None, Err(ErrorCode::Closed));
        }
        // Non-blocking: assemble what has arrived; a whole frame is `data`.
        let reader = s.conn.source.clone();
        let result = loop {
            let need = if s.frame.len() < 4 {
                4 - s.frame.len()
            } else {
                let len = u32::from_be_bytes(s.frame[..4].try_into().unwrap()) as usize;
                if len > MAX_FRAME {
                    s.frame.clear();
                    break Err(ErrorCode::Unknown(format!("frame of {len} bytes is over the 10 MB limit")));
                }
                if s.frame.len() == 4 + len {
                    let data = s.frame.split_off(4);
                    s.frame.clear();
                    break Ok(NetReadStatus::Data(data));
                }
                4 + len - s.frame.len()
            };
            match reader.reader().read(need) {
                Ok(bytes) if bytes.is_empty() => break Ok(NetReadStatus::Pending),
                Ok(bytes) => s.frame.extend_from_slice(&bytes),
                Err(_) if s.frame.is_empty() => break Ok(NetReadStatus::Closed),
                Err(_) => break Err(ErrorCode::Unknown("the peer closed the stream in the middle of a frame".into())),
            }
        };
        let n = match &result {
            Ok(NetReadStatus::Data(d)) => d.len() as u64,
            _ => 0,
        };
        self.net_done(F, started, Some(n), result)
    }

    fn write(&mut self, this: Resource<TcpStream>, data: Vec<u8>) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        if data.len() > MAX_FRAME {
            return self.net_done("astrid:net/host.tcp-stream.write", started, None, Err(ErrorCode::Unknown("frame over the 10 MB limit".into())));
        }
        let mut framed = Vec::with_capacity(4 + data.len());
        framed.extend_from_slice(&(data.len() as u32).to_be_bytes());
        framed.extend_from_slice(&data);
        let result = self.stream_write(&this, &framed, true)?.map(|_| ());
        finish!(self, "astrid:net/host.tcp-stream.write", started, Some(data.len() as u64), result)
    }

    fn read_bytes(&mut self, this: Resource<TcpStream>, max_bytes: u32) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        let started = Instant::now();
        let result = self.stream_read(&this, max_bytes, true)?;
        let n = result.as_ref().map(|b| b.len() as u64).ok();
        finish!(self, "astrid:net/host.tcp-stream.read-bytes", started, n, result)
    }

    fn write_bytes(&mut self, this: Resource<TcpStream>, data: Vec<u8>) -> wasmtime::Result<Result<u32, ErrorCode>> {
        let started = Instant::now();
        let result = self.stream_write(&this, &data, false)?.map(|n| n as u32);
        let n = result.as_ref().map(|n| u64::from(*n)).ok();
        finish!(self, "astrid:net/host.tcp-stream.write-bytes", started, n, result)
    }

    fn peek(&mut self, this: Resource<TcpStream>, max_bytes: u32) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        let started = Instant::now();
        let result = self.stream_read(&this, max_bytes, false)?;
        let n = result.as_ref().map(|b| b.len() as u64).ok();
        finish!(self, "astrid:net/host.tcp-stream.peek", started, n, result)
    }

    fn shutdown(&mut self, this: Resource<TcpStream>, how: ShutdownHow) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        let s = self.table.get_mut(&this)?;
        let (read, write) = match how {
            ShutdownHow::Receive => (true, false),
            ShutdownHow::Send => (false, true),
            ShutdownHow::Both => (true, true),
        };
        let result = if write && !read && s.conn.kernel.is_some() {
            // Kernel 0.11's shutdown is a no-op: a FIN goes out only when the socket
            // closes, which needs both directions shut.
            Err(ErrorCode::Unknown("kernel 0.11 cannot half-close a TCP connection: use shutdown(both) or drop the stream to close it".into()))
        } else {
            if read {
                s.read_shut = true;
                s.conn.source.reader().close();
            }
            if write {
                s.write_shut = true;
                s.conn.sink.writer().close();
            }
            Ok(())
        };
        self.net_done("astrid:net/host.tcp-stream.shutdown", started, None, result)
    }

    fn peer_addr(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<String, ErrorCode>> {
        let addr = show(self.table.get(&this)?.conn.peer);
        self.net_done("astrid:net/host.tcp-stream.peer-addr", Instant::now(), None, Ok(addr))
    }

    fn local_addr(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<String, ErrorCode>> {
        let addr = show(self.table.get(&this)?.conn.local);
        self.net_done("astrid:net/host.tcp-stream.local-addr", Instant::now(), None, Ok(addr))
    }

    fn set_nodelay(&mut self, this: Resource<TcpStream>, nodelay: bool) -> wasmtime::Result<Result<(), ErrorCode>> {
        let s = self.table.get_mut(&this)?;
        let result = match &s.conn.kernel {
            Some(link) => link.set_nodelay(nodelay).map_err(|e| io_code(&e)),
            None => Ok(()),
        };
        if result.is_ok() {
            s.options.nodelay = nodelay;
        }
        self.net_done("astrid:net/host.tcp-stream.set-nodelay", Instant::now(), None, result)
    }

    fn nodelay(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<bool, ErrorCode>> {
        let v = self.table.get(&this)?.options.nodelay;
        self.net_done("astrid:net/host.tcp-stream.nodelay", Instant::now(), None, Ok(v))
    }

    fn set_read_timeout(&mut self, this: Resource<TcpStream>, timeout_ms: Option<u64>) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.table.get_mut(&this)?.options.read_timeout = timeout_ms.map(Duration::from_millis);
        self.net_done("astrid:net/host.tcp-stream.set-read-timeout", Instant::now(), None, Ok(()))
    }

    fn read_timeout(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<Option<u64>, ErrorCode>> {
        let v = self.table.get(&this)?.options.read_timeout.map(|d| d.as_millis() as u64);
        self.net_done("astrid:net/host.tcp-stream.read-timeout", Instant::now(), None, Ok(v))
    }

    fn set_write_timeout(&mut self, this: Resource<TcpStream>, timeout_ms: Option<u64>) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.table.get_mut(&this)?.options.write_timeout = timeout_ms.map(Duration::from_millis);
        self.net_done("astrid:net/host.tcp-stream.set-write-timeout", Instant::now(), None, Ok(()))
    }

    fn write_timeout(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<Option<u64>, ErrorCode>> {
        let v = self.table.get(&this)?.options.write_timeout.map(|d| d.as_millis() as u64);
        self.net_done("astrid:net/host.tcp-stream.write-timeout", Instant::now(), None, Ok(v))
    }

    fn set_hop_limit(&mut self, this: Resource<TcpStream>, hops: u32) -> wasmtime::Result<Result<(), ErrorCode>> {
        let s = self.table.get_mut(&this)?;
        let result = if hops == 0 || hops > 255 {
            Err(ErrorCode::Unknown(format!("hop limit {hops} is not within 1..=255")))
        } else {
            match &s.conn.kernel {
                Some(link) => link.set_ttl(hops).map_err(|e| ErrorCode::Unknown(format!("the kernel cannot set the hop limit: {e}"))),
                None => Ok(()),
            }
        };
        if result.is_ok() {
            s.options.hop_limit = hops;
        }
        self.net_done("astrid:net/host.tcp-stream.set-hop-limit", Instant::now(), None, result)
    }

    fn hop_limit(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<u32, ErrorCode>> {
        let v = self.table.get(&this)?.options.hop_limit;
        self.net_done("astrid:net/host.tcp-stream.hop-limit", Instant::now(), None, Ok(v))
    }

    fn set_keepalive(&mut self, this: Resource<TcpStream>, keepalive_secs: Option<u64>) -> wasmtime::Result<Result<(), ErrorCode>> {
        let s = self.table.get_mut(&this)?;
        let result = if s.conn.kernel.is_some() {
            Err(ErrorCode::Unknown("kernel 0.11 has no keepalive option (it keeps accepted connections alive on its own)".into()))
        } else {
            s.options.keepalive = keepalive_secs;
            Ok(())
        };
        self.net_done("astrid:net/host.tcp-stream.set-keepalive", Instant::now(), None, result)
    }

    fn keepalive(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<Option<u64>, ErrorCode>> {
        let v = self.table.get(&this)?.options.keepalive;
        self.net_done("astrid:net/host.tcp-stream.keepalive", Instant::now(), None, Ok(v))
    }

    fn set_linger(&mut self, this: Resource<TcpStream>, linger_ms: Option<u64>) -> wasmtime::Result<Result<(), ErrorCode>> {
        let s = self.table.get_mut(&this)?;
        if let Some(link) = &s.conn.kernel {
            link.set_linger(linger_ms.map(Duration::from_millis));
        }
        s.options.linger = linger_ms;
        self.net_done("astrid:net/host.tcp-stream.set-linger", Instant::now(), None, Ok(()))
    }

    fn linger(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<Option<u64>, ErrorCode>> {
        let v = self.table.get(&this)?.options.linger;
        self.net_done("astrid:net/host.tcp-stream.linger", Instant::now(), None, Ok(v))
    }

    option_accessors!(set_reuseaddr, reuseaddr, reuseaddr, bool, "set-reuseaddr", "reuseaddr");

    fn subscribe_readable(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Resource<Pollable>> {
        let started = Instant::now();
        let source = self.table.get(&this)?.conn.source.clone();
        let pollable = self.push(Pollable::new(source))?;
        audit(self, "astrid:net/host.tcp-stream.subscribe-readable", started, Counts::default(), None);
        Ok(pollable)
    }

    fn read_stream(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Resource<InputStream>> {
        let started = Instant::now();
        let source = self.table.get(&this)?.conn.source.clone();
        let stream = crate::io::new_input(self, source)?;
        audit(self, "astrid:net/host.tcp-stream.read-stream", started, Counts::default(), None);
        Ok(stream)
    }

    fn write_stream(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Resource<OutputStream>> {
        let started = Instant::now();
        let sink = self.table.get(&this)?.conn.sink.clone();
        let stream = crate::io::new_output(self, sink)?;
        audit(self, "astrid:net/host.tcp-stream.write-stream", started, Counts::default(), None);
        Ok(stream)
    }

    fn drop(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.delete(this)?;
        self.net_counts.streams -= 1;
        audit(self, "astrid:net/host.tcp-stream.drop", started, Counts::default(), None);
        Ok(())
    }
}

impl CapsuleState {
    /// Resolves a UDP destination the capsule may send to from `this`: loopback
    /// destinations from a socket on the image's loopback, others (allowed by the
    /// manifest and the airlock) from a socket bound outside it.
    fn udp_target(&self, this: &Resource<UdpSocket>, host: &str, port: u16) -> wasmtime::Result<Result<SocketAddr, ErrorCode>> {
        let outside = self.table.get(this)?.kernel.is_some();
        let Some(dest) = addr::classify(host) else { return Ok(Err(ErrorCode::AddressNotAvailable)) };
        if !allowed(&self.net_policy.udp_send, host, port) {
            return Ok(Err(ErrorCode::CapabilityDenied));
        }
        Ok(match dest {
            Destination::Loopback(ip) if !outside => Ok(SocketAddr::new(ip, port)),
            Destination::External(ip) if outside => {
                if addr::airlock_blocks(ip) && !self.net_policy.udp_send.iter().any(|p| p.names_address(ip)) {
                    Err(ErrorCode::AirlockRejected)
                } else {
                    Ok(SocketAddr::new(ip, port))
                }
            }
            // Loopback is reached from a loopback socket, the world from an outside one.
            _ => Err(ErrorCode::AddressNotAvailable),
        })
    }

    fn udp_send(&mut self, this: &Resource<UdpSocket>, data: Vec<u8>, to: SocketAddr) -> wasmtime::Result<Result<u32, ErrorCode>> {
        if data.len() > local::MAX_DATAGRAM {
            return Ok(Err(ErrorCode::Unknown(format!("a datagram of {} bytes is over the {}-byte limit", data.len(), local::MAX_DATAGRAM))));
        }
        let s = self.table.get(this)?;
        let n = data.len() as u32;
        if let Some(link) = &s.kernel {
            return Ok(link.send_to(&data, to).map(|_| n).map_err(|e| io_code(&e)));
        }
        let from = s.queue.addr;
        // Delivered or lost (no socket there, its queue full): UDP does not say.
        self.network.loopback.send_udp(to.port(), Datagram { data, from });
        Ok(Ok(n))
    }

    fn udp_recv(&mut self, this: &Resource<UdpSocket>, max: u32) -> wasmtime::Result<Result<Option<Datagram>, WaitOr>> {
        let s = self.table.get(this)?;
        let (queue, peer, until) = (s.queue.clone(), s.peer, deadline(s.read_timeout));
        loop {
            let mut got = queue.take(|d| peer.is_none_or(|p| p.port() == d.from.port() && (addr::is_loopback(p.ip()) || p.ip() == d.from.ip())));
            if let Some(d) = &mut got {
                d.data.truncate(max as usize);
                return Ok(Ok(got));
            }
            match wait::wait_one(&*queue, &self.cancel, until) {
                Ok(()) => {}
                Err(WaitError::TimedOut) => return Ok(Ok(None)),
                Err(WaitError::Cancelled) => return Ok(Err(WaitOr::Cancelled)),
            }
        }
    }
}

impl HostUdpSocket for CapsuleState {
    fn send_to(&mut self, this: Resource<UdpSocket>, data: Vec<u8>, peer_host: String, peer_port: u16) -> wasmtime::Result<Result<u32, ErrorCode>> {
        let started = Instant::now();
        let n = data.len() as u64;
        let result = match self.udp_target(&this, &peer_host, peer_port)? {
            Ok(to) => self.udp_send(&this, data, to)?,
            Err(e) => Err(e),
        };
        self.net_done("astrid:net/host.udp-socket.send-to", started, Some(n), result)
    }

    fn recv_from(&mut self, this: Resource<UdpSocket>, max_bytes: u32) -> wasmtime::Result<Result<Option<UdpDatagram>, ErrorCode>> {
        let started = Instant::now();
        let result = self.udp_recv(&this, max_bytes)?.map(|d| {
            d.map(|d| UdpDatagram { peer_host: d.from.ip().to_string(), peer_port: d.from.port(), data: d.data })
        });
        let n = result.as_ref().ok().map(|d| d.as_ref().map_or(0, |d| d.data.len() as u64));
        finish!(self, "astrid:net/host.udp-socket.recv-from", started, n, result)
    }

    fn connect(&mut self, this: Resource<UdpSocket>, peer_host: String, peer_port: u16) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        let result = match self.udp_target(&this, &peer_host, peer_port)? {
            Ok(to) => {
                self.table.get_mut(&this)?.peer = Some(to);
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.net_done("astrid:net/host.udp-socket.connect", started, None, result)
    }

    fn disconnect(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.table.get_mut(&this)?.peer = None;
        self.net_done("astrid:net/host.udp-socket.disconnect", Instant::now(), None, Ok(()))
    }

    fn send(&mut self, this: Resource<UdpSocket>, data: Vec<u8>) -> wasmtime::Result<Result<u32, ErrorCode>> {
        let started = Instant::now();
        let n = data.len() as u64;
        let result = match self.table.get(&this)?.peer {
            Some(to) => self.udp_send(&this, data, to)?,
            None => Err(ErrorCode::Unknown("the socket is not connected: call connect first or use send-to".into())),
        };
        self.net_done("astrid:net/host.udp-socket.send", started, Some(n), result)
    }

    fn recv(&mut self, this: Resource<UdpSocket>, max_bytes: u32) -> wasmtime::Result<Result<Option<Vec<u8>>, ErrorCode>> {
        let started = Instant::now();
        let result = if self.table.get(&this)?.peer.is_none() {
            Err(WaitOr::Code(ErrorCode::Unknown("the socket is not connected: call connect first or use recv-from".into())))
        } else {
            self.udp_recv(&this, max_bytes)?.map(|d| d.map(|d| d.data))
        };
        let n = result.as_ref().ok().map(|d| d.as_ref().map_or(0, |d| d.len() as u64));
        finish!(self, "astrid:net/host.udp-socket.recv", started, n, result)
    }

    fn peer_addr(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<Result<Option<String>, ErrorCode>> {
        let v = self.table.get(&this)?.peer.map(show);
        self.net_done("astrid:net/host.udp-socket.peer-addr", Instant::now(), None, Ok(v))
    }

    fn set_read_timeout(&mut self, this: Resource<UdpSocket>, timeout_ms: Option<u64>) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.table.get_mut(&this)?.read_timeout = timeout_ms.map(Duration::from_millis);
        self.net_done("astrid:net/host.udp-socket.set-read-timeout", Instant::now(), None, Ok(()))
    }

    fn local_addr(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<Result<String, ErrorCode>> {
        let v = show(self.table.get(&this)?.queue.addr);
        self.net_done("astrid:net/host.udp-socket.local-addr", Instant::now(), None, Ok(v))
    }

    fn subscribe_readable(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<Resource<Pollable>> {
        let started = Instant::now();
        let queue = self.table.get(&this)?.queue.clone();
        let pollable = self.push(Pollable::new(queue))?;
        audit(self, "astrid:net/host.udp-socket.subscribe-readable", started, Counts::default(), None);
        Ok(pollable)
    }

    fn drop(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.delete(this)?;
        self.net_counts.udp -= 1;
        audit(self, "astrid:net/host.udp-socket.drop", started, Counts::default(), None);
        Ok(())
    }
}

impl crate::io::astrid::request_context::host::Host for CapsuleState {
    // The image authenticates no connection (there is no Unix listener and no session
    // handshake), so every stream is "unauthenticated": `none`, as the WIT says.
    fn connection_owner(&mut self, connection: Resource<TcpStream>) -> wasmtime::Result<Result<Option<String>, ErrorCode>> {
        self.table.get(&connection)?;
        self.net_done("astrid:request-context/host.connection-owner", Instant::now(), None, Ok(None))
    }

    fn connection_principal(&mut self, connection: Resource<TcpStream>) -> wasmtime::Result<Result<Option<String>, ErrorCode>> {
        self.table.get(&connection)?;
        self.net_done("astrid:request-context/host.connection-principal", Instant::now(), None, Ok(None))
    }
}

/// Adds astrid:net and astrid:request-context to a capsule's linker.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<CapsuleState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    crate::io::astrid::net::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    crate::io::astrid::request_context::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}
