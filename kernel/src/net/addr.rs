//! Addresses a capsule names, and what the image does with them: every loopback name
//! (`localhost`, 127.0.0.0/8, `::1`, 127/8 as IPv4-mapped or -compatible IPv6) is served
//! inside the image and never reaches the kernel's network stack; other addresses go out
//! through the NIC only where the capsule's policy allows, and the airlock keeps them off
//! private, link-local, site-local, multicast, documentation, benchmarking and reserved
//! ranges (also when embedded in IPv6 by NAT64 or 6to4) unless the entry that allows the
//! destination names the address itself. Loopback and "this host" never leave, named or
//! not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::audit::Untrusted;

/// Where a name leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Served by the image itself (one port space for all of 127.0.0.0/8 and ::1).
    Loopback(IpAddr),
    /// A numeric address outside the image.
    External(IpAddr),
    /// A name that needs resolving.
    Name(String),
}

/// Parses a host as a capsule writes it: `localhost`, an IPv4 literal, an IPv6 literal
/// with or without brackets, or a DNS name. `None` for what can be none of these.
pub fn classify(host: &str) -> Option<Destination> {
    let host = host.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.is_empty() || bare.len() > 253 {
        return None;
    }
    if bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost") {
        return Some(Destination::Loopback(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(if is_loopback(ip) { Destination::Loopback(ip) } else { Destination::External(ip) });
    }
    let name_ok = bare.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    name_ok.then(|| Destination::Name(bare.to_ascii_lowercase()))
}

/// The image's loopback in every spelling: 127.0.0.0/8, `::1`, and 127.0.0.0/8 written
/// as IPv4-mapped (`::ffff:127.0.0.1`) or IPv4-compatible (`::127.0.0.1`) IPv6.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v4_in_v6(v6).is_some_and(|v4| v4.is_loopback()),
    }
}

/// The loopback address of the family of `ip`.
pub fn loopback_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// The IPv4 address an IPv6 address stands for on the way out: IPv4-mapped
/// (`::ffff:0:0/96`), IPv4-compatible (`::/96`, deprecated; not `::` or `::1`), NAT64's
/// well-known prefix (`64:ff9b::/96`, RFC 6052) and 6to4 (`2002::/16`, RFC 3056, the
/// address in bits 16–47). A gateway or relay would carry a connection to it.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => v4_in_v6(ip),
    }
}

/// IPv4-mapped or IPv4-compatible: the two spellings a dual stack reads as the IPv4
/// address itself.
fn v4_in_v6(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    (s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback()).then(|| Ipv4Addr::from(u32::from(s[6]) << 16 | u32::from(s[7])))
}

/// Addresses no exemption lets out: the loopback and "this host" (the unspecified
/// address, 0.0.0.0/8, which a hosted image's own stack answers on the host) in any
/// spelling, including through NAT64 and 6to4 — outside the image they are some
/// other machine's, or the host's, loopback. The image's own loopback is served in
/// memory before any route is asked.
pub fn never_outward(ip: IpAddr) -> bool {
    let v4_local = |v4: Ipv4Addr| v4.is_loopback() || v4.octets()[0] == 0;
    match ip {
        IpAddr::V4(v4) => v4_local(v4),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || embedded_v4(v6).is_some_and(v4_local),
    }
}

/// Ranges the airlock keeps capsules away from unless an entry names the address:
/// everything [`never_outward`] refuses, private (RFC 1918, CGNAT, unique local),
/// link-local, site-local, multicast, broadcast, documentation, benchmarking, reserved
/// and protocol-assignment ranges, and an IPv6 address that embeds a blocked IPv4 one
/// (mapped, compatible, NAT64, 6to4).
pub fn airlock_blocks(ip: IpAddr) -> bool {
    never_outward(ip)
        || match ip {
            IpAddr::V4(v4) => blocks_v4(v4),
            IpAddr::V6(v6) => blocks_v6(v6) || embedded_v4(v6).is_some_and(blocks_v4),
        }
}

fn blocks_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments (192.0.0.0/24) and the 6to4 relay anycast.
        || (a, b, c) == (192, 0, 0)
        || (a, b, c) == (192, 88, 99)
        // Benchmarking (RFC 2544): 198.18.0.0/15.
        || (a == 198 && (b & 0xfe) == 18)
        || a >= 240
}

fn blocks_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10, site-local fec0::/10 (deprecated,
        // still routed inside sites).
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        // Documentation 2001:db8::/32 and 3fff::/20.
        || (s[0], s[1]) == (0x2001, 0x0db8)
        || (s[0] & 0xfff0) == 0x3ff0
        // IETF protocol assignments 2001::/23 (Teredo, benchmarking 2001:2::/48, ORCHID).
        || (s[0] == 0x2001 && s[1] < 0x0200)
        // Discard-only 100::/64, NAT64 for local use 64:ff9b:1::/48.
        || s[..4] == [0x0100, 0, 0, 0]
        || s[..3] == [0x0064, 0xff9b, 0x0001]
}

