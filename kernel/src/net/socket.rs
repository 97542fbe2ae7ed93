//! The sockets a capsule holds — TCP streams, loopback listeners, UDP sockets — and
//! what it can do with them. Every call that can block waits on the wait primitive
//! with the socket's own deadline (read/write timeouts) and the capsule's
//! cancellation (`Cancelled`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::NetError;
use super::addr;
use super::codec::{Frame, FrameReader};
use super::conn::{Conn, Datagram, MAX_DATAGRAM, StreamOptions, UdpQueue};
use super::link::{self, UdpLink};
use super::local::{AcceptQueue, Loopback};
use super::policy::UdpBind;
use crate::quota::Held;
use crate::wait::{self, CancelToken, WaitError};

fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

/// A wait's end as an error: cancellation, or `timed_out`.
fn waited(e: WaitError, timed_out: NetError) -> NetError {
    match e {
        WaitError::Cancelled => NetError::Cancelled,
        WaitError::TimedOut => timed_out,
    }
}

/// A listener on the image's loopback.
pub struct TcpListener {
    queue: Arc<AcceptQueue>,
    loopback: Arc<Loopback>,
    /// Its owner's charge for it (`NetCounts`), shared with its pollables.
    pub held: Option<Held>,
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.loopback.unlisten(&self.queue);
    }
}

impl TcpListener {
    /// Listens on `ip:port` of `loopback` (port 0: an ephemeral one).
    pub fn bind(loopback: &Arc<Loopback>, ip: IpAddr, port: u16) -> Result<TcpListener, NetError> {
        let queue = loopback.listen(ip, port).map_err(|_| NetError::AddressInUse)?;
        Ok(TcpListener { queue, loopback: Arc::clone(loopback), held: None })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.queue.addr
    }

    /// Ready when a connection is queued, or the listener is closed.
    pub fn readiness(&self) -> Arc<AcceptQueue> {
        Arc::clone(&self.queue)
    }

    /// Waits for a connection until `until` (none: until one comes); `None` when the
    /// time passed first.
    pub fn accept(&self, until: Option<Instant>, cancel: &CancelToken) -> Result<Option<Conn>, NetError> {
        loop {
            if let Some(conn) = self.queue.take_or_closed()? {
                return Ok(Some(conn));
            }
            match wait::wait_one(&*self.queue, cancel, until) {
                Ok(()) => {}
                Err(WaitError::TimedOut) => return Ok(None),
                Err(e) => return Err(waited(e, NetError::Timeout)),
            }
        }
    }
}

/// A connected TCP stream: in the image, or leaving it through the kernel.
pub struct TcpStream {
    pub conn: Conn,
    /// Its owner's charge for the connection (`NetCounts`), shared with its halves and
    /// pollables: the connection counts until the last of them is dropped.
    pub held: Option<Held>,
    pub options: StreamOptions,
    /// A length-prefixed frame being assembled by `read_frame`.
    frames: FrameReader,
    read_shut: bool,
    write_shut: bool,
}

impl TcpStream {
    pub fn new(conn: Conn) -> TcpStream {
        TcpStream { conn, held: None, options: StreamOptions::default(), frames: FrameReader::default(), read_shut: false, write_shut: false }
    }

    /// Charges the frames this stream assembles to `account` (its owner's).
    pub fn frames_charged_to(mut self, account: &std::sync::Arc<crate::quota::Account>) -> TcpStream {
        self.frames = FrameReader::charged_to(account);
        self
    }

    /// Whether the capsule has not shut the stream's read side.
    pub fn read_open(&self) -> bool {
        !self.read_shut
    }

    /// Without waiting: a whole length-prefixed frame when one has arrived.
    pub fn read_frame(&mut self) -> Result<Frame, NetError> {
        if self.read_shut {
            return Err(NetError::Closed);
        }
        let reader = self.conn.source.reader();
        Ok(self.frames.poll(|need| reader.read(need))?)
    }

    /// Writes `data` as one frame, waiting up to the write timeout for room.
    pub fn write_frame(&self, data: &[u8], cancel: &CancelToken) -> Result<(), NetError> {
        // The prefix, then the body where it lies: no second copy of a 10 MB frame.
        self.write(&super::codec::prefix(data)?, true, cancel)?;
        if !data.is_empty() {
            self.write(data, true, cancel)?;
        }
        Ok(())
    }

