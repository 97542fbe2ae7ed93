//! Address classification (`net::addr`), differential against the standard library's
//! address methods: every special-purpose range std knows (loopback, private, shared,
//! link-local, multicast, broadcast, unspecified, documentation, benchmarking, reserved,
//! "this network", unique local, IETF protocol assignments, discard-only, local-use
//! NAT64, and `!is_global` for IPv4 as a whole) must be kept away by the airlock; an IPv6
//! address that embeds a blocked IPv4 one (mapped, compatible, NAT64 `64:ff9b::/96`, 6to4
//! `2002::/16`) must be blocked too; loopback is the image's in every spelling std reads as
//! loopback; and a host name, literal or pattern a capsule writes is classified
//! consistently with those (a loopback spelling is never an outside destination).
//!
//! Input: 4 bytes (an IPv4 address), 16 bytes (an IPv6 address), 2 bytes (a port), then
//! the text of a host or a manifest pattern.
#![no_main]
#![feature(ip)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use astrid_fuzz::Reader;
use astrid_kernel::net::addr::{self, Destination, Pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Reader::new(data);
    let v4 = Ipv4Addr::from(input.u32());
    let v6 = Ipv6Addr::from(u128::from_le_bytes(input.bytes(16).try_into().unwrap_or([0; 16])));
    let port = input.u16();
    let text = String::from_utf8_lossy(input.rest());
    check_v4(v4);
    check_v6(v6);
    check_text(&text, port);
});

fn blocks(ip: impl Into<IpAddr>) -> bool {
    addr::airlock_blocks(ip.into())
}

fn check_v4(ip: Ipv4Addr) {
    let special = [
        ("loopback", ip.is_loopback()),
        ("private", ip.is_private()),
        ("shared (CGNAT)", ip.is_shared()),
        ("link-local", ip.is_link_local()),
        ("multicast", ip.is_multicast()),
        ("broadcast", ip.is_broadcast()),
        ("unspecified", ip.is_unspecified()),
        ("documentation", ip.is_documentation()),
        ("benchmarking", ip.is_benchmarking()),
        ("reserved", ip.is_reserved()),
        ("not global", !ip.is_global()),
    ];
    let blocked = blocks(ip);
    for (what, is) in special {
        assert!(!is || blocked, "{ip} is {what} (std) but the airlock lets capsules reach it");
    }
    // And no more than that: global unicast stays reachable, apart from multicast, the
    // IETF protocol block and the 6to4 relay anycast, which the airlock keeps too.
    let [a, b, c, _] = ip.octets();
    let also_blocked = ip.is_multicast() || (a, b, c) == (192, 0, 0) || (a, b, c) == (192, 88, 99);
    assert!(!blocked || !ip.is_global() || also_blocked, "{ip} is global unicast (std) but the airlock blocks it");
    assert_eq!(addr::is_loopback(ip.into()), ip.is_loopback(), "{ip}");
    // Written as a capsule writes it: the image's loopback, or a destination outside.
    let expected = if ip.is_loopback() { Destination::Loopback(ip.into()) } else { Destination::External(ip.into()) };
    assert_eq!(addr::classify(&ip.to_string()), Some(expected), "{ip}");
    // Every IPv6 spelling of it: mapped is the address itself; compatible, NAT64 and 6to4
    // reach it through a dual stack, a translator or a relay, so a blocked one stays
    // blocked (and loopback is never let out).
    let [a, b, c, d] = ip.octets();
    let low = [u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])];
    let mapped = ip.to_ipv6_mapped();
    assert_eq!(blocks(mapped), blocked, "{mapped} (mapped {ip})");
    assert_eq!(addr::is_loopback(mapped.into()), ip.is_loopback(), "{mapped}");
    let compatible = ip.to_ipv6_compatible();
    let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, low[0], low[1]);
    let six_to_four = Ipv6Addr::new(0x2002, low[0], low[1], 0, 0, 0, 0, 1);
    for (what, v6) in [("compatible", compatible), ("NAT64", nat64), ("6to4", six_to_four)] {
        assert!(!blocked || blocks(v6), "{v6} ({what} {ip}) reaches a blocked address");
        let loopback = matches!(addr::classify(&v6.to_string()), Some(Destination::Loopback(_)));
        assert!(!ip.is_loopback() || loopback || blocks(v6), "{v6} ({what} {ip}) routes loopback outward");
    }
}

