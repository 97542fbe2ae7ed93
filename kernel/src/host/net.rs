//! `astrid:net@1.0.0` and `astrid:request-context` over the net providers: `policy`
//! decides, `socket` acts, `link` resolves. A wait ended by the capsule's cancellation
//! answers `closed` and is recorded `cancelled`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, Resource};

use super::bindings::astrid::net::host::{ErrorCode, Host, HostTcpListener, HostTcpStream, HostUdpSocket, HostUnixListener, NetReadStatus, ShutdownHow, UdpDatagram};
use super::bindings::astrid::request_context;
use super::context::{CapsuleState, Core, NetCtx, View};
use super::envelope::host_fns;
use super::Package;
use crate::net::addr::{self, show};
use crate::net::codec::Frame;
use crate::net::conn::Conn;
use crate::net::policy::{Kind, MAX_POLL_ACCEPT, Route};
use crate::net::{NetError, TcpListener, TcpStream, UdpSocket, UnixListener, link};
use crate::quota::Held;
use crate::sources::{InputStream, OutputStream, READ_CEILING};
use crate::wait::{CancelToken, Pollable};

pub type NetView<'a> = View<'a, NetCtx>;

/// The WIT's code for a provider's error, noting a cancelled wait for the record (the
/// capsule gets `closed`).
fn answer<T>(core: &mut Core, result: Result<T, NetError>) -> Result<T, ErrorCode> {
    result.map_err(|e| match e {
        NetError::Cancelled => {
            core.cancelled();
            ErrorCode::Closed
        }
        NetError::Closed => ErrorCode::Closed,
        NetError::CapabilityDenied => ErrorCode::CapabilityDenied,
        NetError::AirlockRejected => ErrorCode::AirlockRejected,
        NetError::ConnectionRefused => ErrorCode::ConnectionRefused,
        NetError::ConnectionReset => ErrorCode::ConnectionReset,
        NetError::Timeout => ErrorCode::Timeout,
        NetError::AddressInUse => ErrorCode::AddressInUse,
        NetError::AddressNotAvailable => ErrorCode::AddressNotAvailable,
        NetError::NameUnresolvable => ErrorCode::NameUnresolvable,
        NetError::Quota => ErrorCode::Quota,
        other @ (NetError::NoInterface | NetError::NoUdpInterface | NetError::Other(_)) => ErrorCode::Unknown(other.to_string()),
    })
}

/// The platform's resolver, bounded by the lookup timeout and the capsule's cancellation.
fn resolver(cancel: &CancelToken) -> impl Fn(&str) -> Option<Vec<IpAddr>> + '_ {
    move |name: &str| link::resolve(name, Instant::now() + link::RESOLVE_TIMEOUT, cancel)
}

