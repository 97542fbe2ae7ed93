//! What a capsule may do on the network, decided without touching it: where a connect
//! leads (the image's loopback, or out through the NIC), what a bind or a UDP send may
//! reach, which names a capsule may look up, and how many sockets it may hold. Name
//! resolution is passed in, so every decision here is pure.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::NetError;
use super::addr::{self, Destination, Pattern};
use crate::quota::{Account, Held};

/// Streams, listeners and UDP sockets one capsule may hold.
pub const MAX_STREAMS: usize = 8;
pub const MAX_LISTENERS: usize = 4;
pub const MAX_UDP: usize = 4;
/// Longest `poll-accept` wait (the WIT's cap).
pub const MAX_POLL_ACCEPT: Duration = Duration::from_secs(60);
/// How long a connect may take unless the manifest says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Published ports (`ASTRID_PUBLISH`) another capsule serves: binding one is
    /// `address-in-use`, so outside connections reach only the capsule whose manifest
    /// binds the port (`manifest::published_port_owners`).
    pub foreign_published: Vec<u16>,
}

impl Default for NetPolicy {
    fn default() -> Self {
        let lo = || vec![Pattern { host: Some("localhost".into()), port: None }];
        NetPolicy {
            bind: lo(),
            connect: lo(),
            udp_bind: lo(),
            udp_send: lo(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            foreign_published: Vec::new(),
        }
    }
}

/// Whether an entry of `patterns` allows `host:port` (the host as the capsule wrote it).
pub fn allowed(patterns: &[Pattern], host: &str, port: u16) -> bool {
    patterns.iter().any(|p| p.matches(host, port))
}

/// Whether the airlock lets a capsule with `patterns` reach `ip:port`: an address
/// outside the blocked ranges, or one that the entry allowing this very destination
/// names exactly, host and port (an operator wrote it down; `10.0.2.2:8080` opens
/// 10.0.2.2 on 8080 only, whatever `*:443` allows elsewhere). Loopback and "this host"
/// never leave, named or not (`addr::never_outward`).
pub fn passes_airlock(patterns: &[Pattern], ip: IpAddr, port: u16) -> bool {
    !addr::never_outward(ip) && (!addr::airlock_blocks(ip) || patterns.iter().any(|p| p.names_destination(ip, port)))
}

/// Where a connect leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To a listener of the image's loopback.
    Loopback(SocketAddr),
    /// Out through the NIC.
    External(SocketAddr),
}

/// Where a UDP socket is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpBind {
    /// On the image's loopback.
    Loopback(IpAddr),
    /// On the kernel's stack (the unspecified address), to talk to the world.
    Outside(IpAddr),
}

/// Names to addresses (`None`: the resolver did not answer).
pub trait Resolve {
    fn resolve(&self, name: &str) -> Option<Vec<IpAddr>>;
}

impl<F: Fn(&str) -> Option<Vec<IpAddr>>> Resolve for F {
    fn resolve(&self, name: &str) -> Option<Vec<IpAddr>> {
        self(name)
    }
}

/// A lookup's argument, "name" or "name:port" (an IPv6 literal keeps its colons):
/// the name and the port.
pub fn split_lookup(host: &str) -> (String, Option<u16>) {
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
            Ok(p) => (h.to_string(), Some(p)),
            Err(_) => (host.to_string(), None),
        },
        _ => (host.to_string(), None),
    }
}

impl NetPolicy {
    /// Where a connect to `host:port` leads, after the policy and the airlock;
    /// `external` says whether the image has a NIC.
    pub fn route(&self, external: bool, host: &str, port: u16, resolver: &dyn Resolve) -> Result<Route, NetError> {
        let dest = addr::classify(host).ok_or(NetError::AddressNotAvailable)?;
        if !allowed(&self.connect, host, port) {
            return Err(NetError::CapabilityDenied);
        }
        let ip = match dest {
            Destination::Loopback(ip) => return Ok(Route::Loopback(SocketAddr::new(ip, port))),
            Destination::External(ip) => {
                if !passes_airlock(&self.connect, ip, port) {
                    return Err(NetError::AirlockRejected);
                }
                ip
            }
            Destination::Name(name) => {
                if !external {
                    return Err(NetError::NameUnresolvable);
                }
                let ips = resolver.resolve(&name).unwrap_or_default();
                if ips.is_empty() {
                    return Err(NetError::NameUnresolvable);
                }
                // A name never leads to the image's loopback or past the airlock.
                *ips.iter().find(|ip| passes_airlock(&self.connect, **ip, port)).ok_or(NetError::AirlockRejected)?
            }
        };
        if !external {
            return Err(NetError::NoInterface);
        }
        Ok(Route::External(SocketAddr::new(ip, port)))
    }