    /// Reads (or, without `consume`, peeks) up to `max` bytes, waiting up to the read
    /// timeout (then: none).
    pub fn read(&self, max: usize, consume: bool, cancel: &CancelToken) -> Result<Vec<u8>, NetError> {
        if self.read_shut {
            return Err(NetError::Closed);
        }
        let source = &self.conn.source;
        let until = deadline(self.options.read_timeout);
        loop {
            let got = if consume { source.reader().read(max) } else { source.reader().peek(max) };
            match got {
                Ok(bytes) if !bytes.is_empty() || max == 0 => return Ok(bytes),
                Ok(_) => {}
                Err(_) => return Err(self.conn.end_error()),
            }
            match wait::wait_one(&**source, cancel, until) {
                Ok(()) => {}
                Err(WaitError::TimedOut) => return Ok(Vec::new()),
                Err(e) => return Err(waited(e, NetError::Timeout)),
            }
        }
    }

    /// Writes what fits of `data` once the stream has room, waiting up to the write
    /// timeout; `all` keeps going until every byte is in.
    pub fn write(&self, data: &[u8], all: bool, cancel: &CancelToken) -> Result<usize, NetError> {
        if self.write_shut {
            return Err(NetError::Closed);
        }
        let sink = &self.conn.sink;
        let until = deadline(self.options.write_timeout);
        let mut done = 0;
        loop {
            match sink.writer().write(&data[done..]) {
                Ok(n) => done += n,
                Err(_) => return Err(self.conn.end_error()),
            }
            if done == data.len() || (done > 0 && !all) {
                return Ok(done);
            }
            if let Err(e) = wait::wait_one(&**sink, cancel, until) {
                return Err(waited(e, NetError::Timeout));
            }
        }
    }

    /// Shuts the read side, the write side, or both.
    pub fn shutdown(&mut self, read: bool, write: bool) -> Result<(), NetError> {
        if write && !read && self.conn.kernel.is_some() {
            // Kernel 0.11's shutdown is a no-op: a FIN goes out only when the socket
            // closes, which needs both directions shut.
            return Err(NetError::other("kernel 0.11 cannot half-close a TCP connection: use shutdown(both) or drop the stream to close it"));
        }
        if read {
            self.read_shut = true;
            self.conn.source.reader().close();
        }
        if write {
            self.write_shut = true;
            self.conn.sink.writer().close();
        }
        Ok(())
    }

    pub fn set_nodelay(&mut self, on: bool) -> Result<(), NetError> {
        if let Some(k) = &self.conn.kernel {
            k.set_nodelay(on).map_err(|e| link::io_error(&e))?;
        }
        self.options.nodelay = on;
        Ok(())
    }

    pub fn set_hop_limit(&mut self, hops: u32) -> Result<(), NetError> {
        if hops == 0 || hops > 255 {
            return Err(NetError::Other(format!("hop limit {hops} is not within 1..=255")));
        }
        if let Some(k) = &self.conn.kernel {
            k.set_ttl(hops).map_err(|e| NetError::Other(format!("the kernel cannot set the hop limit: {e}")))?;
        }
        self.options.hop_limit = hops;
        Ok(())
    }

    pub fn set_keepalive(&mut self, secs: Option<u64>) -> Result<(), NetError> {
        if self.conn.kernel.is_some() {
            return Err(NetError::other("kernel 0.11 has no keepalive option (it keeps accepted connections alive on its own)"));
        }
        self.options.keepalive = secs;
        Ok(())
    }

    pub fn set_linger(&mut self, ms: Option<u64>) {
        if let Some(k) = &self.conn.kernel {
            k.set_linger(ms.map(Duration::from_millis));
        }
        self.options.linger = ms;
    }
}

/// A UDP socket: on the image's loopback, or on the kernel's stack.
pub struct UdpSocket {
    queue: Arc<UdpQueue>,
    /// Its owner's charge for it (`NetCounts`), shared with its pollables.
    pub held: Option<Held>,
    /// The kernel socket, for a socket bound outside the image's loopback.
    kernel: Option<Arc<UdpLink>>,
    /// Where `send` goes and `recv` hears from, once connected.
    pub peer: Option<SocketAddr>,
    pub read_timeout: Option<Duration>,
}