impl NetView<'_> {
    /// Hands a connection to the capsule, with the charge it took for it.
    fn push_stream(&mut self, conn: Conn, held: Held) -> wasmtime::Result<Resource<TcpStream>> {
        let mut stream = TcpStream::new(conn).frames_charged_to(self.pkg.counts.frames());
        stream.held = Some(held);
        self.core.push(stream)
    }

    /// Waits for a connection until `until` (none: until one comes), within the stream
    /// quota.
    fn accept(&mut self, this: &Resource<TcpListener>, until: Option<Instant>) -> wasmtime::Result<Result<Option<Resource<TcpStream>>, ErrorCode>> {
        let listener = self.core.get(this)?;
        let accepted = self.pkg.counts.charge(Kind::Stream).and_then(|held| Ok(listener.accept(until, &self.core.cancel)?.map(|conn| (conn, held))));
        let accepted = match accepted {
            Ok(Some((conn, held))) => Ok(Some(self.push_stream(conn, held)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        Ok(answer(self.core, accepted))
    }

    fn read(&mut self, this: &Resource<TcpStream>, max_bytes: u32, consume: bool) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        let max = (max_bytes as usize).min(READ_CEILING);
        let result = self.core.get(this)?.read(max, consume, &self.core.cancel);
        self.core.moved(result.as_ref().map_or(0, |b| b.len() as u64));
        Ok(answer(self.core, result))
    }
}

host_fns! { impl Host for NetView<'_> as "astrid:net/host" {
    fn bind_unix(cx) -> Result<Resource<UnixListener>, ErrorCode> {
        // No Unix-domain sockets (and no session handshake) exist in the image.
        cx.core.refused("capability-denied: the image has no Unix-domain sockets");
        Ok(Err(ErrorCode::CapabilityDenied))
    }

    fn bind_tcp(cx, host: String, port: u16) -> Result<Resource<TcpListener>, ErrorCode> {
        let bound = cx.pkg.policy.listen_address(&host, port).and_then(|ip| {
            let held = cx.pkg.counts.charge(Kind::Listener)?;
            let mut listener = TcpListener::bind(&cx.pkg.network.loopback, ip, port)?;
            listener.held = Some(held);
            Ok(listener)
        });
        let result = match bound {
            Ok(listener) => Ok(cx.core.push(listener)?),
            Err(e) => Err(e),
        };
        Ok(answer(cx.core, result))
    }

    fn connect_tcp(cx, host: String, port: u16) -> Result<Resource<TcpStream>, ErrorCode> {
        let (pkg, cancel) = (&*cx.pkg, &cx.core.cancel);
        let connected = pkg.counts.charge(Kind::Stream).and_then(|held| {
            let conn = match pkg.policy.route(pkg.network.external, &host, port, &resolver(cancel))? {
                Route::Loopback(to) => pkg.network.loopback.connect(addr::loopback_like(to.ip()), to).ok_or(NetError::ConnectionRefused)?,
                Route::External(to) => link::connect(to, Instant::now() + pkg.policy.connect_timeout, cancel)?,
            };
            Ok((conn, held))
        });
        let result = match connected {
            Ok((conn, held)) => Ok(cx.push_stream(conn, held)?),
            Err(e) => Err(e),
        };
        Ok(answer(cx.core, result))
    }

    fn udp_bind(cx, host: String, port: u16) -> Result<Resource<UdpSocket>, ErrorCode> {
        let bound = cx.pkg.policy.udp_bind_address(cx.pkg.network.external, &host, port).and_then(|at| {
            let held = cx.pkg.counts.charge(Kind::Udp)?;
            let mut socket = UdpSocket::bind(&cx.pkg.network.loopback, at, port)?;
            socket.held = Some(held);
            Ok(socket)
        });
        let result = match bound {
            Ok(socket) => Ok(cx.core.push(socket)?),
            Err(e) => Err(e),
        };
        Ok(answer(cx.core, result))
    }

    fn lookup_host(cx, host: String) -> Result<Vec<String>, ErrorCode> {
        let result = cx.pkg.policy.lookup(cx.pkg.network.external, &host, &resolver(&cx.core.cancel));
        Ok(answer(cx.core, result))
    }
} }

host_fns! { impl HostUnixListener for NetView<'_> as "astrid:net/host.unix-listener" {
    fn accept(cx, this: Resource<UnixListener>) -> Result<Resource<TcpStream>, ErrorCode> {
        let _ = (cx, this);
        wasmtime::bail!("no unix-listener is ever handed out by astrid.img")
    }

    fn poll_accept(cx, this: Resource<UnixListener>, timeout_ms: u64) -> Result<Option<Resource<TcpStream>>, ErrorCode> {
        let _ = (cx, this, timeout_ms);
        wasmtime::bail!("no unix-listener is ever handed out by astrid.img")
    }

    fn subscribe_readiness(cx, this: Resource<UnixListener>) -> Resource<Pollable> {
        let _ = (cx, this);
        wasmtime::bail!("no unix-listener is ever handed out by astrid.img")
    }

    fn drop(cx, this: Resource<UnixListener>) -> () {
        let _ = (cx, this);
        wasmtime::bail!("no unix-listener is ever handed out by astrid.img")
    }
} }

