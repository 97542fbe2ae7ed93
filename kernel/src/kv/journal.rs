//! Persistence of a capsule's kv store to a directory (`ASTRID_KV_DIR`: the shared
//! `/root` in the image, virtio-fs under QEMU; any directory in hosted mode).
//!
//! Kernel 0.11's virtio-fs client has no rename, truncate or fsync, so the store is a
//! pair of journals, `<name>.kv0` and `<name>.kv1`, written by hand (no crate does this
//! over such a file system):
//! - each begins with a header record carrying a generation number, then a snapshot of
//!   every entry, then a commit record; every later change is appended as one record;
//! - every record is `[u32 length][body][first 8 bytes of its BLAKE3]`, so a torn or
//!   corrupt tail is recognised and ignored on load;
//! - at load the committed journal with the highest generation wins; a new snapshot
//!   (generation + 1) is then written to the other file, and appends continue there —
//!   so a crash in the middle of a snapshot leaves the previous journal intact, and a
//!   write that returned (the host has it: virtio-fs answers after the host's write)
//!   survives a reboot;
//! - a journal that grows past twice the live data (plus 1 MiB) is compacted the same way.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::store::KvStore;

const HEADER: u8 = 0;
const SET: u8 = 1;
const DELETE: u8 = 2;
const CLEAR: u8 = 3;
const COMMIT: u8 = 4;
/// Largest record we accept when reading (a value is at most 1 MiB).
const MAX_RECORD: usize = 2 << 20;

/// One change to append.
pub enum Change<'a> {
    Set(&'a str, &'a [u8]),
    Delete(&'a str),
    ClearPrefix(&'a str),
}

pub struct Journal {
    paths: [PathBuf; 2],
    /// Which of `paths` receives appends.
    active: usize,
    file: File,
    generation: u64,
    bytes: u64,
}

fn record(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![tag];
    for p in parts {
        body.extend_from_slice(&(p.len() as u32).to_le_bytes());
        body.extend_from_slice(p);
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&blake3::hash(&body).as_bytes()[..8]);
    out
}

/// The records of a journal's bytes, up to the first torn or corrupt one.
fn records(bytes: &[u8]) -> Vec<(u8, Vec<&[u8]>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || len > MAX_RECORD || at + 4 + len + 8 > bytes.len() {
            break;
        }
        let body = &bytes[at + 4..at + 4 + len];
        if blake3::hash(body).as_bytes()[..8] != bytes[at + 4 + len..at + 12 + len] {
            break;
        }
        let (tag, mut rest) = (body[0], &body[1..]);
        let mut parts = Vec::new();
        while rest.len() >= 4 {
            let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            if rest.len() < 4 + n {
                break;
            }
            parts.push(&rest[4..4 + n]);
            rest = &rest[4 + n..];
        }
        out.push((tag, parts));
        at += 12 + len;
    }
    out
}

/// A committed journal's generation and entries (`None`: absent, torn before its
/// commit, or not a journal).
fn replay(path: &Path) -> Option<(u64, KvStore)> {
    let mut bytes = Vec::new();
    File::open(path).ok()?.read_to_end(&mut bytes).ok()?;
    let recs = records(&bytes);
    let (tag, parts) = recs.first()?;
    if *tag != HEADER || parts.len() != 1 || parts[0].len() != 8 {
        return None;
    }
    let generation = u64::from_le_bytes(parts[0].try_into().ok()?);
    // Loaded without the quota first: a store over a since-lowered quota is an error
    // the caller reports, not silent truncation.
    let mut store = KvStore::new(usize::MAX);
    let mut committed = false;
    for (tag, parts) in &recs[1..] {
        let text = |i: usize| parts.get(i).and_then(|p| std::str::from_utf8(p).ok());
        match *tag {
            SET => {
                let _ = store.set(text(0)?, parts.get(1)?.to_vec());
            }
            DELETE => {
                let _ = store.delete(text(0)?);
            }
            CLEAR => {
                store.clear_prefix(text(0)?);
            }
            COMMIT => committed = true,
            _ => return None,
        }
    }
    committed.then_some((generation, store))
}

impl Journal {
    /// Loads the store of `name` from `dir` (empty if it has none yet) and starts a
    /// fresh journal for it. The error names the file and what to do.
    pub fn open(dir: &Path, name: &str, quota: usize) -> Result<(Journal, KvStore), String> {
        let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        let paths = [dir.join(format!("{safe}.kv0")), dir.join(format!("{safe}.kv1"))];
        let found: Vec<Option<(u64, KvStore)>> = paths.iter().map(|p| replay(p)).collect();
        let best = (0..2).filter(|i| found[*i].is_some()).max_by_key(|i| found[*i].as_ref().unwrap().0);
        let (generation, loaded) = match best {
            Some(i) => {
                let (g, s) = found.into_iter().nth(i).unwrap().unwrap();
                (g, s)
            }
            None => (0, KvStore::new(usize::MAX)),
        };
        if loaded.used() > quota {
            return Err(format!(
                "the kv store in {} holds {} bytes, over the capsule's quota of {quota} (raise ASTRID_KV_QUOTA_BYTES or [limits] kv_bytes)",
                dir.display(),
                loaded.used()
            ));
        }
        let mut store = KvStore::new(quota);
        for key in loaded.list("") {
            let value = loaded.get(&key).ok().flatten().unwrap_or_default();
            store.set(&key, value).map_err(|e| format!("reloading key {key:?}: {e:?}"))?;
        }
        let active = best.map_or(0, |i| 1 - i);
        let mut journal = Journal { file: snapshot(&paths[active], generation + 1, &store)?, paths, active, generation: generation + 1, bytes: 0 };
        journal.bytes = journal.file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((journal, store))
    }

