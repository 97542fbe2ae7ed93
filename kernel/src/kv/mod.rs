//! `astrid:kv@1.0.0`: each capsule's own store (`store.rs`), bounded by a byte quota
//! (`ASTRID_KV_QUOTA_BYTES`, default 16 MiB), in memory — and, with `ASTRID_KV_DIR`,
//! persisted per principal to that directory (`journal.rs`): a change is answered only
//! once it is written, and one that cannot be written is undone and answered
//! `unknown`. Every call is audited with the bytes it moved.

pub mod journal;
pub mod store;

use std::time::Instant;

pub use store::{KvError, KvStore};

use crate::engine::state::CapsuleState;
use crate::io::astrid::kv::host::{ErrorCode, Host, KeyPage};
use crate::io::{Counts, audit};

/// Default store quota per capsule.
pub const DEFAULT_QUOTA: usize = 16 << 20;

fn code(e: KvError) -> ErrorCode {
    match e {
        KvError::InvalidKey => ErrorCode::InvalidKey,
        KvError::TooLarge => ErrorCode::TooLarge,
        KvError::Quota => ErrorCode::Quota,
        KvError::CasMismatch => ErrorCode::CasMismatch,
        KvError::Persist(why) => ErrorCode::Unknown(format!("not persisted: {why}")),
    }
}

impl CapsuleState {
    /// Writes a change already made in memory to the journal, if there is one; if that
    /// fails, puts the keys back as they were (`before`) and says why.
    fn kv_persist(&mut self, before: Vec<(String, Option<Vec<u8>>)>, change: journal::Change<'_>) -> Result<(), KvError> {
        let Some(journal) = self.kv_journal.as_mut() else { return Ok(()) };
        journal.append(change, &self.kv).map_err(|why| {
            for (key, value) in before {
                let _ = match value {
                    Some(v) => self.kv.set(&key, v),
                    None => self.kv.delete(&key),
                };
            }
            KvError::Persist(why)
        })
    }

    fn kv_done<T>(&mut self, function: &str, started: Instant, bytes: u64, result: Result<T, KvError>) -> wasmtime::Result<Result<T, ErrorCode>> {
        let result = result.map_err(code);
        let counts = Counts { bytes: Some(bytes), ..Counts::default() };
        audit(self, function, started, counts, result.as_ref().err().map(|e| format!("{e:?}")).as_deref());
        Ok(result)
    }
}

impl Host for CapsuleState {
    fn kv_get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, ErrorCode>> {
        let started = Instant::now();
        let result = self.kv.get(&key);
        let n = result.as_ref().ok().and_then(|v| v.as_ref()).map_or(0, |v| v.len() as u64);
        self.kv_done("astrid:kv/host.kv-get", started, n, result)
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        let n = value.len() as u64;
        let before = self.kv.get(&key).ok().flatten();
        let result = match self.kv.set(&key, value.clone()) {
            Ok(()) => self.kv_persist(vec![(key.clone(), before)], journal::Change::Set(&key, &value)),
            Err(e) => Err(e),
        };
        self.kv_done("astrid:kv/host.kv-set", started, n, result)
    }

    fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        let before = self.kv.get(&key).ok().flatten();
        let result = match self.kv.delete(&key) {
            Ok(()) if before.is_some() => self.kv_persist(vec![(key.clone(), before)], journal::Change::Delete(&key)),
            other => other,
        };
        self.kv_done("astrid:kv/host.kv-delete", started, 0, result)
    }

    fn kv_list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, ErrorCode>> {
        let started = Instant::now();
        let keys = self.kv.list(&prefix);
        self.kv_done("astrid:kv/host.kv-list-keys", started, 0, Ok(keys))
    }

    fn kv_list_keys_page(&mut self, prefix: String, cursor: Option<String>, limit: u32) -> wasmtime::Result<Result<KeyPage, ErrorCode>> {
        let started = Instant::now();
        let result = self.kv.page(&prefix, cursor.as_deref(), limit).map(|(keys, next_cursor)| KeyPage { keys, next_cursor });
        self.kv_done("astrid:kv/host.kv-list-keys-page", started, 0, result)
    }

    fn kv_clear_prefix(&mut self, prefix: String) -> wasmtime::Result<Result<u64, ErrorCode>> {
        let started = Instant::now();
        let before: Vec<(String, Option<Vec<u8>>)> = self.kv.list(&prefix).into_iter().map(|k| {
            let v = self.kv.get(&k).ok().flatten();
            (k, v)
        }).collect();
        let removed = self.kv.clear_prefix(&prefix);
        let result = if removed > 0 { self.kv_persist(before, journal::Change::ClearPrefix(&prefix)).map(|()| removed) } else { Ok(0) };
        self.kv_done("astrid:kv/host.kv-clear-prefix", started, 0, result)
    }

    fn kv_cas(&mut self, key: String, expected: Option<Vec<u8>>, new: Vec<u8>) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        let n = new.len() as u64;
        let before = self.kv.get(&key).ok().flatten();
        let result = match self.kv.cas(&key, expected.as_deref(), new.clone()) {
            Ok(()) => self.kv_persist(vec![(key.clone(), before)], journal::Change::Set(&key, &new)),
            Err(e) => Err(e),
        };
        self.kv_done("astrid:kv/host.kv-cas", started, n, result)
    }
}