host_fns! { impl HostTcpListener for NetView<'_> as "astrid:net/host.tcp-listener" {
    fn accept(cx, this: Resource<TcpListener>) -> Result<Resource<TcpStream>, ErrorCode> {
        Ok(cx.accept(&this, None)?.map(|s| s.expect("an accept without a deadline returns a stream")))
    }

    fn poll_accept(cx, this: Resource<TcpListener>, timeout_ms: u64) -> Result<Option<Resource<TcpStream>>, ErrorCode> {
        let timeout = Duration::from_millis(timeout_ms).min(MAX_POLL_ACCEPT);
        cx.accept(&this, Some(Instant::now() + timeout))
    }

    fn local_addr(cx, this: Resource<TcpListener>) -> Result<String, ErrorCode> {
        Ok(Ok(show(cx.core.get(&this)?.local_addr())))
    }

    fn subscribe_readiness(cx, this: Resource<TcpListener>) -> Resource<Pollable> {
        let listener = cx.core.get(&this)?;
        let pollable = Pollable::new(listener.readiness()).holding(listener.held.clone());
        cx.core.push(pollable)
    }

    fn drop(cx, this: Resource<TcpListener>) -> () {
        cx.core.delete(this)?;
        Ok(())
    }
} }

host_fns! { impl HostTcpStream for NetView<'_> as "astrid:net/host.tcp-stream" {
    fn read(cx, this: Resource<TcpStream>) -> Result<NetReadStatus, ErrorCode> {
        let s = cx.core.get_mut(&this)?;
        // Non-blocking: assemble what has arrived; a whole frame is `data`.
        let result = if !s.read_open() {
            Err(NetError::Closed)
        } else {
            s.read_frame().map(|frame| match frame {
                Frame::Data(data) => NetReadStatus::Data(data),
                Frame::Pending => NetReadStatus::Pending,
                Frame::Closed => NetReadStatus::Closed,
            })
        };
        cx.core.moved(match &result {
            Ok(NetReadStatus::Data(d)) => d.len() as u64,
            _ => 0,
        });
        Ok(answer(cx.core, result))
    }

    fn write(cx, this: Resource<TcpStream>, data: Vec<u8>) -> Result<(), ErrorCode> {
        let result = cx.core.get(&this)?.write_frame(&data, &cx.core.cancel);
        cx.core.moved(if result.is_ok() { data.len() as u64 } else { 0 });
        Ok(answer(cx.core, result))
    }

    fn read_bytes(cx, this: Resource<TcpStream>, max_bytes: u32) -> Result<Vec<u8>, ErrorCode> {
        cx.read(&this, max_bytes, true)
    }

    fn write_bytes(cx, this: Resource<TcpStream>, data: Vec<u8>) -> Result<u32, ErrorCode> {
        let result = cx.core.get(&this)?.write(&data, false, &cx.core.cancel).map(|n| n as u32);
        cx.core.moved(result.as_ref().map_or(0, |n| u64::from(*n)));
        Ok(answer(cx.core, result))
    }

    fn peek(cx, this: Resource<TcpStream>, max_bytes: u32) -> Result<Vec<u8>, ErrorCode> {
        cx.read(&this, max_bytes, false)
    }

    fn shutdown(cx, this: Resource<TcpStream>, how: ShutdownHow) -> Result<(), ErrorCode> {
        let (read, write) = match how {
            ShutdownHow::Receive => (true, false),
            ShutdownHow::Send => (false, true),
            ShutdownHow::Both => (true, true),
        };
        let result = cx.core.get_mut(&this)?.shutdown(read, write);
        Ok(answer(cx.core, result))
    }

    fn peer_addr(cx, this: Resource<TcpStream>) -> Result<String, ErrorCode> {
        Ok(Ok(show(cx.core.get(&this)?.conn.peer)))
    }

    fn local_addr(cx, this: Resource<TcpStream>) -> Result<String, ErrorCode> {
        Ok(Ok(show(cx.core.get(&this)?.conn.local)))
    }

    fn set_nodelay(cx, this: Resource<TcpStream>, nodelay: bool) -> Result<(), ErrorCode> {
        let result = cx.core.get_mut(&this)?.set_nodelay(nodelay);
        Ok(answer(cx.core, result))
    }

    fn nodelay(cx, this: Resource<TcpStream>) -> Result<bool, ErrorCode> {
        Ok(Ok(cx.core.get(&this)?.options.nodelay))
    }

    fn set_read_timeout(cx, this: Resource<TcpStream>, timeout_ms: Option<u64>) -> Result<(), ErrorCode> {
        cx.core.get_mut(&this)?.options.read_timeout = timeout_ms.map(Duration::from_millis);
        Ok(Ok(()))
    }

    fn read_timeout(cx, this: Resource<TcpStream>) -> Result<Option<u64>, ErrorCode> {
        Ok(Ok(cx.core.get(&this)?.options.read_timeout.map(|d| d.as_millis() as u64)))
    }

    fn set_write_timeout(cx, this: Resource<TcpStream>, timeout_ms: Option<u64>) -> Result<(), ErrorCode> {
        cx.core.get_mut(&this)?.options.write_timeout = timeout_ms.map(Duration::from_millis);
        Ok(Ok(()))
    }

    fn write_timeout(cx, this: Resource<TcpStream>) -> Result<Option<u64>, ErrorCode> {
        Ok(Ok(cx.core.get(&this)?.options.write_timeout.map(|d| d.as_millis() as u64)))
    }

    fn set_hop_limit(cx, this: Resource<TcpStream>, hops: u32) -> Result<(), ErrorCode> {
        let result = cx.core.get_mut(&this)?.set_hop_limit(hops);
        Ok(answer(cx.core, result))
    }

    fn hop_limit(cx, this: Resource<TcpStream>) -> Result<u32, ErrorCode> {
        Ok(Ok(cx.core.get(&this)?.options.hop_limit))
    }

    fn set_keepalive(cx, this: Resource<TcpStream>, keepalive_secs: Option<u64>) -> Result<(), ErrorCode> {
        let result = cx.core.get_mut(&this)?.set_keepalive(keepalive_secs);
        Ok(answer(cx.core, result))
    }

    fn keepalive(cx, this: Resource<TcpStream>) -> Result<Option<u64>, ErrorCode> {
        Ok(Ok(cx.core.get(&this)?.options.keepalive))
    }

    fn set_linger(cx, this: Resource<TcpStream>, linger_ms: Option<u64>) -> Result<(), ErrorCode> {
        cx.core.get_mut(&this)?.set_linger(linger_ms);
        Ok(Ok(()))
    }

    fn linger(cx, this: Resource<TcpStream>) -> Result<Option<u64>, ErrorCode> {
        Ok(Ok(cx.core.get(&this)?.options.linger))
    }

    fn set_reuseaddr(cx, this: Resource<TcpStream>, reuseaddr: bool) -> Result<(), ErrorCode> {
        cx.core.get_mut(&this)?.options.reuseaddr = reuseaddr;
        Ok(Ok(()))
    }

    fn reuseaddr(cx, this: Resource<TcpStream>) -> Result<bool, ErrorCode> {
        Ok(Ok(cx.core.get(&this)?.options.reuseaddr))
    }

    fn subscribe_readable(cx, this: Resource<TcpStream>) -> Resource<Pollable> {
        let stream = cx.core.get(&this)?;
        let pollable = Pollable::new(stream.conn.source.clone()).holding(stream.held.clone());
        cx.core.push(pollable)
    }

    fn read_stream(cx, this: Resource<TcpStream>) -> Resource<InputStream> {
        let stream = cx.core.get(&this)?;
        let half = InputStream::new(stream.conn.source.clone()).holding(stream.held.clone());
        cx.core.push(half)
    }

    fn write_stream(cx, this: Resource<TcpStream>) -> Resource<OutputStream> {
        let stream = cx.core.get(&this)?;
        let half = OutputStream::new(stream.conn.sink.clone()).holding(stream.held.clone());
        cx.core.push(half)
    }

    fn drop(cx, this: Resource<TcpStream>) -> () {
        // The connection stays charged while a half or pollable made from it lives.
        cx.core.delete(this)?;
        Ok(())
    }
} }

