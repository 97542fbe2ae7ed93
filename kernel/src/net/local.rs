//! The image's own loopback: kernel 0.11 has no loopback device (a packet to
//! 127.0.0.1 would leave through the NIC and reach the *host's* loopback), so every
//! TCP connection and UDP datagram between 127.0.0.0/8 or ::1 endpoints is joined here,
//! in memory: listeners and UDP sockets register their port, a connect finds the
//! listener and gets a pair of pipes, a datagram is queued on the socket bound to its
//! port. Ports are one space for all loopback addresses. Ports a capsule asks for with
//! `0` come from the image's ephemeral range (`conn::Ephemeral`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};

use super::NetError;
use super::conn::{Conn, Datagram, Ephemeral, UdpQueue, conn_pair};
use crate::wait::{Notifier, Readiness};

/// Connections a listener queues before further connects are refused. Each holds two
/// pipes (up to 2 × `conn::PIPE_BYTES`) and, for a connection from outside, two kernel
/// pump threads, charged to no capsule until it is accepted: kept small.
pub const BACKLOG: usize = 16;
/// Connections waiting for `accept`, and whether the listener still exists.
pub struct AcceptQueue {
    state: Mutex<(VecDeque<Conn>, bool)>,
    notifier: Notifier,
    pub addr: SocketAddr,
}

impl AcceptQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Conn>, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a connection; gives it back when the listener is gone or its backlog full.
    pub fn offer(&self, conn: Conn) -> Result<(), Conn> {
        {
            let mut state = self.lock();
            if !state.1 || state.0.len() >= BACKLOG {
                return Err(conn);
            }
            state.0.push_back(conn);
        }
        self.notifier.notify();
        Ok(())
    }

    pub fn take(&self) -> Option<Conn> {
        self.lock().0.pop_front()
    }

    /// A queued connection (`None`: none yet); `closed` once the listener is closed
    /// and none is left.
    pub fn take_or_closed(&self) -> Result<Option<Conn>, NetError> {
        let mut state = self.lock();
        match state.0.pop_front() {
            Some(conn) => Ok(Some(conn)),
            None if !state.1 => Err(NetError::Closed),
            None => Ok(None),
        }
    }

    /// Closes the listener: queued connections are dropped (their peers see end of
    /// file) and later connects are refused.
    pub fn close(&self) {
        let queued = {
            let mut state = self.lock();
            state.1 = false;
            std::mem::take(&mut state.0)
        };
        drop(queued);
        self.notifier.notify();
    }
}

impl Readiness for AcceptQueue {
    fn is_ready(&self) -> bool {
        let state = self.lock();
        !state.0.is_empty() || !state.1
    }
    fn notifier(&self) -> Option<&Notifier> {
        Some(&self.notifier)
    }
}

/// Why a bind failed.
#[derive(Debug, PartialEq, Eq)]
pub enum BindError {
    InUse,
    NoFreePort,
}