    /// Appends one change (already applied to `store`); compacts when the journal has
    /// grown well past the live data.
    pub fn append(&mut self, change: Change<'_>, store: &KvStore) -> Result<(), String> {
        let rec = match change {
            Change::Set(k, v) => record(SET, &[k.as_bytes(), v]),
            Change::Delete(k) => record(DELETE, &[k.as_bytes()]),
            Change::ClearPrefix(p) => record(CLEAR, &[p.as_bytes()]),
        };
        let path = &self.paths[self.active];
        self.file.write_all(&rec).map_err(|e| format!("writing {}: {e}", path.display()))?;
        self.bytes += rec.len() as u64;
        if self.bytes > 2 * store.used() as u64 + (1 << 20) {
            let next = 1 - self.active;
            self.file = snapshot(&self.paths[next], self.generation + 1, store)?;
            self.generation += 1;
            self.active = next;
            self.bytes = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        }
        Ok(())
    }
}

/// Writes a complete journal of `store` at generation `generation` to `path` and
/// returns it open for appends.
fn snapshot(path: &Path, generation: u64, store: &KvStore) -> Result<File, String> {
    let mut file = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let mut buf = record(HEADER, &[&generation.to_le_bytes()]);
    for key in store.list("") {
        let value = store.get(&key).ok().flatten().unwrap_or_default();
        buf.extend_from_slice(&record(SET, &[key.as_bytes(), &value]));
        if buf.len() >= 64 << 10 {
            file.write_all(&buf).map_err(|e| format!("writing {}: {e}", path.display()))?;
            buf.clear();
        }
    }
    buf.extend_from_slice(&record(COMMIT, &[]));
    file.write_all(&buf).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("astrid-kv-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn set(j: &mut Journal, s: &mut KvStore, k: &str, v: &[u8]) {
        s.set(k, v.to_vec()).unwrap();
        j.append(Change::Set(k, v), s).unwrap();
    }

    #[test]
    fn changes_survive_a_reopen() {
        let d = dir("reopen");
        let (mut j, mut s) = Journal::open(&d, "cap", 1 << 20).unwrap();
        set(&mut j, &mut s, "a", b"1");
        set(&mut j, &mut s, "b", b"2");
        set(&mut j, &mut s, "app.x", b"3");
        s.delete("a").unwrap();
        j.append(Change::Delete("a"), &s).unwrap();
        s.clear_prefix("app.");
        j.append(Change::ClearPrefix("app."), &s).unwrap();
        drop(j);
        let (_, s2) = Journal::open(&d, "cap", 1 << 20).unwrap();
        assert_eq!(s2.list(""), vec!["b".to_string()]);
        assert_eq!(s2.get("b").unwrap(), Some(b"2".to_vec()));
        // A second reopen (the other file now) still holds it.
        let (_, s3) = Journal::open(&d, "cap", 1 << 20).unwrap();
        assert_eq!(s3.list(""), vec!["b".to_string()]);
    }

    #[test]
    fn a_torn_tail_is_ignored_and_a_torn_snapshot_falls_back() {
        let d = dir("torn");
        let (mut j, mut s) = Journal::open(&d, "cap", 1 << 20).unwrap();
        set(&mut j, &mut s, "k", b"kept");
        let active = j.paths[j.active].clone();
        drop(j);
        // Half a record at the end: ignored.
        let mut f = std::fs::OpenOptions::new().append(true).open(&active).unwrap();
        f.write_all(&record(SET, &[b"k", b"lost"])[..10]).unwrap();
        drop(f);
        let (j, s) = Journal::open(&d, "cap", 1 << 20).unwrap();
        assert_eq!(s.get("k").unwrap(), Some(b"kept".to_vec()));
        // The new snapshot torn before its commit: the previous journal wins.
        let fresh = j.paths[j.active].clone();
        drop(j);
        let bytes = std::fs::read(&fresh).unwrap();
        std::fs::write(&fresh, &bytes[..bytes.len() - 5]).unwrap();
        let (_, s) = Journal::open(&d, "cap", 1 << 20).unwrap();
        assert_eq!(s.get("k").unwrap(), Some(b"kept".to_vec()));
    }

    #[test]
    fn the_journal_is_compacted_and_quota_is_checked_at_load() {
        let d = dir("compact");
        let (mut j, mut s) = Journal::open(&d, "cap", 4 << 20).unwrap();
        let big = vec![7u8; 100 << 10];
        for _ in 0..30 {
            set(&mut j, &mut s, "same", &big);
        }
        assert!(j.bytes < 2 * (100 << 10) as u64 + (1 << 20) + 4096, "not compacted: {} bytes", j.bytes);
        drop(j);
        let (_, s) = Journal::open(&d, "cap", 4 << 20).unwrap();
        assert_eq!(s.get("same").unwrap().map(|v| v.len()), Some(100 << 10));
        let e = Journal::open(&d, "cap", 1000).err().unwrap();
        assert!(e.contains("over the capsule's quota"), "{e}");
    }
}