host_fns! { impl HostUdpSocket for NetView<'_> as "astrid:net/host.udp-socket" {
    fn send_to(cx, this: Resource<UdpSocket>, data: Vec<u8>, peer_host: String, peer_port: u16) -> Result<u32, ErrorCode> {
        cx.core.moved(data.len() as u64);
        let socket = cx.core.get(&this)?;
        let result = cx.pkg.policy.udp_target(socket.is_outside(), &peer_host, peer_port).and_then(|to| socket.send_to(data, to, &cx.pkg.network.loopback, &cx.core.cancel));
        Ok(answer(cx.core, result))
    }

    fn recv_from(cx, this: Resource<UdpSocket>, max_bytes: u32) -> Result<Option<UdpDatagram>, ErrorCode> {
        let result = cx.core.get(&this)?.recv_from(max_bytes, &cx.core.cancel).map(|d| {
            d.map(|d| UdpDatagram { peer_host: d.from.ip().to_string(), peer_port: d.from.port(), data: d.data })
        });
        cx.core.moved(result.as_ref().map_or(0, |d| d.as_ref().map_or(0, |d| d.data.len() as u64)));
        Ok(answer(cx.core, result))
    }

    fn connect(cx, this: Resource<UdpSocket>, peer_host: String, peer_port: u16) -> Result<(), ErrorCode> {
        let socket = cx.core.get_mut(&this)?;
        let result = cx.pkg.policy.udp_target(socket.is_outside(), &peer_host, peer_port).map(|to| socket.peer = Some(to));
        Ok(answer(cx.core, result))
    }

    fn disconnect(cx, this: Resource<UdpSocket>) -> Result<(), ErrorCode> {
        cx.core.get_mut(&this)?.peer = None;
        Ok(Ok(()))
    }

    fn send(cx, this: Resource<UdpSocket>, data: Vec<u8>) -> Result<u32, ErrorCode> {
        cx.core.moved(data.len() as u64);
        let result = cx.core.get(&this)?.send(data, &cx.pkg.network.loopback, &cx.core.cancel);
        Ok(answer(cx.core, result))
    }

    fn recv(cx, this: Resource<UdpSocket>, max_bytes: u32) -> Result<Option<Vec<u8>>, ErrorCode> {
        let result = cx.core.get(&this)?.recv(max_bytes, &cx.core.cancel);
        cx.core.moved(result.as_ref().map_or(0, |d| d.as_ref().map_or(0, |d| d.len() as u64)));
        Ok(answer(cx.core, result))
    }

    fn peer_addr(cx, this: Resource<UdpSocket>) -> Result<Option<String>, ErrorCode> {
        Ok(Ok(cx.core.get(&this)?.peer.map(show)))
    }

    fn set_read_timeout(cx, this: Resource<UdpSocket>, timeout_ms: Option<u64>) -> Result<(), ErrorCode> {
        cx.core.get_mut(&this)?.read_timeout = timeout_ms.map(Duration::from_millis);
        Ok(Ok(()))
    }

    fn local_addr(cx, this: Resource<UdpSocket>) -> Result<String, ErrorCode> {
        Ok(Ok(show(cx.core.get(&this)?.local_addr())))
    }

    fn subscribe_readable(cx, this: Resource<UdpSocket>) -> Resource<Pollable> {
        let socket = cx.core.get(&this)?;
        let pollable = Pollable::new(socket.readiness()).holding(socket.held.clone());
        cx.core.push(pollable)
    }

    fn drop(cx, this: Resource<UdpSocket>) -> () {
        cx.core.delete(this)?;
        Ok(())
    }
} }

// The image authenticates no connection (there is no Unix listener and no session
// handshake), so every stream is "unauthenticated": `none`, as the WIT says.
host_fns! { impl request_context::host::Host for NetView<'_> as "astrid:request-context/host" {
    fn connection_owner(cx, connection: Resource<TcpStream>) -> Result<Option<String>, ErrorCode> {
        cx.core.get(&connection)?;
        Ok(Ok(None))
    }

    fn connection_principal(cx, connection: Resource<TcpStream>) -> Result<Option<String>, ErrorCode> {
        cx.core.get(&connection)?;
        Ok(Ok(None))
    }
} }

/// Links astrid:net and astrid:request-context.
pub fn add_to_linker(linker: &mut Linker<CapsuleState>) -> wasmtime::Result<()> {
    fn net(s: &mut CapsuleState) -> NetView<'_> {
        View { core: &mut s.core, pkg: &mut s.net }
    }
    super::bindings::astrid::net::host::add_to_linker::<_, Package<NetCtx>>(linker, net)?;
    request_context::host::add_to_linker::<_, Package<NetCtx>>(linker, net)?;
    Ok(())
}
