//! `xtask audit verify [--key PUB] LOG`: checks an audit log — a file of JSON lines (the
//! virtio sink) or a captured console with `@@audit ` lines — for its genesis, sequence,
//! hash chain, structure, capsule ends and signed checkpoints, and names the first
//! break. Also the deployment's signing key the run command hands the image.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use astrid_kernel::audit::{self, Options, Signing, SigningKey, VerifyingKey};

/// The audit lines of a log file or a console capture.
pub fn audit_lines(text: &str) -> Vec<&str> {
    if text.lines().any(|l| l.starts_with(audit::FRAME_PREFIX)) {
        audit::extract(text)
    } else {
        text.lines().filter(|l| !l.trim().is_empty()).collect()
    }
}

/// A public key: 64 hex digits given as such, or a file holding them (`audit.pub`).
pub fn public_key(arg: &str) -> Result<VerifyingKey> {
    let text = if audit::unhex::<32>(arg.trim()).is_some() {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("--key {arg}: neither 64 hex digits nor a readable file"))?
    };
    let bytes = audit::unhex::<32>(text.trim()).with_context(|| format!("--key {arg}: not 64 lowercase hex digits"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("--key {arg}: not an Ed25519 public key ({e})"))
}

/// Verifies `path`; prints the summary or the first break. Returns whether it held.
pub fn verify(path: &Path, key: Option<&str>, allow_open: bool) -> Result<bool> {
    let key = key.map(public_key).transpose()?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading audit log {}", path.display()))?;
    let lines = audit_lines(&text);
    match audit::verify_with(lines.iter().copied(), &Options { key, open: allow_open }) {
        Ok(summary) => {
            let signing = match &summary.signing {
                Signing::Unsigned => "unsigned".to_string(),
                Signing::Signed { key, pinned: true } => format!("signed by {key}"),
                Signing::Signed { key, pinned: false } => {
                    format!("signed by {key} (not checked against a key of yours: pass --key)")
                }
            };
            println!(
                "{}: OK — {} records ({} io records, {} capsules loaded, {} ended){}, {signing}, run {}, build {:?}, head {}",
                path.display(),
                summary.records,
                summary.io_records,
                summary.capsules_loaded,
                summary.capsules_ended,
                if summary.closed { ", closed" } else { ", still open" },
                summary.nonce,
                summary.build,
                summary.head
            );
            Ok(true)
        }
        Err(b) => {
            println!("{}: BROKEN — {b}", path.display());
            Ok(false)
        }
    }
}

/// Where the run command keeps state between runs: `$ASTRID_STATE_DIR`, else
/// `$XDG_STATE_HOME/astrid-img`, else `~/.local/state/astrid-img`.
pub fn state_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(astrid_kernel::settings::STATE_DIR) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return Ok(PathBuf::from(dir).join("astrid-img"));
    }
    let home = std::env::var_os("HOME").context("no HOME: set ASTRID_STATE_DIR for the audit key")?;
    Ok(PathBuf::from(home).join(".local/state/astrid-img"))
}

/// The deployment's audit signing key: `explicit` (an operator's file of 64 hex
/// digits), else `audit.key` in the state directory, made on first use (mode 0600) with
/// its public key beside it as `audit.pub`.
pub fn deployment_key(explicit: Option<&Path>) -> Result<SigningKey> {
    if let Some(file) = explicit {
        return read_secret(file);
    }
    let dir = state_dir()?;
    let secret = dir.join("audit.key");
    if secret.exists() {
        return read_secret(&secret);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the audit key")?;
    ensure!(bytes != [0; 32], "/dev/urandom gave all zeros for the audit key");
    let key = SigningKey::from_bytes(&bytes);
    match write_new_private(&secret, &format!("{}\n", audit::hex(&bytes))) {
        Ok(()) => {}
        // Another run made it first: use theirs.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists) => return read_secret(&secret),
        Err(e) => return Err(e),
    }
    let public = dir.join("audit.pub");
    std::fs::write(&public, format!("{}\n", audit::hex(key.verifying_key().as_bytes())))
        .with_context(|| format!("writing {}", public.display()))?;
    eprintln!("==> made the audit signing key {} (public key: {})", secret.display(), public.display());
    Ok(key)
}

fn read_secret(file: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading the audit key {}", file.display()))?;
    match audit::unhex::<32>(text.trim()) {
        Some(bytes) if bytes != [0; 32] => Ok(SigningKey::from_bytes(&bytes)),
        _ => bail!("the audit key {} is not 64 lowercase hex digits (an Ed25519 secret key)", file.display()),
    }
}

/// Creates `file` readable by its owner only, holding `text`, complete before it
/// appears under its name; fails (AlreadyExists) when it exists.
pub(crate) fn write_new_private(file: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    // A hard link appears atomically and never replaces an existing file.
    let linked = std::fs::hard_link(&tmp, file);
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(anyhow::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_kept_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("astrid-audit-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("audit.key");
        let key = SigningKey::from_bytes(&[5; 32]);
        write_new_private(&secret, &audit::hex(&[5; 32])).unwrap();
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_secret(&secret).unwrap().to_bytes(), key.to_bytes());
        assert!(write_new_private(&secret, "x").is_err(), "never overwrites a key");
        let public = audit::hex(key.verifying_key().as_bytes());
        assert_eq!(public_key(&public).unwrap(), key.verifying_key());
        let pub_file = dir.join("audit.pub");
        std::fs::write(&pub_file, format!("{public}\n")).unwrap();
        assert_eq!(public_key(pub_file.to_str().unwrap()).unwrap(), key.verifying_key());
        assert!(public_key("zz").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