    /// The address a TCP listener on `host:port` is bound to: listeners are confined to
    /// loopback (the WIT's rule); outside clients reach them through `--publish`.
    pub fn listen_address(&self, host: &str, port: u16) -> Result<IpAddr, NetError> {
        match addr::classify(host) {
            Some(Destination::Loopback(_)) if port != 0 && self.foreign_published.contains(&port) => Err(NetError::AddressInUse),
            Some(Destination::Loopback(ip)) if allowed(&self.bind, host, port) => Ok(ip),
            Some(Destination::Loopback(_)) => Err(NetError::CapabilityDenied),
            _ => Err(NetError::AddressNotAvailable),
        }
    }

    /// Where a UDP socket on `host:port` is bound: the image's loopback, or (the
    /// unspecified address, where the manifest grants it and there is a NIC) the
    /// kernel's stack. A specific outside address is DHCP's to give, not the capsule's.
    pub fn udp_bind_address(&self, external: bool, host: &str, port: u16) -> Result<UdpBind, NetError> {
        let dest = addr::classify(host).ok_or(NetError::AddressNotAvailable)?;
        if !allowed(&self.udp_bind, host, port) {
            return Err(NetError::CapabilityDenied);
        }
        match dest {
            Destination::Loopback(ip) => Ok(UdpBind::Loopback(ip)),
            Destination::External(ip) if ip.is_unspecified() => {
                if external {
                    Ok(UdpBind::Outside(ip))
                } else {
                    Err(NetError::NoUdpInterface)
                }
            }
            _ => Err(NetError::AddressNotAvailable),
        }
    }

    /// Where a datagram to `host:port` goes from a socket on the loopback (`outside`
    /// false) or on the kernel's stack: loopback destinations from a loopback socket,
    /// others (allowed by the manifest and the airlock) from an outside one.
    pub fn udp_target(&self, outside: bool, host: &str, port: u16) -> Result<SocketAddr, NetError> {
        let dest = addr::classify(host).ok_or(NetError::AddressNotAvailable)?;
        if !allowed(&self.udp_send, host, port) {
            return Err(NetError::CapabilityDenied);
        }
        match dest {
            Destination::Loopback(ip) if !outside => Ok(SocketAddr::new(ip, port)),
            Destination::External(ip) if outside => {
                if passes_airlock(&self.udp_send, ip, port) {
                    Ok(SocketAddr::new(ip, port))
                } else {
                    Err(NetError::AirlockRejected)
                }
            }
            // Loopback is reached from a loopback socket, the world from an outside one.
            _ => Err(NetError::AddressNotAvailable),
        }
    }

    /// Whether the capsule may look `name` up: an entry of net_connect or net_udp could
    /// reach it (on `port`, or on any of its ports when none is given).
    pub fn may_look_up(&self, name: &str, port: Option<u16>) -> bool {
        self.connect.iter().chain(&self.udp_send).any(|p| p.matches(name, port.or(p.port).unwrap_or(0)))
    }

    /// `lookup-host`: the addresses of "name" or "name:port" (then as `ip:port`), with
    /// loopback and the airlock's ranges stripped, as the contract says.
    pub fn lookup(&self, external: bool, host: &str, resolver: &dyn Resolve) -> Result<Vec<String>, NetError> {
        let (name, port) = split_lookup(host);
        if !self.may_look_up(&name, port) {
            return Err(NetError::CapabilityDenied);
        }
        let ips: Vec<IpAddr> = match addr::classify(&name) {
            None => return Err(NetError::NameUnresolvable),
            Some(Destination::Loopback(_)) => Vec::new(),
            Some(Destination::External(ip)) => {
                if addr::airlock_blocks(ip) {
                    Vec::new()
                } else {
                    vec![ip]
                }
            }
            Some(Destination::Name(n)) if external => match resolver.resolve(&n) {
                Some(ips) if !ips.is_empty() => ips.into_iter().filter(|ip| !addr::airlock_blocks(*ip)).collect(),
                _ => return Err(NetError::NameUnresolvable),
            },
            Some(Destination::Name(_)) => return Err(NetError::NameUnresolvable),
        };
        Ok(ips
            .into_iter()
            .map(|ip| match port {
                Some(p) => addr::show(SocketAddr::new(ip, p)),
                None => ip.to_string(),
            })
            .collect())
    }
}

