//! `astrid:kv`'s provider: each capsule's own store (`store.rs`), bounded by a byte
//! quota (`ASTRID_KV_QUOTA_BYTES`, default 16 MiB), in memory — and, with
//! `ASTRID_KV_DIR`, persisted per principal to that directory (`journal.rs`): a change
//! is answered only once it is written, and one that cannot be written is undone and
//! answered with `KvError::Persist`. Nothing here knows WIT.

pub mod journal;
pub mod store;

use std::path::Path;

pub use store::{KvError, KvStore};

/// One capsule's kv store, and where it persists.
pub struct Kv {
    store: KvStore,
    journal: Option<journal::Journal>,
}

/// Keys as they were before a change, to undo it when it cannot be persisted.
type Before = Vec<(String, Option<Vec<u8>>)>;

impl Kv {
    pub fn in_memory(quota: usize) -> Kv {
        Kv { store: KvStore::new(quota), journal: None }
    }

    /// The store of `principal` in `dir`, replayed from its journal. A damaged store is
    /// an error (naming the file and the fix), never an empty store.
    pub fn persisted(dir: &Path, principal: &str, quota: usize) -> Result<Kv, String> {
        Kv::persisted_in(Box::new(journal::Dir(dir.to_path_buf())), principal, quota)
    }

    /// As `persisted`, over any `journal::Files` (the fault-injection tests').
    pub fn persisted_in(files: Box<dyn journal::Files>, principal: &str, quota: usize) -> Result<Kv, String> {
        let (journal, store) = journal::Journal::open_in(files, principal, quota)?;
        Ok(Kv { store, journal: Some(journal) })
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.store.get(key)
    }

    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.store.list(prefix)
    }

    pub fn page(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<(Vec<String>, Option<String>), KvError> {
        self.store.page(prefix, cursor, limit)
    }

    pub fn set(&mut self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        let before = vec![(key.to_owned(), self.store.get(key).ok().flatten())];
        if self.journal.is_none() {
            return self.store.set(key, value);
        }
        self.store.set(key, value)?;
        let value = self.store.get(key)?.unwrap_or_default();
        self.persist(before, journal::Change::Set(key, &value))
    }

    pub fn delete(&mut self, key: &str) -> Result<(), KvError> {
        let before = self.store.get(key).ok().flatten();
        self.store.delete(key)?;
        match before {
            Some(v) => self.persist(vec![(key.to_owned(), Some(v))], journal::Change::Delete(key)),
            None => Ok(()),
        }
    }

    pub fn clear_prefix(&mut self, prefix: &str) -> Result<u64, KvError> {
        let before: Before = match self.journal {
            Some(_) => self.store.list(prefix).into_iter().map(|k| {
                let v = self.store.get(&k).ok().flatten();
                (k, v)
            }).collect(),
            None => Vec::new(),
        };
        let removed = self.store.clear_prefix(prefix);
        if removed > 0 {
            self.persist(before, journal::Change::ClearPrefix(prefix))?;
        }
        Ok(removed)
    }

    pub fn cas(&mut self, key: &str, expected: Option<&[u8]>, new: Vec<u8>) -> Result<(), KvError> {
        let before = vec![(key.to_owned(), self.store.get(key).ok().flatten())];
        if self.journal.is_none() {
            return self.store.cas(key, expected, new);
        }
        self.store.cas(key, expected, new)?;
        let value = self.store.get(key)?.unwrap_or_default();
        self.persist(before, journal::Change::Set(key, &value))
    }

    /// Writes a change already made in memory to the journal, if there is one; if that
    /// fails, puts the keys back as they were, has the journal rewrite what is
    /// acknowledged, and says why.
    fn persist(&mut self, before: Before, change: journal::Change<'_>) -> Result<(), KvError> {
        let Some(journal) = self.journal.as_mut() else { return Ok(()) };
        journal.append(change, &self.store).map_err(|why| {
            for (key, value) in before {
                // Restoring what was there before cannot exceed the quota it fit in.
                let _ = match value {
                    Some(v) => self.store.set(&key, v),
                    None => self.store.delete(&key),
                };
            }
            journal.recover(&self.store);
            KvError::Persist(why)
        })
    }

    /// Every entry, in key order (what a replay must give back).
    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.store.list("").into_iter().map(|k| {
            let v = self.store.get(&k).ok().flatten().unwrap_or_default();
            (k, v)
        }).collect()
    }
}
