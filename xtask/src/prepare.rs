//! Capsule preparation: the one step between a capsule as a user names it (a `.wasm`
//! file, a capsule crate directory, an artifact) and the file the image is handed. The
//! run command uses it for every capsule, and so does anything else that ships
//! capsules to the image (a pack step): one function, [`prepare_capsule`].
//!
//! By default a `.wasm` is compiled here, on the host, with the image's pinned wasmtime
//! and its one `Config`, and *sealed* with the deployment's artifact key (a keyed BLAKE3
//! MAC over the artifact and the engine's fingerprint, `astrid_kernel::wasm::artifact`),
//! so the image deserializes it in milliseconds instead of compiling it for seconds,
//! and refuses any artifact it cannot prove came from here. Sealed artifacts are cached
//! by the capsule's content hash, the engine fingerprint and the key's id under
//! `<out>/artifacts/`; a cached one is re-verified before it is used, so a changed
//! cache entry is compiled again rather than shipped.
//!
//! The artifact key lives on the host: `artifact.key` (64 hex digits, mode 0600) in the
//! state directory (`$ASTRID_STATE_DIR`, else `$XDG_STATE_HOME/astrid-img`, else
//! `~/.local/state/astrid-img`), made on first use, or an operator's file
//! (`--artifact-key FILE`). It reaches the image as `ASTRID_ARTIFACT_KEY` on the boot
//! path, as the audit key does.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use astrid_kernel::engine::{CodeTarget, fingerprint};
use astrid_kernel::settings::ArtifactKey;
use astrid_kernel::wasm::{self, artifact};

use crate::paths::Paths;
use crate::{capsule, compile};

/// How a capsule reaches the image.
#[derive(Clone, Copy, Debug)]
pub enum Mode<'a> {
    /// Compiled here for `target` and sealed with `key` (the run command's default).
    Precompiled { target: CodeTarget, key: &'a ArtifactKey },
    /// As `.wasm`: the image compiles it itself (`--jit`).
    Jit,
}

/// What became of a capsule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    /// Compiled and sealed now.
    Compiled,
    /// A sealed artifact from the cache (its seal verified again).
    Cached,
    /// A `.wasm` the image compiles (`Mode::Jit`).
    Wasm,
    /// Handed over unchanged, for the image to judge: an artifact already (sealed or
    /// not), or a file that is not wasm at all (the image names the mistake, audited).
    AsGiven,
}

/// A capsule ready for the image.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The file to hand the image. Its file name is the capsule's name there (and the
    /// principal, without a manifest): `<stem>.cwasm` for an artifact made here.
    pub file: PathBuf,
    /// The file the user's capsule is: the `.wasm` built from a crate directory, or the
    /// file given.
    pub source: PathBuf,
    pub how: How,
}

/// Prepares the capsule `capsule` (a `.wasm` or artifact file, or a capsule crate
/// directory, which is built first) for the image as `mode` says. A `.wasm` the engine
/// cannot compile is a [`compile::Uncompilable`] error (the run command's 65).
pub fn prepare_capsule(paths: &Paths, capsule: &Path, mode: Mode<'_>) -> Result<Prepared> {
    let source = if capsule.is_dir() { capsule::build(paths, capsule)? } else { capsule.to_path_buf() };
    let as_given = |how| Ok(Prepared { file: source.clone(), source: source.clone(), how });
    let Mode::Precompiled { target, key } = mode else { return as_given(How::Wasm) };
    let bytes = std::fs::read(&source).with_context(|| format!("reading capsule {}", source.display()))?;
    if artifact::form(&bytes) != artifact::Form::NotAnArtifact || wasm::inspect(&bytes).is_err() {
        return as_given(How::AsGiven);
    }
    let stem = source.file_stem().and_then(|s| s.to_str()).filter(|s| !s.is_empty()).unwrap_or("capsule");
    let dir = paths.out.join("artifacts").join(cache_key(&bytes, target, key));
    let file = dir.join(format!("{stem}.cwasm"));
    if let Ok(cached) = std::fs::read(&file) {
        if matches!(artifact::verify(&cached, &fingerprint(target), Some(&key.0)), Ok(Some(_))) {
            return Ok(Prepared { file, source, how: How::Cached });
        }
        eprintln!("==> the cached artifact {} does not verify: compiling it again", file.display());
    }
    let started = Instant::now();
    let sealed = compile::seal(&compile::precompile(&source, &bytes, target)?, target, key);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomically(&file, &sealed)?;
    compile::report(&source, bytes.len(), &file, sealed.len(), started);
    prune(&paths.out.join("artifacts"), KEEP_CACHED);
    Ok(Prepared { file, source, how: How::Compiled })
}

/// Cache entries kept (each a directory holding one capsule's artifact); the least
/// recently made go first.
const KEEP_CACHED: usize = 64;

/// The cache entry's name: the capsule's content hash, the engine fingerprint and the
/// key's id (never the key), so that any change to one makes a new entry.
fn cache_key(wasm: &[u8], target: CodeTarget, key: &ArtifactKey) -> String {
    let content = blake3::hash(wasm);
    format!("{}-{}-{}", &content.to_hex()[..16], fingerprint(target).short(), key_id(key))
}

/// A public name of a key: 8 bytes derived from it, one way.
pub fn key_id(key: &ArtifactKey) -> String {
    astrid_kernel::settings::hex_encode(&blake3::derive_key("astrid.img artifact key id v1", &key.0)[..8])
}

/// Writes `file` whole or not at all (a concurrent run reads either the old or the new).
fn write_atomically(file: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))
}

