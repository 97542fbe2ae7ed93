//! What the image does with a boot's capsules before the engine sees them: the settings
//! the boot path passes (`ASTRID_CAPSULES`, `ASTRID_CAPSULE_<i>`, `ASTRID_MANIFEST_<i>`,
//! and the rest of the table) parsed, the capsules discovered from them, each manifest
//! decoded and parsed, and the capsule's bytes checked by `wasm::inspect`.
//!
//! Input: `NAME=VALUE` lines up to a NUL, then the capsule's bytes.
//! Holds: no panic; settings that parse print back to the same settings; a discovered
//! boot module prints back to an announcement that parses to itself; `inspect` accepts
//! exactly the two preambles and every refusal is one line naming what it found.
#![no_main]

use astrid_fuzz::Reader;
use astrid_kernel::capsule::{self, CapsuleSource};
use astrid_kernel::manifest::Manifest;
use astrid_kernel::settings::Settings;
use astrid_kernel::wasm::{self, HeaderError, WasmKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Reader::new(data);
    let text = String::from_utf8_lossy(input.until_nul()).into_owned();
    let bytes = input.rest();
    let pairs: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(settings) = Settings::from_env_pairs(pairs) {
        let again = Settings::from_env_pairs(settings.to_env_pairs());
        assert_eq!(again.as_ref().ok(), Some(&settings), "settings do not survive printing");
        discover(&settings);
    }
    inspect(bytes);
});

fn discover(settings: &Settings) {
    let Ok(sources) = capsule::discover(&[], settings) else { return };
    for (i, source) in sources.iter().enumerate() {
        let CapsuleSource::BootModule { addr, len, name } = source else { unreachable!("no arguments were given") };
        let announced = format!("{addr:#x},{len},{name}");
        let mut again = settings.clone();
        again.capsule_count = Some("1".into());
        again.boot_modules.clear();
        again.boot_modules.insert(0, announced);
        assert_eq!(capsule::discover(&[], &again).as_deref(), Ok(std::slice::from_ref(source)));
        let _ = (source.name(), source.id());
        if let Some(hex) = settings.manifests.get(&i)
            && let Ok(text) = Manifest::decode(hex)
        {
            assert_eq!(Manifest::encode(&text), hex.to_ascii_lowercase());
            let _ = Manifest::parse(&text).map(|m| m.capabilities());
        }
    }
}

fn inspect(bytes: &[u8]) {
    match wasm::inspect(bytes) {
        Ok(header) => {
            assert!(bytes.len() >= 8 && bytes.starts_with(b"\0asm"), "accepted a binary without the wasm preamble");
            assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), header.version);
            let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
            assert_eq!(layer, if header.kind == WasmKind::Component { 1 } else { 0 });
        }
        Err(e) => {
            match &e {
                HeaderError::Empty => assert!(bytes.is_empty()),
                HeaderError::Truncated { len } => assert!(*len == bytes.len() && *len < 8),
                HeaderError::NotWasm { first_bytes } => assert!(first_bytes.len() <= 4 && bytes.starts_with(first_bytes)),
                HeaderError::UnsupportedVersion { .. } => assert!(bytes.len() >= 8),
            }
            let message = e.to_string();
            assert!(!message.is_empty() && !message.contains('\n'), "{message:?}");
        }
    }
}
