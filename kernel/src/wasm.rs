//! Recognises a WebAssembly binary from its 8-byte preamble: magic, then a 16-bit
//! version and a 16-bit layer (0 = core module, 1 = component). The engine does the
//! full validation; this check turns the common mistakes into precise errors first.
//! Precompiled artifacts are recognised and authenticated by [`artifact`].

pub mod artifact;

use core::fmt;

const MAGIC: [u8; 4] = *b"\0asm";
/// The only core-module version there is.
const CORE_VERSION: u16 = 1;
/// The component-model binary version wasmtime and wasm-tools emit today.
const COMPONENT_VERSION: u16 = 0x0d;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmKind {
    CoreModule,
    Component,
}

impl fmt::Display for WasmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WasmKind::CoreModule => "core module",
            WasmKind::Component => "component",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WasmHeader {
    pub kind: WasmKind,
    pub version: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    Empty,
    Truncated { len: usize },
    NotWasm { first_bytes: Vec<u8> },
    UnsupportedVersion { version: u16, layer: u16 },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Empty => write!(f, "the file is empty"),
            HeaderError::Truncated { len } => {
                write!(f, "the file is {len} bytes, shorter than a wasm header (8 bytes)")
            }
            HeaderError::NotWasm { first_bytes } => write!(
                f,
                "not a WebAssembly binary (starts with {}, expected 00 61 73 6d \"\\0asm\")",
                hex(first_bytes)
            ),
            HeaderError::UnsupportedVersion { version, layer } => write!(
                f,
                "unsupported wasm binary version {version:#x} (layer {layer}); this image \
                 takes core modules version 1 and components version {COMPONENT_VERSION:#x}"
            ),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Checks the preamble of `bytes` and says what kind of wasm binary it is.
pub fn inspect(bytes: &[u8]) -> Result<WasmHeader, HeaderError> {
    if bytes.is_empty() {
        return Err(HeaderError::Empty);
    }
    if bytes.len() >= 4 && bytes[..4] != MAGIC || bytes.len() < 4 && !MAGIC.starts_with(bytes) {
        return Err(HeaderError::NotWasm { first_bytes: bytes[..bytes.len().min(4)].to_vec() });
    }
    if bytes.len() < 8 {
        return Err(HeaderError::Truncated { len: bytes.len() });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    match (layer, version) {
        (0, CORE_VERSION) => Ok(WasmHeader { kind: WasmKind::CoreModule, version }),
        (1, COMPONENT_VERSION) => Ok(WasmHeader { kind: WasmKind::Component, version }),
        _ => Err(HeaderError::UnsupportedVersion { version, layer }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_core_modules_and_components() {
        let core = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0];
        let component = [0, 0x61, 0x73, 0x6d, 0x0d, 0, 1, 0, 0x42];
        assert_eq!(inspect(&core).unwrap().kind, WasmKind::CoreModule);
        let c = inspect(&component).unwrap();
        assert_eq!((c.kind, c.version), (WasmKind::Component, 0x0d));
    }

    #[test]
    fn rejects_empty_truncated_foreign_and_future_binaries() {
        assert_eq!(inspect(&[]), Err(HeaderError::Empty));
        assert_eq!(inspect(b"\0as"), Err(HeaderError::Truncated { len: 3 }));
        assert_eq!(inspect(b"\0asm\x01"), Err(HeaderError::Truncated { len: 5 }));
        assert!(matches!(inspect(b"\x7fELF\x02\x01\x01\0"), Err(HeaderError::NotWasm { .. })));
        assert!(matches!(inspect(b"hi"), Err(HeaderError::NotWasm { .. })));
        assert_eq!(
            inspect(&[0, 0x61, 0x73, 0x6d, 2, 0, 0, 0]),
            Err(HeaderError::UnsupportedVersion { version: 2, layer: 0 })
        );
        assert_eq!(
            inspect(&[0, 0x61, 0x73, 0x6d, 0x0c, 0, 1, 0]),
            Err(HeaderError::UnsupportedVersion { version: 0x0c, layer: 1 })
        );
    }

    #[test]
    fn error_messages_show_what_was_found() {
        let e = inspect(b"#!/bin/sh\n").unwrap_err().to_string();
        assert!(e.contains("23 21 2f 62"), "{e}");
    }
}
