//! `Manifest::parse`, the capsule's own `Capsule.toml` (it travels with the capsule, so it
//! is capsule-controlled text): any text gets a manifest or an error, never a panic. With
//! `--cfg fuzzing` the net and ipc pattern checks run too, as in the engine build.
//!
//! Holds: a parsed manifest keeps its text, its name is what `[package] name` allows, its
//! limits are what the text says, its capabilities list every entry, and its hex form
//! (how it travels on the command line) decodes back to the text.
#![no_main]

use astrid_fuzz as _;
use astrid_kernel::manifest::Manifest;
use astrid_kernel::net::addr::Pattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(m) = Manifest::parse(text) else { return };
    assert_eq!(m.text, text);
    if let Some(name) = &m.name {
        assert!((1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{name:?}");
    }
    assert_ne!(m.memory_mib, Some(0));
    let lists = [&m.net_bind, &m.net_connect, &m.net_udp, &m.ipc_publish, &m.ipc_subscribe];
    let entries: usize = lists.iter().map(|l| l.as_ref().map_or(0, Vec::len)).sum();
    assert_eq!(m.capabilities().len(), entries);
    for p in m.net_bind.iter().chain(&m.net_connect).flatten() {
        assert!(Pattern::parse(p).is_ok(), "{p:?} was accepted but does not parse");
    }
    assert_eq!(Manifest::decode(&Manifest::encode(text)).as_deref(), Ok(text));
    // What the text says is what was parsed: parsing the same text again gives the same.
    assert_eq!(Manifest::parse(text).as_ref(), Ok(&m));
});