/// The loopback port spaces (TCP listeners, UDP sockets) of one image.
#[derive(Default)]
pub struct Loopback {
    tcp: Mutex<HashMap<u16, Weak<AcceptQueue>>>,
    udp: Mutex<HashMap<u16, Weak<UdpQueue>>>,
    ports: Ephemeral,
    /// Published ports: never handed out for port 0 (only the capsule that serves one
    /// may hold it).
    published: Vec<u16>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Loopback {
    /// The loopback of an image that publishes `published` to the outside.
    pub fn with_published(published: &[u16]) -> Loopback {
        Loopback { published: published.to_vec(), ..Loopback::default() }
    }

    fn claim<T>(&self, map: &Mutex<HashMap<u16, Weak<T>>>, ip: IpAddr, port: u16, make: impl FnOnce(SocketAddr) -> T) -> Result<Arc<T>, BindError> {
        let mut map = lock(map);
        map.retain(|_, w| w.strong_count() > 0);
        let port = match port {
            0 => self.ports.allocate(|p| (!map.contains_key(&p) && !self.published.contains(&p)).then_some(p)).ok_or(BindError::NoFreePort)?,
            p if map.contains_key(&p) => return Err(BindError::InUse),
            p => p,
        };
        let value = Arc::new(make(SocketAddr::new(ip, port)));
        map.insert(port, Arc::downgrade(&value));
        Ok(value)
    }

    /// Registers a TCP listener on `ip:port` (port 0: an ephemeral one).
    pub fn listen(&self, ip: IpAddr, port: u16) -> Result<Arc<AcceptQueue>, BindError> {
        self.claim(&self.tcp, ip, port, |addr| AcceptQueue { state: Mutex::new((VecDeque::new(), true)), notifier: Notifier::new(), addr })
    }

    /// Removes a listener's port (it is also forgotten once dropped).
    pub fn unlisten(&self, queue: &Arc<AcceptQueue>) {
        queue.close();
        let mut map = lock(&self.tcp);
        if map.get(&queue.addr.port()).is_some_and(|w| w.ptr_eq(&Arc::downgrade(queue))) {
            map.remove(&queue.addr.port());
        }
    }

    /// The listener on `port`, if any.
    pub fn listener(&self, port: u16) -> Option<Arc<AcceptQueue>> {
        lock(&self.tcp).get(&port).and_then(Weak::upgrade)
    }

    /// Connects to the listener on `port`: the connecting side's end, or `None` when
    /// nothing listens there or its backlog is full (connection refused).
    pub fn connect(&self, from_ip: IpAddr, to: SocketAddr) -> Option<Conn> {
        let listener = self.listener(to.port())?;
        let local_port = self.ports.next();
        let (mine, theirs) = conn_pair(SocketAddr::new(from_ip, local_port), SocketAddr::new(to.ip(), to.port()));
        listener.offer(theirs).ok()?;
        Some(mine)
    }

    /// Hands a connection from outside the image (a published port's) to the listener
    /// on `port`; with none there, or its backlog full, the connection is closed.
    pub fn hand_over(&self, port: u16, conn: Conn) {
        if let Some(queue) = self.listener(port) {
            let _ = queue.offer(conn);
        }
    }

    /// Registers a UDP socket on `ip:port` (port 0: an ephemeral one).
    pub fn bind_udp(&self, ip: IpAddr, port: u16) -> Result<Arc<UdpQueue>, BindError> {
        self.claim(&self.udp, ip, port, UdpQueue::new)
    }

    /// Delivers a datagram to the UDP socket on `port`; `false` when none is bound there
    /// or its queue is full (the datagram is lost, as UDP allows).
    pub fn send_udp(&self, port: u16, datagram: Datagram) -> bool {
        let target = lock(&self.udp).get(&port).and_then(Weak::upgrade);
        target.is_some_and(|q| q.deliver(datagram))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::conn::EPHEMERAL;
    use crate::sources::{ByteSink, ByteSource};
    use std::net::Ipv4Addr;

    fn lo() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    #[test]
    fn connect_reaches_the_listener_and_bytes_flow_both_ways() {
        let net = Loopback::default();
        let queue = net.listen(lo(), 7000).unwrap();
        assert_eq!(net.listen(lo(), 7000).err(), Some(BindError::InUse));
        let client = net.connect(lo(), "127.0.0.1:7000".parse().unwrap()).unwrap();
        assert!(queue.is_ready());
        let server = queue.take().unwrap();
        assert_eq!(server.peer, client.local);
        assert_eq!(client.peer.port(), 7000);
        client.sink.write(b"ping").unwrap();
        assert_eq!(server.source.read(16).unwrap(), b"ping");
        server.sink.write(b"pong").unwrap();
        assert_eq!(client.source.read(16).unwrap(), b"pong");
        drop(server);
        assert!(client.source.read(16).is_err(), "the peer's close is end of file");
    }

    #[test]
    fn refused_without_a_listener_and_after_it_closes() {
        let net = Loopback::default();
        assert!(net.connect(lo(), "127.0.0.1:9".parse().unwrap()).is_none());
        let queue = net.listen(lo(), 9).unwrap();
        net.unlisten(&queue);
        assert!(net.connect(lo(), "127.0.0.1:9".parse().unwrap()).is_none());
        // The port is free again.
        assert!(net.listen(lo(), 9).is_ok());
    }

    #[test]
    fn port_zero_gets_distinct_ephemeral_ports() {
        let net = Loopback::default();
        let a = net.listen(lo(), 0).unwrap();
        let b = net.listen(lo(), 0).unwrap();
        assert_ne!(a.addr.port(), b.addr.port());
        assert!(EPHEMERAL.contains(&a.addr.port()));
        let u = net.bind_udp(lo(), 0).unwrap();
        assert!(EPHEMERAL.contains(&u.addr.port()));
    }

    #[test]
    fn port_zero_never_gets_a_published_port() {
        let first = EPHEMERAL.start();
        let net = Loopback::with_published(&[*first, first + 1]);
        assert_eq!(net.listen(lo(), 0).unwrap().addr.port(), first + 2);
        assert_eq!(net.bind_udp(lo(), 0).unwrap().addr.port(), first + 3);
        // The capsule that serves it binds it by number.
        assert!(net.listen(lo(), *first).is_ok());
    }

    #[test]
    fn backlog_is_bounded() {
        let net = Loopback::default();
        let _queue = net.listen(lo(), 80).unwrap();
        let conns: Vec<_> = (0..BACKLOG).map(|_| net.connect(lo(), "127.0.0.1:80".parse().unwrap()).unwrap()).collect();
        assert!(net.connect(lo(), "127.0.0.1:80".parse().unwrap()).is_none());
        drop(conns);
    }

    #[test]
    fn udp_datagrams_keep_their_boundaries_and_sender() {
        let net = Loopback::default();
        let a = net.bind_udp(lo(), 5353).unwrap();
        let from: SocketAddr = "127.0.0.1:1234".parse().unwrap();
        assert!(net.send_udp(5353, Datagram { data: b"one".to_vec(), from }));
        assert!(net.send_udp(5353, Datagram { data: b"two".to_vec(), from }));
        assert!(!net.send_udp(5354, Datagram { data: b"lost".to_vec(), from }));
        assert_eq!(a.take(|_| true).unwrap().data, b"one");
        let d = a.take(|_| true).unwrap();
        assert_eq!((d.data.as_slice(), d.from), (&b"two"[..], from));
        assert!(a.take(|_| true).is_none());
    }
}