fn check_v6(ip: Ipv6Addr) {
    let s = ip.segments();
    let blocked = blocks(ip);
    let special = [
        ("loopback", ip.is_loopback()),
        ("unspecified", ip.is_unspecified()),
        ("multicast", ip.is_multicast()),
        ("unique local", ip.is_unique_local()),
        ("link-local", ip.is_unicast_link_local()),
        ("site-local (fec0::/10)", s[0] & 0xffc0 == 0xfec0),
        ("documentation", ip.is_documentation()),
        ("benchmarking", ip.is_benchmarking()),
        // std's non-global ranges, except those the airlock judges by the IPv4 address
        // they carry (mapped, 6to4: checked in `check_v4`) and SRv6 SIDs (5f00::/16).
        ("not global", !ip.is_global() && !ip.is_ipv4_mapped() && s[0] != 0x2002 && s[0] != 0x5f00),
    ];
    for (what, is) in special {
        assert!(!is || blocked, "{ip} is {what} (std) but the airlock lets capsules reach it");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        assert_eq!(blocked, blocks(v4), "{ip}");
    }
    // Registry-allocated global unicast, far from every special range: reachable.
    if (0x2400..0x2c00).contains(&s[0]) {
        assert!(!blocked, "{ip} is global unicast but the airlock blocks it");
    }
    assert!(!ip.is_loopback() || addr::is_loopback(ip.into()), "{ip}");
    match addr::classify(&ip.to_string()) {
        Some(Destination::Loopback(at)) => assert!(addr::is_loopback(at) && at == IpAddr::V6(ip), "{ip}"),
        Some(Destination::External(at)) => assert!(!addr::is_loopback(at) && at == IpAddr::V6(ip), "{ip}"),
        other => panic!("{ip} classified as {other:?}"),
    }
    let bracketed = format!("[{ip}]");
    assert_eq!(addr::classify(&bracketed), addr::classify(&ip.to_string()), "{bracketed}");
}

fn check_text(text: &str, port: u16) {
    match addr::classify(text) {
        Some(Destination::Loopback(ip)) => assert!(addr::is_loopback(ip), "{text:?} -> {ip}"),
        Some(Destination::External(ip)) => {
            assert!(!addr::is_loopback(ip), "{text:?}: the loopback {ip} classified as outside the image");
            assert!(!text.trim().eq_ignore_ascii_case("localhost"));
        }
        Some(Destination::Name(name)) => {
            assert!(!name.is_empty() && name.len() <= 253 && name == name.to_ascii_lowercase(), "{text:?} -> {name:?}");
            assert!(name.parse::<IpAddr>().is_err(), "{text:?}: the address {name} classified as a name");
            assert!(name != "localhost" && !name.ends_with(".localhost"), "{text:?}: a loopback name classified as outside");
        }
        None => {}
    }
    // A manifest entry: one that parses names its own host and port.
    if let Ok(p) = Pattern::parse(text) {
        let host = text.rsplit_once(':').map(|(h, _)| h).unwrap_or_default();
        let at = p.port.unwrap_or(port);
        if p.host.is_some() {
            assert!(p.matches(host, at), "{text:?} does not match its own host and port");
        }
        if p.port.is_some_and(|q| q != port) {
            assert!(!p.matches(host, port), "{text:?} matches port {port}");
        }
        let any = Pattern { host: None, port: None };
        assert!(any.matches(host, port));
        // Loopback spellings match each other.
        if let Some(Destination::Loopback(_)) = addr::classify(host) {
            assert!(Pattern::parse("localhost:*").unwrap().matches(host, port), "{host:?}");
        }
    }
    let _ = addr::show(std::net::SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
}
