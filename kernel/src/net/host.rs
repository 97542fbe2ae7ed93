//! `astrid:net@1.0.0` and `astrid:request-context` for a capsule: each host function
//! asks a provider (`policy`, `socket`, `link`) and audits the answer. This is the only
//! module of `net` that knows the WIT and wasmtime.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use wasmtime::component::Resource;

use super::addr::show;
use super::codec::Frame;
use super::link;
use super::policy::{Kind, MAX_POLL_ACCEPT, Route};
use super::socket::{TcpListener, TcpStream, UdpSocket};
use super::{NetError, addr};
use crate::engine::state::CapsuleState;
use crate::io::astrid::net::host::{ErrorCode, Host, HostTcpListener, HostTcpStream, HostUdpSocket, HostUnixListener, NetReadStatus, ShutdownHow, UdpDatagram};
use crate::io::{Counts, InputStream, OutputStream, Pollable, audit};

/// `astrid:net/host.unix-listener`: the image has no Unix-domain sockets, so none is
/// ever handed out.
pub enum UnixListener {}

/// The WIT's code for a provider's error (cancellation answers `closed`).
fn code(e: NetError) -> ErrorCode {
    match e {
        NetError::Closed | NetError::Cancelled => ErrorCode::Closed,
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
    }
}

fn error_text(e: &ErrorCode) -> String {
    match e {
        ErrorCode::Unknown(m) => format!("unknown: {m}"),
        other => format!("{other:?}"),
    }
}

impl CapsuleState {
    /// Audits a call's outcome and answers it; a cancelled wait is audited as
    /// `cancelled` and answered `closed`.
    fn net_done<T>(&mut self, function: &str, started: Instant, bytes: Option<u64>, result: Result<T, NetError>) -> wasmtime::Result<Result<T, ErrorCode>> {
        if let Err(NetError::Cancelled) = result {
            audit(self, function, started, Counts::default(), Some("cancelled"));
            return Ok(Err(ErrorCode::Closed));
        }
        let result = result.map_err(code);
        let counts = Counts { bytes, ..Counts::default() };
        audit(self, function, started, counts, result.as_ref().err().map(error_text).as_deref());
        Ok(result)
    }

    fn push_stream(&mut self, conn: super::conn::Conn) -> wasmtime::Result<Resource<TcpStream>> {
        let stream = self.push(TcpStream::new(conn))?;
        self.net_counts.add(Kind::Stream);
        Ok(stream)
    }

    /// Waits for a connection until `until` (none: until one comes), within the stream
    /// quota.
    fn accept_wait(&mut self, this: &Resource<TcpListener>, until: Option<Instant>) -> wasmtime::Result<Result<Option<Resource<TcpStream>>, NetError>> {
        let listener = self.table.get(this)?;
        let accepted = self.net_counts.room(Kind::Stream).and_then(|()| listener.accept(until, &self.cancel));
        Ok(match accepted {
            Ok(Some(conn)) => Ok(Some(self.push_stream(conn)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        })
    }

    /// The platform's resolver, bounded by the lookup timeout and the capsule's
    /// cancellation.
    fn resolver(&self) -> impl Fn(&str) -> Option<Vec<IpAddr>> + '_ {
        |name: &str| link::resolve(name, Instant::now() + link::RESOLVE_TIMEOUT, &self.cancel)
    }
}

/// The outcome of a blocking call, audited: its bytes when it succeeded, none when it
/// failed (cancellation says so in the log).
macro_rules! finish {
    ($state:expr, $function:expr, $started:expr, $bytes:expr, $result:expr) => {
        match $result {
            Ok(v) => $state.net_done($function, $started, $bytes, Ok(v)),
            Err(e) => $state.net_done($function, $started, None, Err(e)),
        }
    };
}

impl Host for CapsuleState {
    fn bind_unix(&mut self) -> wasmtime::Result<Result<Resource<UnixListener>, ErrorCode>> {
        // No Unix-domain sockets (and no session handshake) exist in the image.
        self.net_done("astrid:net/host.bind-unix", Instant::now(), None, Err(NetError::CapabilityDenied))
    }

    fn bind_tcp(&mut self, host: String, port: u16) -> wasmtime::Result<Result<Resource<TcpListener>, ErrorCode>> {
        let started = Instant::now();
        let bound = self.net_policy.listen_address(&host, port).and_then(|ip| {
            self.net_counts.room(Kind::Listener)?;
            TcpListener::bind(&self.network.loopback, ip, port)
        });
        let result = match bound {
            Ok(listener) => {
                let listener = self.push(listener)?;
                self.net_counts.add(Kind::Listener);
                Ok(listener)
            }
            Err(e) => Err(e),
        };
        self.net_done("astrid:net/host.bind-tcp", started, None, result)
    }

