//! Sealed precompiled artifacts: how the image knows that machine code it is handed came
//! from this deployment's precompile step, for this engine, before any of it is mapped
//! executable.
//!
//! A wasmtime artifact is native code: deserializing one runs whatever it holds with the
//! image's privileges, and wasmtime checks only that its header matches the engine, not
//! who made it. So the precompile step (`xtask`'s capsule preparation) *seals* every
//! artifact: it appends a trailer
//!
//! ```text
//! payload (wasmtime's artifact) ‖ fingerprint (32) ‖ mac (32) ‖ "astrid-sealed-v2" (16)
//! ```
//!
//! where `mac` is BLAKE3 in keyed mode under the deployment's artifact key over
//! [`MAC_CONTEXT`] ‖ the engine fingerprint ‖ the payload's length (u64, little-endian)
//! ‖ the payload's BLAKE3 hash (so a forgery needs a BLAKE3 collision or the key). The
//! image reads the file once: one BLAKE3 pass gives the payload's hash (what the MAC
//! covers) and, continued over the trailer, the whole file's (what the audit log's load
//! record names), instead of a keyed pass and a plain one. The fingerprint names the engine build the artifact was made for
//! (wasmtime version, target, every setting that shapes compiled code: see
//! `engine::config`). The image recomputes the MAC over *its own* fingerprint, so an
//! artifact made for another engine, with another key, or changed in any byte (payload
//! or trailer) is refused. The fingerprint in the trailer only chooses the message.
//!
//! Plain `.wasm` needs no seal: the image compiles it itself.

use core::fmt;

/// Bytes of an artifact key (a BLAKE3 key).
pub const KEY_BYTES: usize = 32;
/// The trailer's last bytes: what marks a sealed artifact (and its format version).
pub const MAGIC: [u8; 16] = *b"astrid-sealed-v2";
/// The first format's magic (its MAC ran over every payload byte): refused with a
/// message of its own, since only a fresh precompile can give it the current seal.
const MAGIC_V1: [u8; 16] = *b"astrid-sealed-v1";
/// Bytes of the trailer: fingerprint, MAC, magic.
pub const TRAILER_BYTES: usize = 32 + 32 + MAGIC.len();
/// What the MAC covers first: the purpose and format version, so the key can never
/// authenticate anything else.
pub const MAC_CONTEXT: &[u8] = b"astrid.img sealed artifact v2\0";
/// BLAKE3 key-derivation context of an engine fingerprint.
const FINGERPRINT_CONTEXT: &str = "astrid.img engine fingerprint v1";
/// A wasmtime artifact is an ELF file.
const ELF_MAGIC: &[u8] = b"\x7fELF";
/// A WebAssembly binary (always compiled by the image, never treated as an artifact).
const WASM_MAGIC: &[u8] = b"\0asm";

/// What an engine build's compiled code depends on, hashed: two engines with the same
/// fingerprint accept each other's artifacts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of an engine described by `description` (its canonical text).
    pub fn of(description: &str) -> Fingerprint {
        Fingerprint(blake3::derive_key(FINGERPRINT_CONTEXT, description.as_bytes()))
    }

    /// The first 8 bytes in hex: enough for messages and cache names.
    pub fn short(&self) -> String {
        crate::settings::hex_encode(&self.0[..8])
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", crate::settings::hex_encode(&self.0))
    }
}

/// What a capsule file is, as far as sealing goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Form<'a> {
    /// Not an artifact: WebAssembly, or something the wasm checks will name.
    NotAnArtifact,
    /// A sealed artifact: its payload and trailer, not yet verified.
    Sealed(Sealed<'a>),
    /// A wasmtime artifact (ELF) without a seal.
    Unsealed,
    /// Sealed in the first format (`astrid-sealed-v1`), which this image no longer reads.
    OlderSeal,
}

/// A sealed artifact split into its parts; [`open`] verifies it.
#[derive(Debug, PartialEq, Eq)]
pub struct Sealed<'a> {
    pub payload: &'a [u8],
    /// The engine it says it was made for (unauthenticated until the MAC verifies).
    pub fingerprint: Fingerprint,
    mac: [u8; 32],
}

/// Recognises a sealed artifact by its trailer, a bare wasmtime artifact by its ELF
/// header. Reads no more than those bytes: nothing of an unverified artifact is parsed.
pub fn form(bytes: &[u8]) -> Form<'_> {
    if bytes.starts_with(WASM_MAGIC) {
        return Form::NotAnArtifact;
    }
    if bytes.len() >= TRAILER_BYTES && bytes.ends_with(&MAGIC) {
        let (payload, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
        let mut fingerprint = [0u8; 32];
        let mut mac = [0u8; 32];
        fingerprint.copy_from_slice(&trailer[..32]);
        mac.copy_from_slice(&trailer[32..64]);
        return Form::Sealed(Sealed { payload, fingerprint: Fingerprint(fingerprint), mac });
    }
    if bytes.len() >= TRAILER_BYTES && bytes.ends_with(&MAGIC_V1) {
        return Form::OlderSeal;
    }
    if bytes.starts_with(ELF_MAGIC) {
        return Form::Unsealed;
    }
    Form::NotAnArtifact
}

