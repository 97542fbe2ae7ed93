//! Persistence of a capsule's kv store to a directory (`ASTRID_KV_DIR`: the shared
//! `/root` in the image, virtio-fs under QEMU; any directory in hosted mode).
//!
//! Kernel 0.11's virtio-fs client has no rename, truncate or fsync, so the store is a
//! pair of journals, `<name>.kv0` and `<name>.kv1`, written by hand (no crate does this
//! over such a file system):
//! - each begins with a header record carrying a generation number, then a snapshot of
//!   every entry, then a commit record; every later change is appended as one record;
//! - every record is `[u32 length][body][first 8 bytes of its BLAKE3]`;
//! - at load the committed journal with the highest generation wins; a new snapshot
//!   (generation + 1) is then written to the other file, and appends continue there —
//!   so a crash in the middle of a snapshot leaves the previous journal intact, and a
//!   write that returned (the host has it: virtio-fs answers after the host's write)
//!   survives a reboot;
//! - a journal that grows past twice the live data (plus 1 MiB) is compacted the same way.
//!
//! Faults. A write that fails may have left part of its record behind, so the journal
//! never appends after one: the next change (or the recovery right after the failure)
//! writes a fresh snapshot to the other file instead, and a change is answered only
//! once it is written. So no acknowledged change is ever behind a torn record.
//!
//! Damage is not absence. On load a file is absent, a snapshot that never committed (a
//! crash while writing it), committed with a torn tail (a crash while appending: the
//! tail is dropped), or corrupt: a complete record that fails its checksum, a record
//! that is no record, a journal without its header, or a committed journal missing
//! while a later one was begun. A corrupt store is refused with the file, what is wrong
//! and the fix; it is never silently replaced by an empty one.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::store::KvStore;

const HEADER: u8 = 0;
const SET: u8 = 1;
const DELETE: u8 = 2;
const CLEAR: u8 = 3;
const COMMIT: u8 = 4;
/// Largest record we accept when reading (a value is at most 1 MiB).
const MAX_RECORD: usize = 2 << 20;
/// A journal is compacted once it is this much past twice its live data (small in unit
/// tests, so the fault tables reach a compaction with small values).
const COMPACT_SLACK: u64 = if cfg!(test) { 16 << 10 } else { 1 << 20 };

