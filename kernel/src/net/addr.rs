//! Addresses a capsule names, and what the image does with them: every loopback name
//! (`localhost`, 127.0.0.0/8, `::1`) is served inside the image and never reaches the
//! kernel's network stack; other addresses go out through the NIC only where the
//! capsule's policy allows, and the airlock keeps them off private, link-local,
//! multicast and unspecified ranges unless the policy names the address itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// The loopback address of the family of `ip`.
pub fn loopback_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// Ranges the airlock keeps capsules away from: loopback, private (RFC 1918, CGNAT,
/// unique local), link-local, multicast, broadcast, unspecified, documentation.
pub fn airlock_blocks(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => blocks_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => blocks_v4(v4),
            None => blocks_v6(v6),
        },
    }
}

fn blocks_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || a >= 240
}

fn blocks_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8
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
            .ok_or_else(|| format!("{text:?} is not host:port (use * for any port)"))?;
        let port = match port {
            "*" => None,
            p => Some(p.parse::<u16>().map_err(|_| format!("{text:?}: port {p:?} is not a number from 0 to 65535 or *"))?),
        };
        let host = match host {
            "*" => None,
            h => {
                classify(h).ok_or_else(|| format!("{text:?}: {h:?} is not a host name or address"))?;
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

    /// Whether the entry names this exact address (which lets a capsule past the
    /// airlock to it: an operator wrote it down).
    pub fn names_address(&self, ip: IpAddr) -> bool {
        self.host.as_deref().and_then(|h| h.parse::<IpAddr>().ok()) == Some(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_stay_in_the_image() {
        for h in ["localhost", "LOCALHOST", "127.0.0.1", "127.9.9.9", "::1", "[::1]", "::ffff:127.0.0.1", "app.localhost"] {
            assert!(matches!(classify(h), Some(Destination::Loopback(_))), "{h}");
        }
        assert_eq!(classify("10.0.2.2"), Some(Destination::External("10.0.2.2".parse().unwrap())));
        assert_eq!(classify("example.org"), Some(Destination::Name("example.org".into())));
        for bad in ["", "a b", "x..y", "[]", "foo/bar"] {
            assert_eq!(classify(bad), None, "{bad}");
        }
    }

    #[test]
    fn airlock_ranges() {
        for ip in ["127.0.0.1", "10.0.2.2", "192.168.1.1", "172.16.0.1", "169.254.1.1", "224.0.0.1", "0.0.0.0", "100.64.0.1", "::1", "fe80::1", "fd00::1", "::ffff:10.0.0.1", "255.255.255.255"] {
            assert!(airlock_blocks(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(!airlock_blocks(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn patterns() {
        let p = Pattern::parse("10.0.2.2:8080").unwrap();
        assert!(p.matches("10.0.2.2", 8080) && !p.matches("10.0.2.2", 8081) && !p.matches("10.0.2.3", 8080));
        assert!(p.names_address("10.0.2.2".parse().unwrap()));
        let any = Pattern::parse("*:*").unwrap();
        assert!(any.matches("example.org", 1) && !any.names_address("10.0.2.2".parse().unwrap()));
        let local = Pattern::parse("localhost:*").unwrap();
        assert!(local.matches("127.0.0.1", 9) && local.matches("[::1]", 9));
        let v6 = Pattern::parse("[2001:db8::1]:443").unwrap();
        assert!(v6.matches("2001:db8::1", 443));
        assert!(Pattern::parse("nohost").is_err());
        assert!(Pattern::parse("h:99999").is_err());
        assert!(Pattern::parse("a b:1").is_err());
    }
}