impl UdpSocket {
    /// Binds where the policy decided (port 0: an ephemeral one).
    pub fn bind(loopback: &Loopback, at: UdpBind, port: u16) -> Result<UdpSocket, NetError> {
        let (queue, kernel) = match at {
            UdpBind::Loopback(ip) => (loopback.bind_udp(ip, port).map_err(|_| NetError::AddressInUse)?, None),
            UdpBind::Outside(ip) => {
                let link = link::udp_bind(ip, port).map_err(|e| link::io_error(&e))?;
                (Arc::clone(&link.queue), Some(link))
            }
        };
        Ok(UdpSocket { queue, held: None, kernel, peer: None, read_timeout: None })
    }

    /// Whether the socket is on the kernel's stack (it talks to the world, not to the
    /// image's loopback).
    pub fn is_outside(&self) -> bool {
        self.kernel.is_some()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.queue.addr
    }

    /// Ready when a datagram is queued.
    pub fn readiness(&self) -> Arc<UdpQueue> {
        Arc::clone(&self.queue)
    }

    /// Sends one datagram to `to` (which the policy chose); its length when it went.
    /// A send leaving the image may wait for room in the kernel: `cancel` ends that.
    pub fn send_to(&self, data: Vec<u8>, to: SocketAddr, loopback: &Loopback, cancel: &CancelToken) -> Result<u32, NetError> {
        if data.len() > MAX_DATAGRAM {
            return Err(NetError::Other(format!("a datagram of {} bytes is over the {MAX_DATAGRAM}-byte limit", data.len())));
        }
        let n = data.len() as u32;
        if let Some(link) = &self.kernel {
            return link.send_to(&data, to, cancel).map(|_| n);
        }
        // Delivered or lost (no socket there, its queue full): UDP does not say.
        loopback.send_udp(to.port(), Datagram { data, from: self.queue.addr });
        Ok(n)
    }

    /// Sends one datagram to the connected peer.
    pub fn send(&self, data: Vec<u8>, loopback: &Loopback, cancel: &CancelToken) -> Result<u32, NetError> {
        match self.peer {
            Some(to) => self.send_to(data, to, loopback, cancel),
            None => Err(NetError::other("the socket is not connected: call connect first or use send-to")),
        }
    }

    /// The next datagram (cut to `max` bytes) from anyone, or from the connected peer
    /// only; `None` when the read timeout passed first.
    pub fn recv_from(&self, max: u32, cancel: &CancelToken) -> Result<Option<Datagram>, NetError> {
        let (queue, peer, until) = (&self.queue, self.peer, deadline(self.read_timeout));
        loop {
            let mut got = queue.take(|d| peer.is_none_or(|p| p.port() == d.from.port() && (addr::is_loopback(p.ip()) || p.ip() == d.from.ip())));
            if let Some(d) = &mut got {
                d.data.truncate(max as usize);
                return Ok(got);
            }
            match wait::wait_one(&**queue, cancel, until) {
                Ok(()) => {}
                Err(WaitError::TimedOut) => return Ok(None),
                Err(e) => return Err(waited(e, NetError::Timeout)),
            }
        }
    }