/// The kinds of socket a capsule's quota counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Stream,
    Listener,
    Udp,
}

/// What a capsule holds on the network, each kind an account (`quota::Account`) whose
/// charge travels with the socket and every handle made from it (a stream's halves and
/// pollables): a socket counts until the last of them is dropped, not when the capsule
/// drops its first handle.
pub struct NetCounts {
    streams: Arc<Account>,
    listeners: Arc<Account>,
    udp: Arc<Account>,
    /// Bytes of the frames its streams are assembling (`tcp-stream.read`).
    frames: Arc<Account>,
}

/// What a capsule's streams may assemble of frames at once, unless the image's heap
/// gives it less: two whole frames of the largest size.
pub const FRAME_BYTES: usize = 2 * (super::MAX_FRAME + 4);

impl Default for NetCounts {
    fn default() -> Self {
        NetCounts::new(FRAME_BYTES)
    }
}

impl NetCounts {
    /// The counts of a capsule whose streams may assemble `frame_bytes` of frames.
    pub fn new(frame_bytes: usize) -> Self {
        NetCounts {
            streams: Account::new("tcp stream", MAX_STREAMS),
            listeners: Account::new("tcp listener", MAX_LISTENERS),
            udp: Account::new("udp socket", MAX_UDP),
            frames: Account::new("tcp frame bytes", frame_bytes),
        }
    }

    /// The account of the frames the capsule's streams assemble.
    pub fn frames(&self) -> &Arc<Account> {
        &self.frames
    }

    fn account(&self, kind: Kind) -> &Arc<Account> {
        match kind {
            Kind::Stream => &self.streams,
            Kind::Listener => &self.listeners,
            Kind::Udp => &self.udp,
        }
    }

    /// `quota` when the capsule holds as many of `kind` as it may.
    pub fn room(&self, kind: Kind) -> Result<(), NetError> {
        if self.account(kind).has_room(1) { Ok(()) } else { Err(NetError::Quota) }
    }

    /// Charges one `kind`; the charge is given back when its last holder drops.
    pub fn charge(&self, kind: Kind) -> Result<Held, NetError> {
        self.account(kind).charge(1).map(Arc::new).map_err(|_| NetError::Quota)
    }

