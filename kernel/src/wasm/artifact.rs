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
//! payload (wasmtime's artifact) ‖ fingerprint (32) ‖ mac (32) ‖ "astrid-sealed-v1" (16)
//! ```
//!
//! where `mac` is BLAKE3 in keyed mode under the deployment's artifact key over
//! [`MAC_CONTEXT`] ‖ the engine fingerprint ‖ the payload's length (u64, little-endian)
//! ‖ the payload. The fingerprint names the engine build the artifact was made for
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
pub const MAGIC: [u8; 16] = *b"astrid-sealed-v1";
/// Bytes of the trailer: fingerprint, MAC, magic.
pub const TRAILER_BYTES: usize = 32 + 32 + MAGIC.len();
/// What the MAC covers first: the purpose and format version, so the key can never
/// authenticate anything else.
pub const MAC_CONTEXT: &[u8] = b"astrid.img sealed artifact v1\0";
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
    if bytes.starts_with(ELF_MAGIC) {
        return Form::Unsealed;
    }
    Form::NotAnArtifact
}

fn mac(key: &[u8; KEY_BYTES], fingerprint: &Fingerprint, payload: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(MAC_CONTEXT);
    h.update(&fingerprint.0);
    h.update(&(payload.len() as u64).to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Seals `payload` (a wasmtime artifact made for the engine `fingerprint` describes)
/// with the deployment's `key`.
pub fn seal(payload: &[u8], fingerprint: &Fingerprint, key: &[u8; KEY_BYTES]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + TRAILER_BYTES);
    out.extend_from_slice(payload);
    out.extend_from_slice(&fingerprint.0);
    out.extend_from_slice(mac(key, fingerprint, payload).as_bytes());
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
            ArtifactError::BadSeal => f.write_str(
                "a precompiled artifact whose seal does not verify: it was changed after it was sealed, or sealed with \
                 another deployment's key, so its machine code is not loaded — precompile the .wasm again with this \
                 deployment's key (`scripts/run` does on its own)",
            ),
        }
    }
}

impl std::error::Error for ArtifactError {}

/// The payload of `sealed`, once its seal verifies under `key` for the engine
/// `expected` describes. The comparison is constant-time.
pub fn open<'a>(sealed: &Sealed<'a>, expected: &Fingerprint, key: Option<&[u8; KEY_BYTES]>) -> Result<&'a [u8], ArtifactError> {
    let key = key.ok_or(ArtifactError::NoKey)?;
    if sealed.fingerprint != *expected {
        return Err(ArtifactError::OtherEngine { made_for: sealed.fingerprint, here: *expected });
    }
    // `blake3::Hash`'s equality is constant-time.
    if mac(key, expected, sealed.payload) != blake3::Hash::from_bytes(sealed.mac) {
        return Err(ArtifactError::BadSeal);
    }
    Ok(sealed.payload)
}

/// [`form`] then [`open`]: the payload of a sealed artifact, `Ok(None)` for what is not
/// an artifact at all.
pub fn verify<'a>(bytes: &'a [u8], expected: &Fingerprint, key: Option<&[u8; KEY_BYTES]>) -> Result<Option<&'a [u8]>, ArtifactError> {
    match form(bytes) {
        Form::NotAnArtifact => Ok(None),
        Form::Unsealed => Err(ArtifactError::Unsealed),
        Form::Sealed(s) => open(&s, expected, key).map(Some),
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
        assert_eq!(verify(&sealed, &engine(), Some(&KEY)), Ok(Some(&payload()[..])));
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
    fn messages_say_what_to_do() {
        for e in [
            ArtifactError::Unsealed,
            ArtifactError::NoKey,
            ArtifactError::BadSeal,
            ArtifactError::OtherEngine { made_for: engine(), here: Fingerprint([0; 32]) },
        ] {
            let m = e.to_string();
            assert!(m.contains("not loaded") && m.contains("scripts/run"), "{m}");
        }
    }
}
