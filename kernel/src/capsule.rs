//! Where capsules come from and how their bytes are obtained.
//!
//! Two delivery paths exist: a multiboot module that our loader left in memory and
//! announced as `ASTRID_CAPSULE_<i>=0x<addr>,<len>,<name>` (QEMU, GRUB), and a file path
//! given as an application argument (uhyve's file mapping at `/root/…`, hosted mode).

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use crate::platform;
use crate::settings::{self, Settings};

pub use crate::settings::DEFAULT_MAX_CAPSULE_BYTES;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapsuleSource {
    /// Bytes the boot loader placed in physical memory.
    BootModule { addr: u64, len: u64, name: String },
    /// A file the application opens.
    File(PathBuf),
}

impl CapsuleSource {
    /// How messages name the capsule: the module name, or the path as given.
    pub fn name(&self) -> String {
        match self {
            CapsuleSource::BootModule { name, .. } => name.clone(),
            CapsuleSource::File(path) => path.display().to_string(),
        }
    }

    /// The capsule's identity in the audit log and on the console: its file name.
    pub fn id(&self) -> String {
        match self {
            CapsuleSource::BootModule { name, .. } => name.clone(),
            CapsuleSource::File(path) => {
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| self.name())
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SourceError {
    /// Neither a boot module nor an argument names a capsule.
    NoCapsule,
    /// The loader's announcement could not be parsed (a loader/app version mismatch).
    BadAnnouncement { var: String, value: String },
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::NoCapsule => write!(
                f,
                "no capsule given — pass one: `scripts/run path/to/capsule.wasm` (QEMU), \
                 `uhyve astrid.img -- -- /root/capsule.wasm` with a file mapping, or \
                 `astrid path/to/capsule.wasm` in hosted mode"
            ),
            SourceError::BadAnnouncement { var, value } => write!(
                f,
                "the boot loader announced {var}={value:?}, expected 0x<addr>,<len>,<name> \
                 — rebuild boot/ and the image together (`cargo xtask build`)"
            ),
        }
    }
}

/// Collects every capsule handed to this boot, boot modules first (the loader's
/// `ASTRID_CAPSULES` and `ASTRID_CAPSULE_<i>`), then arguments.
pub fn discover(args: &[String], settings: &Settings) -> Result<Vec<CapsuleSource>, SourceError> {
    let mut found = Vec::new();
    if let Some(raw) = &settings.capsule_count {
        let n = raw.parse::<usize>().map_err(|_| SourceError::BadAnnouncement {
            var: settings::CAPSULES.into(),
            value: raw.clone(),
        })?;
        for i in 0..n {
            let value = settings.boot_modules.get(&i).cloned().unwrap_or_default();
            found.push(parse_announcement(&value).ok_or_else(|| SourceError::BadAnnouncement {
                var: settings::CAPSULE.name(i),
                value,
            })?);
        }
    }
    found.extend(args.iter().map(|a| CapsuleSource::File(PathBuf::from(a))));
    if found.is_empty() {
        return Err(SourceError::NoCapsule);
    }
    Ok(found)
}

fn parse_announcement(value: &str) -> Option<CapsuleSource> {
    let mut parts = value.splitn(3, ',');
    // Digits only, as the loader writes them (the integer parsers also take a sign).
    let digits = |s: &str, hex: bool| s.bytes().all(|b| if hex { b.is_ascii_hexdigit() } else { b.is_ascii_digit() });
    let addr = parts.next()?.strip_prefix("0x").filter(|a| digits(a, true))?;
    let addr = u64::from_str_radix(addr, 16).ok()?;
    let len = parts.next().filter(|l| digits(l, false))?.parse().ok()?;
    let name = parts.next().filter(|n| !n.is_empty())?.to_string();
    Some(CapsuleSource::BootModule { addr, len, name })
}

#[derive(Debug)]
pub enum LoadError {
    NotFound { name: String },
    /// Opening failed for another reason. Hermit reports unmapped uhyve paths as
    /// EINVAL and paths without any mounted file system as EBADF, so this is the
    /// usual "not there" in the image.
    CannotOpen { name: String, cause: std::io::Error },
    Unreadable { name: String, cause: std::io::Error },
    TooLarge { name: String, len: u64, max: u64 },
    NoBootModules { name: String },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound { name } => write!(
                f,
                "capsule {name}: no such file — check the path; under uhyve only mapped \
                 files exist (`--file-mapping HOST:/root/NAME`, which `scripts/run --uhyve` \
                 does for you)"
            ),
            LoadError::CannotOpen { name, cause } => write!(
                f,
                "capsule {name}: cannot be opened ({cause}) — check the path; under uhyve \
                 only mapped files exist (`scripts/run --uhyve` maps them for you), and \
                 under QEMU capsules arrive as boot modules (`scripts/run capsule.wasm`)"
            ),
            LoadError::Unreadable { name, cause } => {
                write!(f, "capsule {name}: cannot be read: {cause}")
            }
            LoadError::TooLarge { name, len, max } => write!(
                f,
                "capsule {name}: {len} bytes or more is over the {max}-byte limit \
                 (ASTRID_MAX_CAPSULE_BYTES) — shrink the capsule or raise the limit"
            ),
            LoadError::NoBootModules { name } => write!(
                f,
                "capsule {name}: announced as a boot module, but this platform has none"
            ),
        }
    }
}