    /// How many of `kind` the capsule holds now.
    pub fn held(&self, kind: Kind) -> usize {
        self.account(kind).used()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NetError::*;

    /// What a case expects.
    type Want<T> = Result<T, NetError>;

    fn policy(connect: &[&str], udp_send: &[&str]) -> NetPolicy {
        let p = |l: &[&str]| l.iter().map(|t| Pattern::parse(t).unwrap()).collect::<Vec<_>>();
        NetPolicy { connect: p(connect), udp_send: p(udp_send), udp_bind: p(udp_send), ..NetPolicy::default() }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn sa(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// example.org is 93.184.216.34; internal.test only has private addresses;
    /// mixed.test has a private one first; silent.test gets no answer.
    fn resolver(name: &str) -> Option<Vec<IpAddr>> {
        match name {
            "example.org" => Some(vec![ip("93.184.216.34")]),
            "internal.test" => Some(vec![ip("10.1.2.3"), ip("192.168.0.9")]),
            "mixed.test" => Some(vec![ip("10.1.2.3"), ip("1.1.1.1")]),
            "empty.test" => Some(Vec::new()),
            _ => None,
        }
    }

    #[test]
    fn route() {
        let open = policy(&["*:*"], &[]);
        let pinned = policy(&["10.0.2.2:8080", "*:443"], &[]);
        let named_loopback = policy(&["[64:ff9b::7f00:1]:*", "[2002:7f00:1::1]:*", "0.0.0.0:*", "[::]:*"], &[]);
        let default = NetPolicy::default();
        #[rustfmt::skip]
        let cases: &[(&NetPolicy, bool, &str, u16, Want<Route>)] = &[
            // Loopback stays in the image, NIC or not.
            (&default, false, "localhost", 80, Ok(Route::Loopback(sa("127.0.0.1:80")))),
            (&default, true, "[::1]", 80, Ok(Route::Loopback(sa("[::1]:80")))),
            (&default, true, "127.0.0.5", 1, Ok(Route::Loopback(sa("127.0.0.5:1")))),
            // The default policy reaches nothing outside.
            (&default, true, "1.1.1.1", 80, Err(CapabilityDenied)),
            (&default, true, "example.org", 80, Err(CapabilityDenied)),
            // Nonsense is no address, before the policy is asked.
            (&default, true, "a b", 80, Err(AddressNotAvailable)),
            // Numeric addresses: the airlock, then the NIC.
            (&open, true, "1.1.1.1", 80, Ok(Route::External(sa("1.1.1.1:80")))),
            (&open, false, "1.1.1.1", 80, Err(NoInterface)),
            (&open, true, "10.0.2.2", 80, Err(AirlockRejected)),
            (&open, false, "10.0.2.2", 80, Err(AirlockRejected)),
            // An entry naming the address lets it past the airlock on that entry's port
            // only: `*:443` allows port 443, but names no address, so 10.0.2.2:443 stays
            // behind the airlock.
            (&pinned, true, "10.0.2.2", 8080, Ok(Route::External(sa("10.0.2.2:8080")))),
            (&pinned, true, "10.0.2.2", 8081, Err(CapabilityDenied)),
            (&pinned, true, "10.0.2.2", 443, Err(AirlockRejected)),
            (&pinned, true, "10.0.2.3", 443, Err(AirlockRejected)),
            // Loopback in a spelling that would leave never does, named or not; the
            // spellings a dual stack reads as 127.0.0.1 stay in the image.
            (&named_loopback, true, "64:ff9b::7f00:1", 80, Err(AirlockRejected)),
            (&named_loopback, true, "2002:7f00:1::1", 80, Err(AirlockRejected)),
            (&named_loopback, true, "0.0.0.0", 80, Err(AirlockRejected)),
            (&named_loopback, true, "::", 80, Err(AirlockRejected)),
            (&open, true, "::127.0.0.1", 80, Ok(Route::Loopback(sa("[::127.0.0.1]:80")))),
            (&open, true, "::ffff:127.0.0.1", 80, Ok(Route::Loopback(sa("[::ffff:127.0.0.1]:80")))),
            // Private ranges behind NAT64 or 6to4 are private.
            (&open, true, "64:ff9b::a00:202", 80, Err(AirlockRejected)),
            (&open, true, "64:ff9b::101:101", 80, Ok(Route::External(sa("[64:ff9b::101:101]:80")))),
            (&open, true, "198.18.0.1", 80, Err(AirlockRejected)),
            (&open, true, "fec0::1", 80, Err(AirlockRejected)),
            // Names: resolved only with a NIC, never to a blocked range.
            (&open, true, "example.org", 443, Ok(Route::External(sa("93.184.216.34:443")))),
            (&open, false, "example.org", 443, Err(NameUnresolvable)),
            (&open, true, "internal.test", 443, Err(AirlockRejected)),
            (&open, true, "mixed.test", 443, Ok(Route::External(sa("1.1.1.1:443")))),
            (&open, true, "empty.test", 443, Err(NameUnresolvable)),
            (&open, true, "silent.test", 443, Err(NameUnresolvable)),
            (&pinned, true, "example.org", 80, Err(CapabilityDenied)),
        ];
        for (i, (p, external, host, port, want)) in cases.iter().enumerate() {
            assert_eq!(p.route(*external, host, *port, &resolver), *want, "case {i}: {host}:{port} (NIC: {external})");
        }
    }

    #[test]
    fn a_name_is_resolved_only_when_it_may_leave() {
        let asked = std::cell::Cell::new(0);
        let counting = |name: &str| {
            asked.set(asked.get() + 1);
            resolver(name)
        };
        let _ = NetPolicy::default().route(true, "example.org", 80, &counting);
        let _ = policy(&["*:*"], &[]).route(false, "example.org", 80, &counting);
        assert_eq!(asked.get(), 0);
        let _ = policy(&["*:*"], &[]).route(true, "example.org", 80, &counting);
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn airlock_exemption() {
        let pinned = policy(&["10.0.2.2:*", "[fd00::1]:443", "*:*"], &[]);
        let star = policy(&["*:*"], &[]);
        let local = policy(&["127.0.0.1:*", "0.0.0.0:80", "[::ffff:127.0.0.1]:*"], &[]);
        #[rustfmt::skip]
        let cases: &[(&[Pattern], &str, u16, bool)] = &[
            (&[], "1.1.1.1", 80, true),
            (&[], "10.0.2.2", 80, false),
            (&pinned.connect, "10.0.2.2", 80, true),
            (&pinned.connect, "10.0.2.3", 80, false),
            (&pinned.connect, "fd00::1", 443, true),
            // The entry naming fd00::1 allows 443 only; `*:*` allows 80 but names nothing.
            (&pinned.connect, "fd00::1", 80, false),
            (&pinned.connect, "169.254.1.1", 80, false),
            // `*` names no address.
            (&star.connect, "192.168.1.1", 80, false),
            // Loopback and "this host" stay in, named or not.
            (&local.connect, "127.0.0.1", 80, false),
            (&local.connect, "0.0.0.0", 80, false),
            (&local.connect, "::ffff:127.0.0.1", 80, false),
        ];
        for (patterns, addr, port, want) in cases {
            assert_eq!(passes_airlock(patterns, ip(addr), *port), *want, "{addr}:{port}");
        }
    }

    #[test]
    fn listen_address() {
        let default = NetPolicy::default();
        let none = NetPolicy { bind: Vec::new(), ..NetPolicy::default() };
        let beside_a_server = NetPolicy { foreign_published: vec![8080], ..NetPolicy::default() };
        #[rustfmt::skip]
        let cases: &[(&NetPolicy, &str, Want<IpAddr>)] = &[
            (&default, "127.0.0.1", Ok(ip("127.0.0.1"))),
            (&default, "localhost", Ok(ip("127.0.0.1"))),
            (&default, "::1", Ok(ip("::1"))),
            (&none, "127.0.0.1", Err(CapabilityDenied)),
            (&default, "0.0.0.0", Err(AddressNotAvailable)),
            (&default, "10.0.2.15", Err(AddressNotAvailable)),
            (&default, "example.org", Err(AddressNotAvailable)),
            (&none, "", Err(AddressNotAvailable)),
            // A published port another capsule serves is in use, whatever this one may bind.
            (&beside_a_server, "127.0.0.1", Err(AddressInUse)),
            (&beside_a_server, "::1", Err(AddressInUse)),
            (&beside_a_server, "10.0.2.15", Err(AddressNotAvailable)),
        ];
        for (p, host, want) in cases {
            assert_eq!(p.listen_address(host, 8080), *want, "{host}");
        }
        assert_eq!(beside_a_server.listen_address("127.0.0.1", 8081), Ok(ip("127.0.0.1")));
        assert_eq!(beside_a_server.listen_address("127.0.0.1", 0), Ok(ip("127.0.0.1")));
    }

    #[test]
    fn udp_bind_address() {
        let default = NetPolicy::default();
        let world = policy(&[], &["*:*"]);
        #[rustfmt::skip]
        let cases: &[(&NetPolicy, bool, &str, Want<UdpBind>)] = &[
            (&default, true, "127.0.0.1", Ok(UdpBind::Loopback(ip("127.0.0.1")))),
            (&default, true, "0.0.0.0", Err(CapabilityDenied)),
            (&world, true, "0.0.0.0", Ok(UdpBind::Outside(ip("0.0.0.0")))),
            (&world, true, "::", Ok(UdpBind::Outside(ip("::")))),
            (&world, false, "0.0.0.0", Err(NoUdpInterface)),
            (&world, true, "10.0.2.15", Err(AddressNotAvailable)),
            (&default, true, "10.0.2.15", Err(CapabilityDenied)),
            (&world, true, "a b", Err(AddressNotAvailable)),
        ];
        for (p, external, host, want) in cases {
            assert_eq!(p.udp_bind_address(*external, host, 53), *want, "{host} (NIC: {external})");
        }
    }

    #[test]
    fn udp_target() {
        let default = NetPolicy::default();
        let world = policy(&[], &["*:*", "10.0.2.3:53"]);
        #[rustfmt::skip]
        let cases: &[(&NetPolicy, bool, &str, Want<SocketAddr>)] = &[
            (&default, false, "127.0.0.1", Ok(sa("127.0.0.1:53"))),
            (&default, false, "localhost", Ok(sa("127.0.0.1:53"))),
            // Loopback from an outside socket, the world from a loopback one: neither.
            (&default, true, "127.0.0.1", Err(AddressNotAvailable)),
            (&world, false, "1.1.1.1", Err(AddressNotAvailable)),
            (&default, true, "1.1.1.1", Err(CapabilityDenied)),
            (&world, true, "1.1.1.1", Ok(sa("1.1.1.1:53"))),
            (&world, true, "10.0.2.2", Err(AirlockRejected)),
            (&world, true, "10.0.2.3", Ok(sa("10.0.2.3:53"))),
            // Names are not sent to: look them up first.
            (&world, true, "example.org", Err(AddressNotAvailable)),
            (&world, true, "", Err(AddressNotAvailable)),
        ];
        for (p, outside, host, want) in cases {
            assert_eq!(p.udp_target(*outside, host, 53), *want, "{host} (outside: {outside})");
        }
    }

    #[test]
    fn lookup_permission() {
        let web = policy(&["example.org:443"], &["dns.test:53"]);
        let any_port = policy(&["example.org:*"], &[]);
        #[rustfmt::skip]
        let cases: &[(&NetPolicy, &str, Option<u16>, bool)] = &[
            (&web, "example.org", None, true),
            (&web, "example.org", Some(443), true),
            (&web, "example.org", Some(80), false),
            (&web, "dns.test", None, true),
            (&web, "dns.test", Some(53), true),
            (&web, "other.test", None, false),
            (&any_port, "example.org", Some(80), true),
            // `example.org:*` with no port given: any of its ports would do.
            (&any_port, "example.org", None, true),
            (&NetPolicy::default(), "localhost", None, true),
            (&NetPolicy::default(), "example.org", None, false),
        ];
        for (p, name, port, want) in cases {
            assert_eq!(p.may_look_up(name, *port), *want, "{name} {port:?}");
        }
    }

    #[test]
    fn lookup() {
        let open = policy(&["*:*"], &[]);
        let s = |v: &[&str]| Ok(v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        #[rustfmt::skip]
        let cases: &[(&NetPolicy, bool, &str, Want<Vec<String>>)] = &[
            (&open, true, "example.org", s(&["93.184.216.34"])),
            (&open, true, "example.org:443", s(&["93.184.216.34:443"])),
            (&open, false, "example.org", Err(NameUnresolvable)),
            (&open, true, "internal.test", s(&[])),
            (&open, true, "mixed.test", s(&["1.1.1.1"])),
            (&open, true, "empty.test", Err(NameUnresolvable)),
            (&open, true, "silent.test", Err(NameUnresolvable)),
            (&open, true, "localhost", s(&[])),
            (&open, true, "1.1.1.1", s(&["1.1.1.1"])),
            (&open, true, "10.0.0.1", s(&[])),
            (&open, true, "[2606:4700::1111]:53", s(&["[2606:4700::1111]:53"])),
            (&open, true, "2606:4700::1111", s(&["2606:4700::1111"])),
            (&open, true, "a b", Err(NameUnresolvable)),
            (&NetPolicy::default(), true, "example.org", Err(CapabilityDenied)),
        ];
        for (p, external, host, want) in cases {
            assert_eq!(p.lookup(*external, host, &resolver), *want, "{host} (NIC: {external})");
        }
    }

    #[test]
    fn split_lookup_keeps_ipv6_colons() {
        assert_eq!(split_lookup("example.org"), ("example.org".into(), None));
        assert_eq!(split_lookup("example.org:443"), ("example.org".into(), Some(443)));
        assert_eq!(split_lookup("example.org:x"), ("example.org:x".into(), None));
        assert_eq!(split_lookup("::1"), ("::1".into(), None));
        assert_eq!(split_lookup("[::1]:80"), ("[::1]".into(), Some(80)));
    }

    #[test]
    fn quota() {
        let counts = NetCounts::default();
        for (kind, max) in [(Kind::Stream, MAX_STREAMS), (Kind::Listener, MAX_LISTENERS), (Kind::Udp, MAX_UDP)] {
            let mut held = Vec::new();
            for _ in 0..max {
                assert_eq!(counts.room(kind), Ok(()));
                held.push(counts.charge(kind).unwrap());
            }
            assert_eq!(counts.room(kind), Err(Quota), "{kind:?}");
            assert!(counts.charge(kind).is_err(), "{kind:?}");
            // A stream's half keeps the charge after the stream itself is dropped.
            let half = held[0].clone();
            held.remove(0);
            assert_eq!(counts.room(kind), Err(Quota), "{kind:?} credited while a half lives");
            drop(half);
            assert_eq!(counts.room(kind), Ok(()));
            assert_eq!(counts.held(kind), max - 1);
        }
    }
}
