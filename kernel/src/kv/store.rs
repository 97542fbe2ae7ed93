//! A capsule's key-value store: ordered keys, byte values, a size quota. Pure data
//! structure; the host file (`host/kv.rs`) maps its errors onto `astrid:kv`'s.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Longest key, in bytes.
pub const MAX_KEY: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// Most keys one page returns.
pub const MAX_PAGE: u32 = 1000;
/// What each entry is charged beyond its key and value: the map's own bookkeeping, so
/// that millions of tiny entries cost what they take.
pub const ENTRY_OVERHEAD: usize = 64;

/// What an entry is charged against the quota.
fn cost(key: &str, value_len: usize) -> usize {
    key.len() + value_len + ENTRY_OVERHEAD
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    InvalidKey,
    TooLarge,
    Quota,
    CasMismatch,
    /// The change could not be persisted (and was undone in memory).
    Persist(String),
}

#[derive(Debug)]
pub struct KvStore {
    entries: BTreeMap<String, Vec<u8>>,
    /// Bytes of keys and values held, with `ENTRY_OVERHEAD` per entry.
    used: usize,
    quota: usize,
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY || key.contains('\0') {
        return Err(KvError::InvalidKey);
    }
    Ok(())
}

impl KvStore {
    pub fn new(quota: usize) -> Self {
        KvStore { entries: BTreeMap::new(), used: 0, quota }
    }

    pub fn used(&self) -> usize {
        self.used
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        Ok(self.entries.get(key).cloned())
    }

    pub fn set(&mut self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        check_key(key)?;
        if value.len() > MAX_VALUE {
            return Err(KvError::TooLarge);
        }
        let old = self.entries.get(key).map_or(0, |v| cost(key, v.len()));
        let new_used = self.used - old + cost(key, value.len());
        if new_used > self.quota {
            return Err(KvError::Quota);
        }
        self.used = new_used;
        self.entries.insert(key.to_string(), value);
        Ok(())
    }

    pub fn delete(&mut self, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        if let Some(v) = self.entries.remove(key) {
            self.used -= cost(key, v.len());
        }
        Ok(())
    }

    fn with_prefix<'a>(&'a self, prefix: &'a str, after: Option<&'a str>) -> impl Iterator<Item = &'a String> + 'a {
        let start = match after {
            Some(c) => Bound::Excluded(c.to_string()),
            None => Bound::Included(prefix.to_string()),
        };
        self.entries
            .range::<String, _>((start, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(move |k| k.starts_with(prefix))
    }

    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.with_prefix(prefix, None).cloned().collect()
    }

    /// Up to `limit` keys after `cursor`; the cursor of the next page when more remain.
    pub fn page(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<(Vec<String>, Option<String>), KvError> {
        if let Some(c) = cursor
            && !c.starts_with(prefix)
        {
            return Err(KvError::InvalidKey);
        }
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let mut keys: Vec<String> = self.with_prefix(prefix, cursor).take(limit + 1).cloned().collect();
        let next = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().cloned()
        } else {
            None
        };
        Ok((keys, next))
    }

    pub fn clear_prefix(&mut self, prefix: &str) -> u64 {
        let doomed: Vec<String> = self.list(prefix);
        for k in &doomed {
            if let Some(v) = self.entries.remove(k) {
                self.used -= cost(k, v.len());
            }
        }
        doomed.len() as u64
    }

    /// Sets `key` to `new` only if it now holds `expected` (`None`: absent).
    pub fn cas(&mut self, key: &str, expected: Option<&[u8]>, new: Vec<u8>) -> Result<(), KvError> {
        check_key(key)?;
        if self.entries.get(key).map(Vec::as_slice) != expected {
            return Err(KvError::CasMismatch);
        }
        self.set(key, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_delete_and_quota_accounting() {
        let mut kv = KvStore::new(20 + ENTRY_OVERHEAD);
        kv.set("a", b"12345".to_vec()).unwrap();
        assert_eq!(kv.get("a").unwrap().as_deref(), Some(&b"12345"[..]));
        assert_eq!(kv.used(), 6 + ENTRY_OVERHEAD);
        kv.set("a", b"1".to_vec()).unwrap();
        assert_eq!(kv.used(), 2 + ENTRY_OVERHEAD);
        assert_eq!(kv.set("b", vec![0; 19]), Err(KvError::Quota));
        assert_eq!(kv.get("b").unwrap(), None);
        kv.delete("a").unwrap();
        assert_eq!(kv.used(), 0);
        assert_eq!(kv.set("", vec![]), Err(KvError::InvalidKey));
        assert_eq!(kv.set(&"k".repeat(513), vec![]), Err(KvError::InvalidKey));
        assert_eq!(KvStore::new(usize::MAX).set("v", vec![0; MAX_VALUE + 1]), Err(KvError::TooLarge));
    }

    /// Many tiny entries: each is charged its bookkeeping, so a quota bounds how many
    /// there can be, not just their bytes.
    #[test]
    fn many_tiny_entries_are_charged_their_overhead() {
        let quota = 100 * (ENTRY_OVERHEAD + 4);
        let mut kv = KvStore::new(quota);
        let mut n = 0;
        while kv.set(&format!("{n:04}"), Vec::new()).is_ok() {
            n += 1;
        }
        assert_eq!(n, 100);
        assert_eq!(kv.used(), quota);
        kv.clear_prefix("");
        assert_eq!(kv.used(), 0);
    }

    #[test]
    fn prefixes_pages_and_clearing() {
        let mut kv = KvStore::new(1 << 20);
        for k in ["app/1", "app/2", "app/3", "apq", "b"] {
            kv.set(k, vec![1]).unwrap();
        }
        assert_eq!(kv.list("app/"), vec!["app/1", "app/2", "app/3"]);
        let (page, next) = kv.page("app/", None, 2).unwrap();
        assert_eq!((page, next.clone()), (vec!["app/1".to_string(), "app/2".to_string()], Some("app/2".to_string())));
        let (page, next) = kv.page("app/", next.as_deref(), 2).unwrap();
        assert_eq!((page, next), (vec!["app/3".to_string()], None));
        assert_eq!(kv.page("app/", Some("b"), 2), Err(KvError::InvalidKey));
        assert_eq!(kv.clear_prefix("app/"), 3);
        assert_eq!(kv.list(""), vec!["apq", "b"]);
    }

    #[test]
    fn compare_and_swap() {
        let mut kv = KvStore::new(1 << 20);
        kv.cas("k", None, b"1".to_vec()).unwrap();
        assert_eq!(kv.cas("k", None, b"2".to_vec()), Err(KvError::CasMismatch));
        assert_eq!(kv.cas("k", Some(b"0"), b"2".to_vec()), Err(KvError::CasMismatch));
        kv.cas("k", Some(b"1"), b"2".to_vec()).unwrap();
        assert_eq!(kv.get("k").unwrap().as_deref(), Some(&b"2"[..]));
    }
}