    /// The next datagram's bytes from the connected peer.
    pub fn recv(&self, max: u32, cancel: &CancelToken) -> Result<Option<Vec<u8>>, NetError> {
        if self.peer.is_none() {
            return Err(NetError::other("the socket is not connected: call connect first or use recv-from"));
        }
        Ok(self.recv_from(max, cancel)?.map(|d| d.data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn lo() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    fn pair(net: &Arc<Loopback>) -> (TcpListener, TcpStream, TcpStream) {
        let listener = TcpListener::bind(net, lo(), 0).unwrap();
        let client = net.connect(lo(), listener.local_addr()).unwrap();
        let server = listener.accept(Some(Instant::now()), &CancelToken::new()).unwrap().unwrap();
        (listener, TcpStream::new(client), TcpStream::new(server))
    }

    #[test]
    fn frames_cross_a_loopback_stream() {
        let net = Arc::new(Loopback::default());
        let (_l, client, mut server) = pair(&net);
        let never = CancelToken::new();
        assert_eq!(server.read_frame(), Ok(Frame::Pending));
        client.write_frame(b"hello", &never).unwrap();
        client.write_frame(b"", &never).unwrap();
        assert_eq!(server.read_frame(), Ok(Frame::Data(b"hello".to_vec())));
        assert_eq!(server.read_frame(), Ok(Frame::Data(Vec::new())));
        drop(client);
        assert_eq!(server.read_frame(), Ok(Frame::Closed));
    }

    #[test]
    fn reads_time_out_empty_and_shut_sides_are_closed() {
        let net = Arc::new(Loopback::default());
        let (_l, mut client, mut server) = pair(&net);
        let never = CancelToken::new();
        server.options.read_timeout = Some(Duration::from_millis(1));
        assert_eq!(server.read(16, true, &never), Ok(Vec::new()));
        assert_eq!(client.write(b"abc", false, &never), Ok(3));
        assert_eq!(server.read(2, false, &never), Ok(b"ab".to_vec()));
        assert_eq!(server.read(16, true, &never), Ok(b"abc".to_vec()));
        client.shutdown(false, true).unwrap();
        assert_eq!(client.write(b"x", false, &never), Err(NetError::Closed));
        assert_eq!(server.read(16, true, &never), Err(NetError::Closed));
        server.shutdown(true, false).unwrap();
        assert_eq!(server.read_frame(), Err(NetError::Closed));
    }

    #[test]
    fn a_cancelled_wait_says_so() {
        let net = Arc::new(Loopback::default());
        let (listener, _client, server) = pair(&net);
        let cancel = CancelToken::new();
        cancel.cancel();
        assert_eq!(server.read(16, true, &cancel), Err(NetError::Cancelled));
        assert!(matches!(listener.accept(None, &cancel), Err(NetError::Cancelled)));
    }

    #[test]
    fn options_of_a_loopback_stream_are_recorded() {
        let net = Arc::new(Loopback::default());
        let (_l, mut client, _server) = pair(&net);
        client.set_nodelay(true).unwrap();
        client.set_keepalive(Some(5)).unwrap();
        client.set_linger(Some(10));
        assert!(client.set_hop_limit(0).is_err() && client.set_hop_limit(256).is_err());
        client.set_hop_limit(9).unwrap();
        let o = &client.options;
        assert_eq!((o.nodelay, o.keepalive, o.linger, o.hop_limit), (true, Some(5), Some(10), 9));
    }

    #[test]
    fn a_closed_listener_answers_closed_and_frees_its_port() {
        let net = Arc::new(Loopback::default());
        let listener = TcpListener::bind(&net, lo(), 7070).unwrap();
        assert!(matches!(TcpListener::bind(&net, lo(), 7070), Err(NetError::AddressInUse)));
        assert!(matches!(listener.accept(Some(Instant::now()), &CancelToken::new()), Ok(None)));
        drop(listener);
        assert!(TcpListener::bind(&net, lo(), 7070).is_ok());
    }

    #[test]
    fn udp_between_loopback_sockets() {
        let net = Arc::new(Loopback::default());
        let never = CancelToken::new();
        let a = UdpSocket::bind(&net, UdpBind::Loopback(lo()), 0).unwrap();
        let mut b = UdpSocket::bind(&net, UdpBind::Loopback(lo()), 0).unwrap();
        assert!(!a.is_outside());
        assert!(b.send(b"x".to_vec(), &net, &never).is_err(), "not connected");
        assert!(b.recv(8, &never).is_err(), "not connected");
        assert_eq!(a.send_to(b"hello".to_vec(), b.local_addr(), &net, &never), Ok(5));
        let d = b.recv_from(3, &never).unwrap().unwrap();
        assert_eq!((d.data.as_slice(), d.from), (&b"hel"[..], a.local_addr()));
        assert!(a.send_to(vec![0; MAX_DATAGRAM + 1], b.local_addr(), &net, &never).is_err());
        // A connected socket hears only its peer.
        b.peer = Some(a.local_addr());
        b.read_timeout = Some(Duration::from_millis(1));
        let c = UdpSocket::bind(&net, UdpBind::Loopback(lo()), 0).unwrap();
        c.send_to(b"other".to_vec(), b.local_addr(), &net, &never).unwrap();
        assert_eq!(b.recv(8, &never), Ok(None));
        a.send_to(b"peer".to_vec(), b.local_addr(), &net, &never).unwrap();
        assert_eq!(b.recv(8, &never), Ok(Some(b"peer".to_vec())));
    }
}
