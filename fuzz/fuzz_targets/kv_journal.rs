//! The kv journal's replay (`kv::journal::Journal::open`): whatever bytes a capsule's
//! `<name>.kv0` and `<name>.kv1` hold (torn, corrupt, forged lengths), opening the store
//! gives a store or an error, never a panic or an allocation a length field asked for.
//!
//! Input: a flags byte (bit 0: a large quota; bit 1: no `.kv0`; bit 2: no `.kv1`), a u16
//! split, then the bytes: `.kv0` gets the first `split`, `.kv1` the rest.
//! Holds: an opened store is within its quota; opening it again gives the same entries
//! (the snapshot written at open holds exactly what was replayed); a change appended
//! after that survives the next open.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use astrid_fuzz::Reader;
use astrid_kernel::kv::journal::{Change, Journal};
use astrid_kernel::kv::store::KvStore;
use libfuzzer_sys::fuzz_target;

const NAME: &str = "cap";

/// This process's scratch directory, under the temporary directory (`xtask fuzz` gives
/// each run its own and removes it afterwards).
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("astrid-fuzz-kv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        dir
    })
}

fn entries(store: &KvStore) -> BTreeMap<String, Vec<u8>> {
    store.list("").into_iter().map(|k| {
        let v = store.get(&k).expect("a listed key is valid").expect("a listed key is there");
        (k, v)
    }).collect()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Reader::new(data);
    let flags = input.u8();
    let split = usize::from(input.u16());
    let bytes = input.rest();
    let (kv0, kv1) = bytes.split_at(split.min(bytes.len()));
    let quota = if flags & 1 != 0 { 16 << 20 } else { 256 };
    let dir = dir();
    for (i, (content, absent)) in [(kv0, flags & 2 != 0), (kv1, flags & 4 != 0)].into_iter().enumerate() {
        let path = dir.join(format!("{NAME}.kv{i}"));
        if absent {
            let _ = std::fs::remove_file(&path);
        } else {
            std::fs::write(&path, content).expect("writing the journal");
        }
    }
    let Ok((journal, store)) = Journal::open(dir, NAME, quota) else { return };
    assert!(store.used() <= quota, "{} bytes loaded over a quota of {quota}", store.used());
    let loaded = entries(&store);
    drop(journal);
    let (mut journal, mut store) = Journal::open(dir, NAME, quota).expect("the journal written at open opens again");
    assert_eq!(entries(&store), loaded, "reopening changed the store");
    // An acknowledged change survives.
    let key = "fuzz.appended";
    if store.set(key, b"v".to_vec()).is_ok() {
        journal.append(Change::Set(key, b"v"), &store).expect("appending to the journal");
        drop(journal);
        let (_, store) = Journal::open(dir, NAME, quota).expect("the journal opens after an append");
        assert_eq!(store.get(key).ok().flatten().as_deref(), Some(&b"v"[..]), "an acknowledged write was lost");
    }
});