    fn connect_tcp(&mut self, host: String, port: u16) -> wasmtime::Result<Result<Resource<TcpStream>, ErrorCode>> {
        let started = Instant::now();
        let connected = self.net_counts.room(Kind::Stream).and_then(|()| match self.net_policy.route(self.network.external, &host, port, &self.resolver())? {
            Route::Loopback(to) => self.network.loopback.connect(addr::loopback_like(to.ip()), to).ok_or(NetError::ConnectionRefused),
            Route::External(to) => link::connect(to, Instant::now() + self.net_policy.connect_timeout, &self.cancel),
        });
        let result = match connected {
            Ok(conn) => Ok(self.push_stream(conn)?),
            Err(e) => Err(e),
        };
        self.net_done("astrid:net/host.connect-tcp", started, None, result)
    }

    fn udp_bind(&mut self, host: String, port: u16) -> wasmtime::Result<Result<Resource<UdpSocket>, ErrorCode>> {
        let started = Instant::now();
        let bound = self.net_policy.udp_bind_address(self.network.external, &host, port).and_then(|at| {
            self.net_counts.room(Kind::Udp)?;
            UdpSocket::bind(&self.network.loopback, at, port)
        });
        let result = match bound {
            Ok(socket) => {
                let socket = self.push(socket)?;
                self.net_counts.add(Kind::Udp);
                Ok(socket)
            }
            Err(e) => Err(e),
        };
        self.net_done("astrid:net/host.udp-bind", started, None, result)
    }

    fn lookup_host(&mut self, host: String) -> wasmtime::Result<Result<Vec<String>, ErrorCode>> {
        let started = Instant::now();
        let result = self.net_policy.lookup(self.network.external, &host, &self.resolver());
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
        let addr = show(self.table.get(&this)?.local_addr());
        self.net_done("astrid:net/host.tcp-listener.local-addr", Instant::now(), None, Ok(addr))
    }

    fn subscribe_readiness(&mut self, this: Resource<TcpListener>) -> wasmtime::Result<Resource<Pollable>> {
        let started = Instant::now();
        let queue = self.table.get(&this)?.readiness();
        let pollable = self.push(Pollable::new(queue))?;
        audit(self, "astrid:net/host.tcp-listener.subscribe-readiness", started, Counts::default(), None);
        Ok(pollable)
    }

    fn drop(&mut self, this: Resource<TcpListener>) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.delete(this)?;
        self.net_counts.remove(Kind::Listener);
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
        if !s.read_open() {
            return self.net_done(F, started, None, Err(NetError::Closed));
        }
        // Non-blocking: assemble what has arrived; a whole frame is `data`.
        let result = s.read_frame().map(|frame| match frame {
            Frame::Data(data) => NetReadStatus::Data(data),
            Frame::Pending => NetReadStatus::Pending,
            Frame::Closed => NetReadStatus::Closed,
        });
        let n = match &result {
            Ok(NetReadStatus::Data(d)) => d.len() as u64,
            _ => 0,
        };
        self.net_done(F, started, Some(n), result)
    }

    fn write(&mut self, this: Resource<TcpStream>, data: Vec<u8>) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        let result = self.table.get(&this)?.write_frame(&data, &self.cancel);
        finish!(self, "astrid:net/host.tcp-stream.write", started, Some(data.len() as u64), result)
    }

    fn read_bytes(&mut self, this: Resource<TcpStream>, max_bytes: u32) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        let started = Instant::now();
        let max = (max_bytes as usize).min(crate::io::READ_CEILING);
        let result = self.table.get(&this)?.read(max, true, &self.cancel);
        let n = result.as_ref().map(|b| b.len() as u64).ok();
        finish!(self, "astrid:net/host.tcp-stream.read-bytes", started, n, result)
    }

    fn write_bytes(&mut self, this: Resource<TcpStream>, data: Vec<u8>) -> wasmtime::Result<Result<u32, ErrorCode>> {
        let started = Instant::now();
        let result = self.table.get(&this)?.write(&data, false, &self.cancel).map(|n| n as u32);
        let n = result.as_ref().map(|n| u64::from(*n)).ok();
        finish!(self, "astrid:net/host.tcp-stream.write-bytes", started, n, result)
    }

    fn peek(&mut self, this: Resource<TcpStream>, max_bytes: u32) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        let started = Instant::now();
        let max = (max_bytes as usize).min(crate::io::READ_CEILING);
        let result = self.table.get(&this)?.read(max, false, &self.cancel);
        let n = result.as_ref().map(|b| b.len() as u64).ok();
        finish!(self, "astrid:net/host.tcp-stream.peek", started, n, result)
    }

    fn shutdown(&mut self, this: Resource<TcpStream>, how: ShutdownHow) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        let (read, write) = match how {
            ShutdownHow::Receive => (true, false),
            ShutdownHow::Send => (false, true),
            ShutdownHow::Both => (true, true),
        };
        let result = self.table.get_mut(&this)?.shutdown(read, write);
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
        let result = self.table.get_mut(&this)?.set_nodelay(nodelay);
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
        let result = self.table.get_mut(&this)?.set_hop_limit(hops);
        self.net_done("astrid:net/host.tcp-stream.set-hop-limit", Instant::now(), None, result)
    }

    fn hop_limit(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<u32, ErrorCode>> {
        let v = self.table.get(&this)?.options.hop_limit;
        self.net_done("astrid:net/host.tcp-stream.hop-limit", Instant::now(), None, Ok(v))
    }

    fn set_keepalive(&mut self, this: Resource<TcpStream>, keepalive_secs: Option<u64>) -> wasmtime::Result<Result<(), ErrorCode>> {
        let result = self.table.get_mut(&this)?.set_keepalive(keepalive_secs);
        self.net_done("astrid:net/host.tcp-stream.set-keepalive", Instant::now(), None, result)
    }

    fn keepalive(&mut self, this: Resource<TcpStream>) -> wasmtime::Result<Result<Option<u64>, ErrorCode>> {
        let v = self.table.get(&this)?.options.keepalive;
        self.net_done("astrid:net/host.tcp-stream.keepalive", Instant::now(), None, Ok(v))
    }

    fn set_linger(&mut self, this: Resource<TcpStream>, linger_ms: Option<u64>) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.table.get_mut(&this)?.set_linger(linger_ms);
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
        self.net_counts.remove(Kind::Stream);
        audit(self, "astrid:net/host.tcp-stream.drop", started, Counts::default(), None);
        Ok(())
    }
}