/// The MAC of a payload of `len` bytes whose BLAKE3 hash is `payload_hash`.
fn mac(key: &[u8; KEY_BYTES], fingerprint: &Fingerprint, len: usize, payload_hash: &blake3::Hash) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(MAC_CONTEXT);
    h.update(&fingerprint.0);
    h.update(&(len as u64).to_le_bytes());
    h.update(payload_hash.as_bytes());
    h.finalize()
}

/// One pass over a sealed file: the BLAKE3 of its first `payload_len` bytes (what the
/// MAC covers) and of all of it (what the audit log names).
fn hash_payload_and_file(bytes: &[u8], payload_len: usize) -> (blake3::Hash, [u8; 32]) {
    let mut h = blake3::Hasher::new();
    h.update(&bytes[..payload_len]);
    let payload = h.finalize();
    h.update(&bytes[payload_len..]);
    (payload, *h.finalize().as_bytes())
}

/// Seals `payload` (a wasmtime artifact made for the engine `fingerprint` describes)
/// with the deployment's `key`.
pub fn seal(payload: &[u8], fingerprint: &Fingerprint, key: &[u8; KEY_BYTES]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + TRAILER_BYTES);
    out.extend_from_slice(payload);
    out.extend_from_slice(&fingerprint.0);
    out.extend_from_slice(mac(key, fingerprint, payload.len(), &blake3::hash(payload)).as_bytes());
    out.extend_from_slice(&MAGIC);
    out
}

/// Why an artifact is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArtifactError {
    /// A wasmtime artifact without a seal.
    Unsealed,
    /// A sealed artifact, but no key to check it with.
    NoKey,
    /// Sealed for another engine build.
    OtherEngine { made_for: Fingerprint, here: Fingerprint },
    /// The MAC does not verify: changed after sealing, or sealed with another key.
    BadSeal,
    /// Sealed in an older format (by an older astrid.img's precompile step).
    OlderSeal,
}

impl fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactError::Unsealed => f.write_str(
                "a precompiled artifact without a seal: nothing proves it came from this deployment's precompile step, \
                 so its machine code is not loaded — run the .wasm itself, or let `scripts/run` (or `scripts/astrid compile`) \
                 precompile and seal it",
            ),
            ArtifactError::NoKey => f.write_str(
                "a sealed precompiled artifact, but this image has no artifact key (ASTRID_ARTIFACT_KEY) to check its seal, \
                 so its machine code is not loaded — `scripts/run` passes the deployment's key; or run the .wasm itself",
            ),
            ArtifactError::OtherEngine { made_for, here } => write!(
                f,
                "a precompiled artifact made for another engine build (fingerprint {}…, this image's is {}…: the wasmtime \
                 version, the engine settings or the target differ), so its machine code is not loaded — precompile the \
                 .wasm again for this image (`scripts/run` does on its own)",
                made_for.short(),
                here.short()
            ),
            ArtifactError::OlderSeal => f.write_str(
                "a precompiled artifact sealed in an older format (astrid-sealed-v1, by an earlier astrid.img), so its \
                 machine code is not loaded — precompile the .wasm again for this image (`scripts/run` does on its own)",
            ),
            ArtifactError::BadSeal => f.write_str(
                "a precompiled artifact whose seal does not verify: it was changed after it was sealed, or sealed with \
                 another deployment's key, so its machine code is not loaded — precompile the .wasm again with this \
                 deployment's key (`scripts/run` does on its own)",
            ),
        }
    }
}

impl std::error::Error for ArtifactError {}

/// A sealed artifact whose seal verified.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The wasmtime artifact.
    pub payload: &'a [u8],
    /// The BLAKE3 of the whole file, trailer included (from the same pass that checked
    /// the seal): what the audit log's load record names.
    pub content: [u8; 32],
}

/// The payload of `sealed` (the split of `bytes`), once its seal verifies under `key`
/// for the engine `expected` describes. The comparison is constant-time.
fn open<'a>(bytes: &'a [u8], sealed: &Sealed<'a>, expected: &Fingerprint, key: Option<&[u8; KEY_BYTES]>) -> Result<Opened<'a>, ArtifactError> {
    let key = key.ok_or(ArtifactError::NoKey)?;
    if sealed.fingerprint != *expected {
        return Err(ArtifactError::OtherEngine { made_for: sealed.fingerprint, here: *expected });
    }
    let (payload_hash, content) = hash_payload_and_file(bytes, sealed.payload.len());
    // `blake3::Hash`'s equality is constant-time.
    if mac(key, expected, sealed.payload.len(), &payload_hash) != blake3::Hash::from_bytes(sealed.mac) {
        return Err(ArtifactError::BadSeal);
    }
    Ok(Opened { payload: sealed.payload, content })
}