/// `ip:port` the way the WIT's accessors print it (brackets around IPv6).
pub fn show(addr: SocketAddr) -> String {
    addr.to_string()
}

/// One allowlist entry of a manifest: `host:port`, `host:*`, `*:port` or `*:*`, where a
/// host is a name or an address (IPv6 in brackets). UDP entries may start with `bind:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    pub host: Option<String>,
    pub port: Option<u16>,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{} is not host:port (use * for any port)", Untrusted(text)))?;
        let port = match port {
            "*" => None,
            p => Some(p.parse::<u16>().map_err(|_| format!("{}: port {} is not a number from 0 to 65535 or *", Untrusted(text), Untrusted(p)))?),
        };
        let host = match host {
            "*" => None,
            h => {
                classify(h).ok_or_else(|| format!("{}: {} is not a host name or address", Untrusted(text), Untrusted(h)))?;
                let bare = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(h);
                Some(bare.to_ascii_lowercase())
            }
        };
        Ok(Pattern { host, port })
    }

    /// Whether `host` (as the capsule wrote it, or an address it resolved to) and
    /// `port` match. Loopback spellings match each other.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let Some(want) = &self.host else { return true };
        let bare = host.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(host).to_ascii_lowercase();
        if *want == bare {
            return true;
        }
        let loop_a = matches!(classify(want), Some(Destination::Loopback(_)));
        let loop_b = matches!(classify(&bare), Some(Destination::Loopback(_)));
        if loop_a && loop_b {
            return true;
        }
        match (want.parse::<IpAddr>(), bare.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }

    /// Whether the entry names this exact address and allows `port` (which lets a
    /// capsule past the airlock to `ip:port`, and nowhere else: an operator wrote that
    /// destination down). A name, `*` or another address names nothing.
    pub fn names_destination(&self, ip: IpAddr, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && self.host.as_deref().and_then(|h| h.parse::<IpAddr>().ok()) == Some(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_stay_in_the_image() {
        for h in ["localhost", "LOCALHOST", "127.0.0.1", "127.9.9.9", "::1", "[::1]", "::ffff:127.0.0.1", "::127.0.0.1", "app.localhost"] {
            assert!(matches!(classify(h), Some(Destination::Loopback(_))), "{h}");
        }
        assert_eq!(classify("10.0.2.2"), Some(Destination::External("10.0.2.2".parse().unwrap())));
        assert_eq!(classify("example.org"), Some(Destination::Name("example.org".into())));
        for bad in ["", "a b", "x..y", "[]", "foo/bar"] {
            assert_eq!(classify(bad), None, "{bad}");
        }
    }

    /// Every range the airlock knows, with addresses on both sides of its edges:
    /// (address, served by the image's loopback, blocked unless named, never let out).
    #[test]
    fn address_classes() {
        #[rustfmt::skip]
        let cases: &[(&str, bool, bool, bool)] = &[
            // Loopback in every spelling a dual stack reads as 127/8.
            ("127.0.0.1", true, true, true),
            ("127.255.255.254", true, true, true),
            ("::1", true, true, true),
            ("::ffff:127.0.0.1", true, true, true),
            ("::127.0.0.1", true, true, true),
            ("::127.9.9.9", true, true, true),
            // Loopback and "this host" behind a translator or relay: not ours, never out.
            ("64:ff9b::7f00:1", false, true, true),
            ("64:ff9b::127.1.2.3", false, true, true),
            ("2002:7f00:0001::", false, true, true),
            ("2002:7f00:1:ffff::1", false, true, true),
            ("0.0.0.0", false, true, true),
            ("0.1.2.3", false, true, true),
            ("::", false, true, true),
            ("::ffff:0.0.0.0", false, true, true),
            ("::0.0.0.2", false, true, true),
            ("64:ff9b::", false, true, true),
            ("2002::", false, true, true),
            // Private, shared, link-local, multicast, broadcast, reserved: named, they pass.
            ("10.0.2.2", false, true, false),
            ("172.16.0.1", false, true, false),
            ("172.31.255.255", false, true, false),
            ("192.168.1.1", false, true, false),
            ("100.64.0.1", false, true, false),
            ("100.127.255.255", false, true, false),
            ("169.254.1.1", false, true, false),
            ("224.0.0.1", false, true, false),
            ("255.255.255.255", false, true, false),
            ("240.0.0.1", false, true, false),
            ("192.0.0.8", false, true, false),
            ("192.88.99.1", false, true, false),
            ("192.0.2.1", false, true, false),
            ("198.51.100.1", false, true, false),
            ("203.0.113.1", false, true, false),
            // Benchmarking 198.18.0.0/15, and its edges.
            ("198.18.0.0", false, true, false),
            ("198.19.255.255", false, true, false),
            ("198.17.255.255", false, false, false),
            ("198.20.0.0", false, false, false),
            // IPv6 ranges: unique local, link-local, site-local, multicast, documentation,
            // protocol assignments (Teredo, benchmarking), discard, NAT64 local use.
            ("fd00::1", false, true, false),
            ("fc00::1", false, true, false),
            ("fe80::1", false, true, false),
            ("febf::1", false, true, false),
            ("fec0::1", false, true, false),
            ("feff::1", false, true, false),
            ("ff02::1", false, true, false),
            ("2001:db8::1", false, true, false),
            ("3fff::1", false, true, false),
            ("2001::1", false, true, false),
            ("2001:2::1", false, true, false),
            ("2001:1ff::1", false, true, false),
            ("100::1", false, true, false),
            ("64:ff9b:1::1", false, true, false),
            // Private behind mapped, compatible, NAT64 and 6to4 spellings.
            ("::ffff:10.0.0.1", false, true, false),
            ("::10.0.0.1", false, true, false),
            ("64:ff9b::a00:202", false, true, false),
            ("64:ff9b::192.168.0.1", false, true, false),
            ("2002:c0a8:0101::1", false, true, false),
            ("2002:a9fe:0101::", false, true, false),
            // Public, in each spelling.
            ("1.1.1.1", false, false, false),
            ("93.184.216.34", false, false, false),
            ("100.63.255.255", false, false, false),
            ("100.128.0.0", false, false, false),
            ("172.32.0.1", false, false, false),
            ("2606:4700::1111", false, false, false),
            ("2001:200::1", false, false, false),
            ("::ffff:1.1.1.1", false, false, false),
            ("64:ff9b::101:101", false, false, false),
            ("2002:0101:0101::1", false, false, false),
            ("fbff::1", false, false, false),
            ("4000::1", false, false, false),
        ];
        for &(text, loopback, blocked, never) in cases {
            let ip: IpAddr = text.parse().unwrap_or_else(|_| panic!("{text}"));
            assert_eq!(is_loopback(ip), loopback, "{text}: loopback");
            assert_eq!(matches!(classify(text), Some(Destination::Loopback(_))), loopback, "{text}: classify");
            assert_eq!(airlock_blocks(ip), blocked, "{text}: airlock");
            assert_eq!(never_outward(ip), never, "{text}: never outward");
        }
    }

    /// Differential against std's classification where std has a stable method: what
    /// std calls loopback, private, link-local, multicast, broadcast, documentation,
    /// unspecified, unique local or unicast link-local, the airlock blocks; what std
    /// calls loopback stays in the image.
    #[test]
    fn the_airlock_agrees_with_std_where_std_answers() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let r = next();
            let v4 = Ipv4Addr::from(r as u32);
            let std_blocks = v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_multicast() || v4.is_broadcast() || v4.is_documentation() || v4.is_unspecified();
            assert!(!std_blocks || airlock_blocks(IpAddr::V4(v4)), "{v4}");
            assert_eq!(is_loopback(IpAddr::V4(v4)), v4.is_loopback(), "{v4}");
            // The same address through every IPv6 spelling that embeds it.
            let [a, b, c, d] = v4.octets();
            let embedded = [v4.to_ipv6_mapped(), v4.to_ipv6_compatible(), Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])), Ipv6Addr::new(0x2002, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), 0, 0, 0, 0, 1)];
            for v6 in embedded {
                assert_eq!(airlock_blocks(IpAddr::V6(v6)), airlock_blocks(IpAddr::V4(v4)) || v6.is_unspecified(), "{v6} embeds {v4}");
                assert!(!v4.is_loopback() || never_outward(IpAddr::V6(v6)), "{v6}");
            }
            let v6 = Ipv6Addr::from(u128::from(r) << 64 | u128::from(next()));
            let std_blocks = v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || v6.is_unique_local() || v6.is_unicast_link_local();
            assert!(!std_blocks || airlock_blocks(IpAddr::V6(v6)), "{v6}");
            assert_eq!(v6.is_loopback(), v6 == Ipv6Addr::LOCALHOST);
        }
    }

    #[test]
    fn patterns() {
        let p = Pattern::parse("10.0.2.2:8080").unwrap();
        assert!(p.matches("10.0.2.2", 8080) && !p.matches("10.0.2.2", 8081) && !p.matches("10.0.2.3", 8080));
        assert!(p.names_destination("10.0.2.2".parse().unwrap(), 8080));
        assert!(!p.names_destination("10.0.2.2".parse().unwrap(), 8081));
        let any = Pattern::parse("*:*").unwrap();
        assert!(any.matches("example.org", 1) && !any.names_destination("10.0.2.2".parse().unwrap(), 1));
        let local = Pattern::parse("localhost:*").unwrap();
        assert!(local.matches("127.0.0.1", 9) && local.matches("[::1]", 9));
        let v6 = Pattern::parse("[2001:db8::1]:443").unwrap();
        assert!(v6.matches("2001:db8::1", 443));
        assert!(Pattern::parse("nohost").is_err());
        assert!(Pattern::parse("h:99999").is_err());
        assert!(Pattern::parse("a b:1").is_err());
    }
}