/// One change to append.
pub enum Change<'a> {
    Set(&'a str, &'a [u8]),
    Delete(&'a str),
    ClearPrefix(&'a str),
}

/// Where a journal's files live: a directory (`Dir`), or in tests a fault-injecting
/// stand-in.
pub trait Files: Send {
    /// The file's bytes; `None` when there is no such file.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Creates the file (emptying one that exists), open for writing from its start.
    fn create(&self, name: &str) -> io::Result<Box<dyn Write + Send>>;
    /// How messages name the file (its path).
    fn describe(&self, name: &str) -> String;
}

/// The journals' directory on the file system.
pub struct Dir(pub PathBuf);

impl Files for Dir {
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.0.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if crate::platform::is_absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn Write + Send>> {
        Ok(Box::new(std::fs::File::create(self.0.join(name))?))
    }

    fn describe(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

pub struct Journal {
    files: Box<dyn Files>,
    names: [String; 2],
    /// Which of `names` receives appends.
    active: usize,
    file: Box<dyn Write + Send>,
    generation: u64,
    bytes: u64,
    /// A write to `file` failed: what it left behind is unknown, so nothing more is
    /// appended there; the next write is a snapshot to the other file.
    stale: bool,
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

/// What one journal file holds.
#[derive(Debug)]
enum Found {
    Absent,
    /// A snapshot that never reached its commit (a crash while writing it); its
    /// generation, when its header got written.
    Uncommitted(Option<u64>),
    Committed { generation: u64, store: KvStore },
    /// Damaged: why, in words (with the byte offset).
    Corrupt(String),
}

/// The records of a journal's bytes, up to its end or a torn tail: the bytes of a
/// record cut short by the end of the file, or zeros (a file extended but not written).
/// A complete record that fails its checksum, or a length no record has, is damage.
/// One record: its tag and its fields.
type Record<'a> = (u8, Vec<&'a [u8]>);

fn records(bytes: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 4 || rest.iter().all(|b| *b == 0) {
            break;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        if len == 0 || len > MAX_RECORD {
            return Err(format!("byte {at}: a record of {len} bytes, which no journal writes"));
        }
        if rest.len() < 4 + len + 8 {
            break;
        }
        let body = &rest[4..4 + len];
        if blake3::hash(body).as_bytes()[..8] != rest[4 + len..12 + len] {
            return Err(format!("byte {at}: a complete record that fails its checksum"));
        }
        let (tag, mut fields) = (body[0], &body[1..]);
        let mut parts = Vec::new();
        while !fields.is_empty() {
            let n = fields.get(..4).map(|f| u32::from_le_bytes(f.try_into().unwrap()) as usize);
            match n {
                Some(n) if fields.len() >= 4 + n => {
                    parts.push(&fields[4..4 + n]);
                    fields = &fields[4 + n..];
                }
                _ => return Err(format!("byte {at}: a record whose fields overrun it")),
            }
        }
        out.push((tag, parts));
        at += 12 + len;
    }
    Ok(out)
}

/// What the bytes of one journal file hold.
fn replay(bytes: &[u8]) -> Found {
    let recs = match records(bytes) {
        Ok(r) => r,
        Err(why) => return Found::Corrupt(why),
    };
    let Some((tag, parts)) = recs.first() else {
        // Created, then nothing (or only part of the header) written.
        return Found::Uncommitted(None);
    };
    let generation = match (tag, parts.as_slice()) {
        (&HEADER, [g]) if g.len() == 8 => u64::from_le_bytes((*g).try_into().unwrap()),
        _ => return Found::Corrupt("it does not start with a journal header".into()),
    };
    // Loaded without the quota first: a store over a since-lowered quota is an error
    // the caller reports, not silent truncation.
    let mut store = KvStore::new(usize::MAX);
    let mut committed = false;
    for (i, (tag, parts)) in recs.iter().enumerate().skip(1) {
        let key = |p: &[u8]| std::str::from_utf8(p).ok().map(str::to_owned);
        let applied = match (*tag, parts.as_slice()) {
            (SET, [k, v]) => key(k).is_some_and(|k| store.set(&k, v.to_vec()).is_ok()),
            (DELETE, [k]) => key(k).is_some_and(|k| store.delete(&k).is_ok()),
            (CLEAR, [p]) => key(p).map(|p| store.clear_prefix(&p)).is_some(),
            (COMMIT, []) if !committed => {
                committed = true;
                true
            }
            _ => false,
        };
        if !applied {
            return Found::Corrupt(format!("record {i} (tag {tag}) is not a change this journal writes"));
        }
    }
    if committed { Found::Committed { generation, store } } else { Found::Uncommitted(Some(generation)) }
}

/// The names of a principal's two journals. A principal is spelled into the file name
/// with `%XX` for every byte outside letters, digits, `-`, `_` and `.`, so two
/// principals never share a file.
pub fn file_names(principal: &str) -> [String; 2] {
    let mut safe = String::with_capacity(principal.len());
    for b in principal.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            safe.push(char::from(b));
        } else {
            safe.push_str(&format!("%{b:02X}"));
        }
    }
    [format!("{safe}.kv0"), format!("{safe}.kv1")]
}

impl Journal {
    /// Loads the store of `name` from `dir` (empty if it has none yet) and starts a
    /// fresh journal for it. The error names the file, what is wrong and what to do.
    pub fn open(dir: &Path, name: &str, quota: usize) -> Result<(Journal, KvStore), String> {
        Journal::open_in(Box::new(Dir(dir.to_path_buf())), name, quota)
    }

    /// As `open`, over any `Files`.
    pub fn open_in(files: Box<dyn Files>, name: &str, quota: usize) -> Result<(Journal, KvStore), String> {
        let names = file_names(name);
        let found = [load(&*files, &names[0])?, load(&*files, &names[1])?];
        let (best, generation, loaded) = choose(&*files, &names, found)?;
        if loaded.used() > quota {
            return Err(format!(
                "the kv store in {} holds {} bytes, over the capsule's quota of {quota} (raise ASTRID_KV_QUOTA_BYTES or [limits] kv_bytes)",
                files.describe(&names[best.unwrap_or(0)]),
                loaded.used()
            ));
        }
        let mut store = KvStore::new(quota);
        for key in loaded.list("") {
            let value = loaded.get(&key).ok().flatten().unwrap_or_default();
            store.set(&key, value).map_err(|e| format!("reloading key {:?}: {e:?}", crate::audit::Untrusted(&key)))?;
        }
        let active = best.map_or(0, |i| 1 - i);
        let (file, bytes) = snapshot(&*files, &names[active], generation + 1, &store)?;
        Ok((Journal { files, names, active, file, generation: generation + 1, bytes, stale: false }, store))
    }

    /// Appends one change (already applied to `store`); compacts when the journal has
    /// grown well past the live data. After a failed write the change goes out as a
    /// snapshot to the other file instead. `Err`: the change is not persisted (the
    /// caller undoes it, then calls `recover`).
    pub fn append(&mut self, change: Change<'_>, store: &KvStore) -> Result<(), String> {
        if self.stale {
            return self.snapshot_over(store);
        }
        let rec = match change {
            Change::Set(k, v) => record(SET, &[k.as_bytes(), v]),
            Change::Delete(k) => record(DELETE, &[k.as_bytes()]),
            Change::ClearPrefix(p) => record(CLEAR, &[p.as_bytes()]),
        };
        if let Err(e) = self.file.write_all(&rec).and_then(|()| self.file.flush()) {
            self.stale = true;
            return Err(format!("writing {}: {e}", self.files.describe(&self.names[self.active])));
        }
        self.bytes += rec.len() as u64;
        if self.bytes > 2 * store.used() as u64 + COMPACT_SLACK {
            // The change is written; a compaction that fails leaves the journal as it
            // was (appends go on where they were) and is tried again later.
            let _ = self.snapshot_over(store);
        }
        Ok(())
    }

    /// After a failed `append` and the caller's undo: writes what is acknowledged
    /// (`store`) as a fresh snapshot now, so the journal holds nothing the capsule was
    /// told failed. If this fails too, the next change tries again.
    pub fn recover(&mut self, store: &KvStore) {
        if self.stale {
            let _ = self.snapshot_over(store);
        }
    }

    /// Writes `store` as the next generation into the other file and continues there.
    fn snapshot_over(&mut self, store: &KvStore) -> Result<(), String> {
        let next = 1 - self.active;
        let (file, bytes) = snapshot(&*self.files, &self.names[next], self.generation + 1, store)?;
        self.file = file;
        self.generation += 1;
        self.active = next;
        self.bytes = bytes;
        self.stale = false;
        Ok(())
    }
}

/// One file's content, read; an error reading it is an error (never "absent").
fn load(files: &dyn Files, name: &str) -> Result<Found, String> {
    match files.read(name) {
        Ok(None) => Ok(Found::Absent),
        Ok(Some(bytes)) => Ok(replay(&bytes)),
        Err(e) => Err(format!("cannot read {}: {e} — check the kv directory (--kv-dir) is readable", files.describe(name))),
    }
}

/// The journal to load from the two files' contents: its index (`None`: a fresh
/// store), generation and entries; or why the pair is damaged, with the fix.
fn choose(files: &dyn Files, names: &[String; 2], found: [Found; 2]) -> Result<(Option<usize>, u64, KvStore), String> {
    let both = format!("{} and {}", files.describe(&names[0]), files.describe(&names[1]));
    let refuse = |file: &str, why: &str| {
        Err(format!(
            "the kv store is damaged: {file}: {why} — it is left as it is, not loaded and not overwritten; move {both} aside to start the store empty, or restore them from a backup"
        ))
    };
    for (i, f) in found.iter().enumerate() {
        if let Found::Corrupt(why) = f {
            return refuse(&files.describe(&names[i]), why);
        }
    }
    let committed = |i: usize| match &found[i] {
        Found::Committed { generation, .. } => Some(*generation),
        _ => None,
    };
    let best = (0..2).filter_map(|i| committed(i).map(|g| (g, i))).max().map(|(_, i)| i);
    let newest_begun = found
        .iter()
        .filter_map(|f| match f {
            Found::Uncommitted(g) => *g,
            _ => None,
        })
        .max();
    match best {
        Some(i) => {
            let g = committed(i).unwrap_or_default();
            if let Some(u) = newest_begun.filter(|u| *u > g + 1) {
                return refuse(&files.describe(&names[1 - i]), &format!("generation {u} was begun, but the last committed one is {g}: a committed journal is missing"));
            }
            let [a, b] = found;
            let Found::Committed { store, .. } = (if i == 0 { a } else { b }) else { unreachable!("committed above") };
            Ok((Some(i), g, store))
        }
        None => match (&found[0], &found[1]) {
            (Found::Absent, Found::Absent) => Ok((None, 0, KvStore::new(usize::MAX))),
            // The very first snapshot (of an empty store) was cut short: nothing was
            // ever acknowledged from it.
            (Found::Uncommitted(None | Some(1)), Found::Absent) | (Found::Absent, Found::Uncommitted(None | Some(1))) => {
                Ok((None, 0, KvStore::new(usize::MAX)))
            }
            _ => refuse(&both, "no committed journal is left, though one was begun after another"),
        },
    }
}

/// Writes a complete journal of `store` at generation `generation` to the file `name`
/// and returns it open for appends, with its length.
fn snapshot(files: &dyn Files, name: &str, generation: u64, store: &KvStore) -> Result<(Box<dyn Write + Send>, u64), String> {
    let path = files.describe(name);
    let mut file = files.create(name).map_err(|e| format!("creating {path}: {e}"))?;
    let mut written = 0u64;
    let mut buf = record(HEADER, &[&generation.to_le_bytes()]);
    let mut put = |file: &mut Box<dyn Write + Send>, buf: &mut Vec<u8>| {
        file.write_all(buf).map_err(|e| format!("writing {path}: {e}"))?;
        written += buf.len() as u64;
        buf.clear();
        Ok::<(), String>(())
    };
    for key in store.list("") {
        let value = store.get(&key).ok().flatten().unwrap_or_default();
        buf.extend_from_slice(&record(SET, &[key.as_bytes(), &value]));
        if buf.len() >= 64 << 10 {
            put(&mut file, &mut buf)?;
        }
    }
    buf.extend_from_slice(&record(COMMIT, &[]));
    put(&mut file, &mut buf)?;
    file.flush().map_err(|e| format!("writing {}: {e}", files.describe(name)))?;
    Ok((file, written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Kv;
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};

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

    fn active_path(d: &Path, j: &Journal) -> PathBuf {
        d.join(&j.names[j.active])
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
        let active = active_path(&d, &j);
        drop(j);
        // Half a record at the end: ignored.
        let mut f = std::fs::OpenOptions::new().append(true).open(&active).unwrap();
        f.write_all(&record(SET, &[b"k", b"lost"])[..10]).unwrap();
        drop(f);
        let (j, s) = Journal::open(&d, "cap", 1 << 20).unwrap();
        assert_eq!(s.get("k").unwrap(), Some(b"kept".to_vec()));
        // The new snapshot torn before its commit: the previous journal wins.
        let fresh = active_path(&d, &j);
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
        assert!(j.bytes < 2 * (100 << 10) as u64 + COMPACT_SLACK + 4096, "not compacted: {} bytes", j.bytes);
        drop(j);
        let (_, s) = Journal::open(&d, "cap", 4 << 20).unwrap();
        assert_eq!(s.get("same").unwrap().map(|v| v.len()), Some(100 << 10));
        let e = Journal::open(&d, "cap", 1000).err().unwrap();
        assert!(e.contains("over the capsule's quota") && e.contains("cap.kv"), "{e}");
    }

    #[test]
    fn principals_never_share_a_file() {
        assert_eq!(file_names("echo-1.x_y"), ["echo-1.x_y.kv0".to_string(), "echo-1.x_y.kv1".to_string()]);
        let names = ["a b", "a_b", "a%20b", "a/b", "../x", "é", "a\nb"];
        let files: Vec<[String; 2]> = names.iter().map(|n| file_names(n)).collect();
        for (i, f) in files.iter().enumerate() {
            assert!(f[0].bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.%".contains(&b)), "{f:?}");
            assert!(files[..i].iter().all(|g| g != f), "{} collides", names[i]);
        }
    }

    // ---- faults: an in-memory directory whose Nth write fails or tears ----

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Fault {
        /// The Nth write fails and writes nothing.
        Fail,
        /// The Nth write puts half its bytes in the file, then fails.
        Tear,
    }

    /// Files in memory, shared with the test, counting every write.
    #[derive(Clone, Default)]
    struct Memory {
        files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
        writes: Arc<Mutex<usize>>,
        fault: Option<(usize, Fault)>,
    }

    struct MemoryFile {
        memory: Memory,
        name: String,
    }

    impl Write for MemoryFile {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = {
                let mut w = self.memory.writes.lock().unwrap();
                *w += 1;
                *w
            };
            let mut files = self.memory.files.lock().unwrap();
            let file = files.get_mut(&self.name).unwrap();
            match self.memory.fault {
                Some((at, Fault::Fail)) if at == n => Err(io::Error::other("injected failure")),
                Some((at, Fault::Tear)) if at == n => {
                    file.extend_from_slice(&buf[..buf.len() / 2]);
                    Err(io::Error::other("injected torn write"))
                }
                _ => {
                    file.extend_from_slice(buf);
                    Ok(buf.len())
                }
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Files for Memory {
        fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
            Ok(self.files.lock().unwrap().get(name).cloned())
        }
        fn create(&self, name: &str) -> io::Result<Box<dyn Write + Send>> {
            self.files.lock().unwrap().insert(name.to_string(), Vec::new());
            Ok(Box::new(MemoryFile { memory: self.clone(), name: name.to_string() }))
        }
        fn describe(&self, name: &str) -> String {
            format!("/mem/{name}")
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Set(&'static str, Vec<u8>),
        Delete(&'static str),
        Clear(&'static str),
        Cas(&'static str, Option<Vec<u8>>, Vec<u8>),
    }

    /// A session's changes: enough to compact once (large values), every kind of change.
    fn script() -> Vec<Op> {
        let big = |b: u8| vec![b; 70 << 10];
        vec![
            Op::Set("a", b"1".to_vec()),
            Op::Set("b", big(2)),
            Op::Set("app.x", b"x".to_vec()),
            Op::Set("b", big(3)),
            Op::Delete("a"),
            Op::Set("app.y", b"y".to_vec()),
            Op::Set("b", big(4)),
            Op::Clear("app."),
            Op::Set("b", big(5)),
            Op::Cas("c", None, b"c1".to_vec()),
            Op::Set("b", big(6)),
            Op::Set("d", b"d".to_vec()),
            Op::Cas("c", Some(b"c1".to_vec()), b"c2".to_vec()),
            Op::Set("e", b"e".to_vec()),
        ]
    }

    fn apply(kv: &mut Kv, op: &Op) -> Result<(), crate::kv::KvError> {
        match op {
            Op::Set(k, v) => kv.set(k, v.clone()),
            Op::Delete(k) => kv.delete(k),
            Op::Clear(p) => kv.clear_prefix(p).map(drop),
            Op::Cas(k, e, v) => kv.cas(k, e.as_deref(), v.clone()),
        }
    }

    fn model_apply(model: &mut BTreeMap<String, Vec<u8>>, op: &Op) {
        match op {
            Op::Set(k, v) | Op::Cas(k, _, v) => {
                model.insert(k.to_string(), v.clone());
            }
            Op::Delete(k) => {
                model.remove(*k);
            }
            Op::Clear(p) => model.retain(|k, _| !k.starts_with(p)),
        }
    }

    fn entries(model: &BTreeMap<String, Vec<u8>>) -> Vec<(String, Vec<u8>)> {
        model.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// One session with the Nth write failing or torn, then a reboot: everything the
    /// capsule was told succeeded is there, nothing it was told failed is. Once with
    /// the session going on after the fault, once with it ending right there (a crash).
    fn session(at: usize, fault: Fault, stop_at_fault: bool) -> (usize, usize) {
        let memory = Memory { fault: Some((at, fault)), ..Memory::default() };
        let mut model = BTreeMap::new();
        let (mut acked, mut failed) = (0, 0);
        match Kv::persisted_in(Box::new(memory.clone()), "cap", 64 << 20) {
            // The fault hit the first snapshot: the capsule never started.
            Err(e) => assert!(e.contains("injected"), "{e}"),
            Ok(mut kv) => {
                for op in script() {
                    let result = apply(&mut kv, &op);
                    if result.is_ok() {
                        model_apply(&mut model, &op);
                        acked += 1;
                    } else if matches!(result, Err(crate::kv::KvError::Persist(_))) {
                        failed += 1;
                        // In memory, the failed change is undone.
                        assert_eq!(kv.entries(), entries(&model), "fault at write {at} ({fault:?}), after {op:?}");
                        if stop_at_fault {
                            break;
                        }
                    }
                }
            }
        }
        let clean = Memory { files: memory.files.clone(), ..Memory::default() };
        let back = Kv::persisted_in(Box::new(clean), "cap", 64 << 20)
            .unwrap_or_else(|e| panic!("fault at write {at} ({fault:?}, stop {stop_at_fault}): reload refused: {e}"));
        assert_eq!(back.entries(), entries(&model), "fault at write {at} ({fault:?}, stop {stop_at_fault}): replay differs");
        (acked, failed)
    }

    #[test]
    fn no_acknowledged_change_is_lost_when_the_nth_write_fails_or_tears() {
        // How many writes a faultless session makes: every N up to one past it.
        let counting = Memory::default();
        let mut kv = Kv::persisted_in(Box::new(counting.clone()), "cap", 64 << 20).unwrap();
        let changes = script().len();
        assert!(script().iter().all(|op| apply(&mut kv, op).is_ok()));
        let total = *counting.writes.lock().unwrap();
        assert!(total >= changes + 4, "the script must compact, in snapshots of several writes: {total} writes for {changes} changes");
        for at in 1..=total + 1 {
            for fault in [Fault::Fail, Fault::Tear] {
                for stop in [false, true] {
                    let (acked, failed) = session(at, fault, stop);
                    assert!(failed <= 1, "one fault fails at most one change (at {at}, {fault:?}): {failed}");
                    assert!(acked + failed <= changes, "at {at}: {acked} + {failed}");
                    if at > total {
                        assert_eq!(acked, changes, "no fault, every change acknowledged");
                    }
                }
            }
        }
    }

    /// Writes `bytes` as both journals of `cap` in a fresh directory and opens it.
    fn open_with(name: &str, kv0: Option<&[u8]>, kv1: Option<&[u8]>) -> Result<Vec<(String, Vec<u8>)>, String> {
        let d = dir(name);
        for (file, bytes) in [("cap.kv0", kv0), ("cap.kv1", kv1)] {
            if let Some(b) = bytes {
                std::fs::write(d.join(file), b).unwrap();
            }
        }
        let result = Kv::persisted(&d, "cap", 1 << 20).map(|kv| kv.entries());
        // A refused store is left exactly as it was.
        if result.is_err() {
            assert_eq!(std::fs::read(d.join("cap.kv0")).ok().as_deref(), kv0, "{name}: kv0 was touched");
            assert_eq!(std::fs::read(d.join("cap.kv1")).ok().as_deref(), kv1, "{name}: kv1 was touched");
        }
        result
    }

    fn journal(generation: u64, entries: &[(&str, &[u8])], committed: bool) -> Vec<u8> {
        let mut out = record(HEADER, &[&generation.to_le_bytes()]);
        for (k, v) in entries {
            out.extend(record(SET, &[k.as_bytes(), v]));
        }
        if committed {
            out.extend(record(COMMIT, &[]));
        }
        out
    }

    #[test]
    fn a_corrupt_store_is_refused_not_started_empty() {
        let good = journal(4, &[("k", b"v")], true);
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        let mut bad_len = good.clone();
        bad_len.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3]);
        let mut unknown = good.clone();
        unknown.extend(record(9, &[b"x"]));
        let mut trailing_garbage = good.clone();
        trailing_garbage.extend(record(SET, &[b"a", b"b"]));
        let n = trailing_garbage.len();
        trailing_garbage[n - 1] ^= 0x55;
        let mut torn_then_zeros = good.clone();
        torn_then_zeros.extend(&record(SET, &[b"a", b"b"])[..7]);
        let mut zero_filled = good.clone();
        zero_filled.extend([0u8; 64]);
        let no_header = record(SET, &[b"k", b"v"]);
        let empty: &[(&str, &[u8])] = &[];
        let kv = |pairs: &[(&str, &[u8])]| Ok::<_, String>(pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect::<Vec<_>>());
        type Case = (&'static str, Option<Vec<u8>>, Option<Vec<u8>>, Result<Vec<(String, Vec<u8>)>, &'static str>);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // Absent, fresh, and the states a crash leaves: all load.
            ("absent", None, None, kv(empty).map_err(|_| "")),
            ("good", Some(good.clone()), None, kv(&[("k", b"v")]).map_err(|_| "")),
            ("torn tail", Some(torn_then_zeros), None, kv(&[("k", b"v")]).map_err(|_| "")),
            ("zero-filled tail", Some(zero_filled), None, kv(&[("k", b"v")]).map_err(|_| "")),
            ("first snapshot cut", Some(journal(1, empty, false)), None, kv(empty).map_err(|_| "")),
            ("empty file", Some(Vec::new()), None, kv(empty).map_err(|_| "")),
            ("next snapshot cut", Some(good.clone()), Some(journal(5, &[("k", b"v")], false)), kv(&[("k", b"v")]).map_err(|_| "")),
            ("newer wins", Some(good.clone()), Some(journal(5, &[("k", b"new")], true)), kv(&[("k", b"new")]).map_err(|_| "")),
            // Damage: refused, naming the file and the fix.
            ("bit flip", Some(flipped), None, Err("cap.kv0: byte")),
            ("impossible length", Some(bad_len), None, Err("which no journal writes")),
            ("unknown record", Some(unknown), None, Err("not a change this journal writes")),
            ("bad last record", Some(trailing_garbage), None, Err("fails its checksum")),
            ("no header", Some(no_header), None, Err("journal header")),
            ("other file damaged", Some(good.clone()), Some(b"garbage, not a journal".to_vec()), Err("cap.kv1")),
            ("committed one missing", None, Some(journal(7, &[("k", b"v")], false)), Err("no committed journal")),
            ("both uncommitted", Some(journal(2, empty, false)), Some(journal(3, empty, false)), Err("no committed journal")),
            ("a generation skipped", Some(good.clone()), Some(journal(9, empty, false)), Err("a committed journal is missing")),
        ];
        for (name, kv0, kv1, want) in cases {
            let got = open_with(&format!("corrupt-{}", name.replace(' ', "-")), kv0.as_deref(), kv1.as_deref());
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{name}"),
                (Err(e), Err(w)) => {
                    assert!(e.contains(w), "{name}: {e}");
                    assert!(e.contains("damaged") && e.contains("move") && e.contains("aside"), "{name}: {e}");
                }
                _ => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