/// [`form`] then the seal's check: the payload of a sealed artifact (with the whole
/// file's hash), `Ok(None)` for what is not an artifact at all.
pub fn verify<'a>(bytes: &'a [u8], expected: &Fingerprint, key: Option<&[u8; KEY_BYTES]>) -> Result<Option<Opened<'a>>, ArtifactError> {
    match form(bytes) {
        Form::NotAnArtifact => Ok(None),
        Form::Unsealed => Err(ArtifactError::Unsealed),
        Form::OlderSeal => Err(ArtifactError::OlderSeal),
        Form::Sealed(s) => open(bytes, &s, expected, key).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const OTHER_KEY: [u8; 32] = [8; 32];

    fn engine() -> Fingerprint {
        Fingerprint::of("wasmtime 50.0.1\ntarget x86_64-unknown-hermit\n")
    }

    fn payload() -> Vec<u8> {
        let mut p = b"\x7fELF\x02\x01\x01\0".to_vec();
        p.extend((0..4000u32).map(|i| (i * 31 % 251) as u8));
        p
    }

    #[test]
    fn a_sealed_artifact_opens_to_its_payload() {
        let sealed = seal(&payload(), &engine(), &KEY);
        assert_eq!(sealed.len(), payload().len() + TRAILER_BYTES);
        let opened = verify(&sealed, &engine(), Some(&KEY)).unwrap().expect("sealed");
        assert_eq!(opened.payload, &payload()[..]);
        // The same pass hashed the whole file, trailer included.
        assert_eq!(opened.content, *blake3::hash(&sealed).as_bytes());
    }

    #[test]
    fn one_changed_byte_anywhere_breaks_the_seal() {
        let sealed = seal(&payload(), &engine(), &KEY);
        let n = sealed.len();
        // Payload (header, middle, last byte), fingerprint, MAC, magic.
        for at in [0, 4, 17, n / 2, n - TRAILER_BYTES - 1, n - TRAILER_BYTES, n - TRAILER_BYTES + 31, n - 48, n - 33, n - 16, n - 1] {
            for flip in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[at] ^= flip;
                let got = verify(&bad, &engine(), Some(&KEY));
                assert!(got.is_err(), "byte {at} ^ {flip:#x} still opened");
            }
        }
    }

    #[test]
    fn each_kind_of_foreign_artifact_is_named() {
        let sealed = seal(&payload(), &engine(), &KEY);
        assert_eq!(verify(&sealed, &engine(), Some(&OTHER_KEY)), Err(ArtifactError::BadSeal));
        assert_eq!(verify(&sealed, &engine(), None), Err(ArtifactError::NoKey));
        let other = Fingerprint::of("wasmtime 49.0.0\ntarget x86_64-unknown-hermit\n");
        assert_eq!(verify(&sealed, &other, Some(&KEY)), Err(ArtifactError::OtherEngine { made_for: engine(), here: other }));
        // Re-labelled for this engine but sealed for another: the MAC covers the engine.
        let mut relabelled = seal(&payload(), &other, &KEY);
        let at = relabelled.len() - TRAILER_BYTES;
        relabelled[at..at + 32].copy_from_slice(&engine().0);
        assert_eq!(verify(&relabelled, &engine(), Some(&KEY)), Err(ArtifactError::BadSeal));
        // A payload cut or grown with the trailer kept.
        let mut cut = sealed.clone();
        cut.remove(10);
        assert_eq!(verify(&cut, &engine(), Some(&KEY)), Err(ArtifactError::BadSeal));
        assert_eq!(verify(&payload(), &engine(), Some(&KEY)), Err(ArtifactError::Unsealed));
    }

    #[test]
    fn wasm_and_other_files_are_not_artifacts() {
        assert_eq!(form(b"\0asm\x01\0\0\0"), Form::NotAnArtifact);
        // A wasm binary is compiled, whatever its last bytes are.
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend_from_slice(&[0; 64]);
        wasm.extend_from_slice(&MAGIC);
        assert_eq!(form(&wasm), Form::NotAnArtifact);
        assert_eq!(form(b""), Form::NotAnArtifact);
        assert_eq!(form(b"nope"), Form::NotAnArtifact);
        assert_eq!(form(&MAGIC), Form::NotAnArtifact, "shorter than a trailer");
        assert_eq!(form(b"\x7fELF"), Form::Unsealed);
    }

    #[test]
    fn a_first_format_seal_is_named_and_refused() {
        let mut old = seal(&payload(), &engine(), &KEY);
        let n = old.len();
        old[n - MAGIC.len()..].copy_from_slice(&MAGIC_V1);
        assert_eq!(verify(&old, &engine(), Some(&KEY)), Err(ArtifactError::OlderSeal));
    }

    #[test]
    fn messages_say_what_to_do() {
        for e in [
            ArtifactError::Unsealed,
            ArtifactError::NoKey,
            ArtifactError::BadSeal,
            ArtifactError::OlderSeal,
            ArtifactError::OtherEngine { made_for: engine(), here: Fingerprint([0; 32]) },
        ] {
            let m = e.to_string();
            assert!(m.contains("not loaded") && m.contains("scripts/run"), "{m}");
        }
    }
}