/// Keeps the `keep` most recently modified entries of `dir`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> =
        entries.flatten().filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path()))).collect();
    if entries.len() <= keep {
        return;
    }
    entries.sort();
    for (_, path) in &entries[..entries.len() - keep] {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// The deployment's artifact key: `explicit` (an operator's file of 64 hex digits),
/// else `artifact.key` in the state directory, made on first use (mode 0600).
pub fn deployment_key(explicit: Option<&Path>) -> Result<ArtifactKey> {
    if let Some(file) = explicit {
        return read_key(file);
    }
    let dir = crate::audit_cmd::state_dir()?;
    let file = dir.join("artifact.key");
    if file.exists() {
        return read_key(&file);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = fresh_key()?;
    match crate::audit_cmd::write_new_private(&file, &format!("{key}\n")) {
        Ok(()) => {
            eprintln!("==> made the artifact key {} (it seals the capsules this machine precompiles)", file.display());
            Ok(key)
        }
        // Another run made it first: use theirs.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists) => read_key(&file),
        Err(e) => Err(e),
    }
}

/// A key of this process only (tests and benchmarks that boot the image directly).
pub fn session_key() -> &'static ArtifactKey {
    static KEY: OnceLock<ArtifactKey> = OnceLock::new();
    KEY.get_or_init(|| fresh_key().expect("reading /dev/urandom for an artifact key"))
}

fn fresh_key() -> Result<ArtifactKey> {
    let mut bytes = [0u8; artifact::KEY_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the artifact key")?;
    ensure!(bytes != [0; artifact::KEY_BYTES], "/dev/urandom gave all zeros for the artifact key");
    Ok(ArtifactKey(bytes))
}

fn read_key(file: &Path) -> Result<ArtifactKey> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading the artifact key {}", file.display()))?;
    match text.trim().parse::<ArtifactKey>() {
        Ok(key) => Ok(key),
        // The key itself is never echoed.
        Err(why) => bail!("the artifact key {} is not usable: it {why}", file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("astrid-artifact-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("artifact.key");
        let key = ArtifactKey([9; 32]);
        crate::audit_cmd::write_new_private(&file, &format!("{key}\n")).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_key(&file).unwrap(), key);
        let again = crate::audit_cmd::write_new_private(&file, "x").unwrap_err();
        assert!(again.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists), "{again}");
        assert_eq!(read_key(&file).unwrap(), key, "never overwritten");
        std::fs::write(&file, "ab".repeat(31) + "zz").unwrap();
        let e = read_key(&file).unwrap_err().to_string();
        assert!(e.contains("artifact.key") && !e.contains("abab"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cache_key_changes_with_content_engine_and_key() {
        let (a, b) = (ArtifactKey([1; 32]), ArtifactKey([2; 32]));
        let base = cache_key(b"\0asm\x01\0\0\0", CodeTarget::HermitImage, &a);
        assert_eq!(base, cache_key(b"\0asm\x01\0\0\0", CodeTarget::HermitImage, &a));
        assert_ne!(base, cache_key(b"\0asm\x01\0\0\0\0", CodeTarget::HermitImage, &a));
        assert_ne!(base, cache_key(b"\0asm\x01\0\0\0", CodeTarget::Native, &a));
        assert_ne!(base, cache_key(b"\0asm\x01\0\0\0", CodeTarget::HermitImage, &b));
        assert!(!base.contains(&astrid_kernel::settings::hex_encode(&a.0[..8])), "the key itself is not in the name");
    }

    #[test]
    fn a_module_is_compiled_sealed_cached_and_a_changed_cache_entry_compiled_again() {
        let out = std::env::temp_dir().join(format!("astrid-prepare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let paths = Paths { root: out.clone(), out: out.join("out") };
        // The smallest module: magic and version.
        let wasm = out.join("tiny.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
        let key = ArtifactKey([3; 32]);
        let mode = Mode::Precompiled { target: CodeTarget::Native, key: &key };
        let first = prepare_capsule(&paths, &wasm, mode).unwrap();
        assert_eq!((first.how.clone(), first.file.file_name().unwrap().to_str().unwrap()), (How::Compiled, "tiny.cwasm"));
        let sealed = std::fs::read(&first.file).unwrap();
        assert!(matches!(artifact::verify(&sealed, &fingerprint(CodeTarget::Native), Some(&key.0)), Ok(Some(_))));
        assert_eq!(prepare_capsule(&paths, &wasm, mode).unwrap().how, How::Cached);
        // A changed cache entry is not shipped.
        let mut tampered = sealed.clone();
        tampered[100] ^= 1;
        std::fs::write(&first.file, &tampered).unwrap();
        let again = prepare_capsule(&paths, &wasm, mode).unwrap();
        assert_eq!((again.how, std::fs::read(&again.file).unwrap()), (How::Compiled, sealed));
        // Not wasm, or an artifact already: handed over as given; JIT: the wasm itself.
        let junk = out.join("junk.wasm");
        std::fs::write(&junk, b"nope").unwrap();
        assert_eq!(prepare_capsule(&paths, &junk, mode).unwrap().how, How::AsGiven);
        assert_eq!(prepare_capsule(&paths, &first.file, mode).unwrap().how, How::AsGiven);
        let jit = prepare_capsule(&paths, &wasm, Mode::Jit).unwrap();
        assert_eq!((jit.how, jit.file), (How::Wasm, wasm.clone()));
        // Invalid wasm behind a valid header: refused here, naming the capsule.
        let broken = out.join("broken.wasm");
        std::fs::write(&broken, b"\0asm\x01\0\0\0\x01\xff").unwrap();
        let e = prepare_capsule(&paths, &broken, mode).unwrap_err();
        let refused = e.downcast_ref::<compile::Uncompilable>().expect("an Uncompilable error");
        assert!(refused.to_string().contains("broken.wasm"), "{refused}");
        let _ = std::fs::remove_dir_all(&out);
    }
}