impl HostUdpSocket for CapsuleState {
    fn send_to(&mut self, this: Resource<UdpSocket>, data: Vec<u8>, peer_host: String, peer_port: u16) -> wasmtime::Result<Result<u32, ErrorCode>> {
        let started = Instant::now();
        let n = data.len() as u64;
        let socket = self.table.get(&this)?;
        let result = self.net_policy.udp_target(socket.is_outside(), &peer_host, peer_port).and_then(|to| socket.send_to(data, to, &self.network.loopback));
        self.net_done("astrid:net/host.udp-socket.send-to", started, Some(n), result)
    }

    fn recv_from(&mut self, this: Resource<UdpSocket>, max_bytes: u32) -> wasmtime::Result<Result<Option<UdpDatagram>, ErrorCode>> {
        let started = Instant::now();
        let result = self.table.get(&this)?.recv_from(max_bytes, &self.cancel).map(|d| {
            d.map(|d| UdpDatagram { peer_host: d.from.ip().to_string(), peer_port: d.from.port(), data: d.data })
        });
        let n = result.as_ref().ok().map(|d| d.as_ref().map_or(0, |d| d.data.len() as u64));
        finish!(self, "astrid:net/host.udp-socket.recv-from", started, n, result)
    }

    fn connect(&mut self, this: Resource<UdpSocket>, peer_host: String, peer_port: u16) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        let socket = self.table.get_mut(&this)?;
        let result = self.net_policy.udp_target(socket.is_outside(), &peer_host, peer_port).map(|to| socket.peer = Some(to));
        self.net_done("astrid:net/host.udp-socket.connect", started, None, result)
    }

    fn disconnect(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.table.get_mut(&this)?.peer = None;
        self.net_done("astrid:net/host.udp-socket.disconnect", Instant::now(), None, Ok(()))
    }

    fn send(&mut self, this: Resource<UdpSocket>, data: Vec<u8>) -> wasmtime::Result<Result<u32, ErrorCode>> {
        let started = Instant::now();
        let n = data.len() as u64;
        let result = self.table.get(&this)?.send(data, &self.network.loopback);
        self.net_done("astrid:net/host.udp-socket.send", started, Some(n), result)
    }

    fn recv(&mut self, this: Resource<UdpSocket>, max_bytes: u32) -> wasmtime::Result<Result<Option<Vec<u8>>, ErrorCode>> {
        let started = Instant::now();
        let result = self.table.get(&this)?.recv(max_bytes, &self.cancel);
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
        let v = show(self.table.get(&this)?.local_addr());
        self.net_done("astrid:net/host.udp-socket.local-addr", Instant::now(), None, Ok(v))
    }

    fn subscribe_readable(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<Resource<Pollable>> {
        let started = Instant::now();
        let queue = self.table.get(&this)?.readiness();
        let pollable = self.push(Pollable::new(queue))?;
        audit(self, "astrid:net/host.udp-socket.subscribe-readable", started, Counts::default(), None);
        Ok(pollable)
    }

    fn drop(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.delete(this)?;
        self.net_counts.remove(Kind::Udp);
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