/// A capsule's bytes: borrowed from a boot module in place, or read from a file.
pub struct CapsuleBytes {
    pub name: String,
    /// See `CapsuleSource::id`.
    pub id: String,
    pub bytes: Cow<'static, [u8]>,
}

pub fn load(source: &CapsuleSource, max: u64) -> Result<CapsuleBytes, LoadError> {
    let name = source.name();
    match source {
        CapsuleSource::BootModule { addr, len, .. } => {
            if *len > max {
                return Err(LoadError::TooLarge { name, len: *len, max });
            }
            let bytes = platform::boot_module(*addr, *len)
                .ok_or_else(|| LoadError::NoBootModules { name: name.clone() })?;
            Ok(CapsuleBytes { name, id: source.id(), bytes: Cow::Borrowed(bytes) })
        }
        CapsuleSource::File(path) => {
            // No `metadata` first: uhyve's file system has no stat (ENOSYS), so the
            // size limit is enforced while reading, one byte past the limit at most.
            let file = std::fs::File::open(path).map_err(|cause| match cause.kind() {
                std::io::ErrorKind::NotFound => LoadError::NotFound { name: name.clone() },
                _ => LoadError::CannotOpen { name: name.clone(), cause },
            })?;
            let mut bytes = Vec::new();
            file.take(max.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|cause| LoadError::Unreadable { name: name.clone(), cause })?;
            let len = bytes.len() as u64;
            if len > max {
                return Err(LoadError::TooLarge { name, len, max });
            }
            Ok(CapsuleBytes { name, id: source.id(), bytes: Cow::Owned(bytes) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_env_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn boot_modules_come_first_then_argument_files() {
        let vars = env(&[
            ("ASTRID_CAPSULES", "2"),
            ("ASTRID_CAPSULE_0", "0x1200000,4096,hello.wasm"),
            ("ASTRID_CAPSULE_1", "0xabc000,0,empty.wasm"),
        ]);
        let found = discover(&["/root/x.wasm".into()], &vars).unwrap();
        assert_eq!(
            found,
            vec![
                CapsuleSource::BootModule { addr: 0x1200000, len: 4096, name: "hello.wasm".into() },
                CapsuleSource::BootModule { addr: 0xabc000, len: 0, name: "empty.wasm".into() },
                CapsuleSource::File("/root/x.wasm".into()),
            ]
        );
    }

    #[test]
    fn nothing_given_is_a_usage_error() {
        assert_eq!(discover(&[], &env(&[])), Err(SourceError::NoCapsule));
        assert_eq!(discover(&[], &env(&[("ASTRID_CAPSULES", "0")])), Err(SourceError::NoCapsule));
    }

    #[test]
    fn malformed_announcements_are_reported_not_guessed() {
        for bad in ["1200000,4096,a", "0x12,notanumber,a", "0x12,4", "0x12,4,", "", "0x+12,4,a", "0x12,+4,a"] {
            let vars = env(&[("ASTRID_CAPSULES", "1"), ("ASTRID_CAPSULE_0", bad)]);
            assert!(
                matches!(discover(&[], &vars), Err(SourceError::BadAnnouncement { .. })),
                "{bad:?}"
            );
        }
        let vars = env(&[("ASTRID_CAPSULES", "x")]);
        assert!(matches!(discover(&[], &vars), Err(SourceError::BadAnnouncement { .. })));
    }

    #[test]
    fn files_are_checked_for_existence_and_size() {
        let dir = std::env::temp_dir().join(format!("astrid-capsule-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.wasm");
        std::fs::write(&path, vec![0u8; 100]).unwrap();
        let src = CapsuleSource::File(path.clone());
        assert!(matches!(load(&src, 99), Err(LoadError::TooLarge { max: 99, .. })));
        assert_eq!(load(&src, 100).unwrap().bytes.len(), 100);
        let missing = CapsuleSource::File(dir.join("missing.wasm"));
        let err = load(&missing, 100).err().unwrap();
        assert!(matches!(err, LoadError::NotFound { .. }));
        assert!(err.to_string().contains("missing.wasm"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
