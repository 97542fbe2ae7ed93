//! `astrid:kv@1.0.0` over the capsule's own store (`kv::Kv`). Every call records the
//! bytes it moved.

use super::bindings::astrid::kv::host::{ErrorCode, Host, KeyPage};
use super::context::View;
use super::envelope::host_fns;
use crate::kv::{Kv, KvError};

pub type KvView<'a> = View<'a, Kv>;

fn code(e: KvError) -> ErrorCode {
    match e {
        KvError::InvalidKey => ErrorCode::InvalidKey,
        KvError::TooLarge => ErrorCode::TooLarge,
        KvError::Quota => ErrorCode::Quota,
        KvError::CasMismatch => ErrorCode::CasMismatch,
        KvError::Persist(why) => ErrorCode::Unknown(format!("not persisted: {why}")),
    }
}

host_fns! { impl Host for KvView<'_> as "astrid:kv/host" {
    fn kv_get(cx, key: String) -> Result<Option<Vec<u8>>, ErrorCode> {
        let result = cx.pkg.get(&key);
        cx.core.moved(result.as_ref().ok().and_then(|v| v.as_ref()).map_or(0, |v| v.len() as u64));
        Ok(result.map_err(code))
    }

    fn kv_set(cx, key: String, value: Vec<u8>) -> Result<(), ErrorCode> {
        cx.core.moved(value.len() as u64);
        Ok(cx.pkg.set(&key, value).map_err(code))
    }

    fn kv_delete(cx, key: String) -> Result<(), ErrorCode> {
        cx.core.moved(0);
        Ok(cx.pkg.delete(&key).map_err(code))
    }

    fn kv_list_keys(cx, prefix: String) -> Result<Vec<String>, ErrorCode> {
        cx.core.moved(0);
        Ok(Ok(cx.pkg.list(&prefix)))
    }

    fn kv_list_keys_page(cx, prefix: String, cursor: Option<String>, limit: u32) -> Result<KeyPage, ErrorCode> {
        cx.core.moved(0);
        Ok(cx.pkg.page(&prefix, cursor.as_deref(), limit).map(|(keys, next_cursor)| KeyPage { keys, next_cursor }).map_err(code))
    }

    fn kv_clear_prefix(cx, prefix: String) -> Result<u64, ErrorCode> {
        cx.core.moved(0);
        Ok(cx.pkg.clear_prefix(&prefix).map_err(code))
    }

    fn kv_cas(cx, key: String, expected: Option<Vec<u8>>, new: Vec<u8>) -> Result<(), ErrorCode> {
        cx.core.moved(new.len() as u64);
        Ok(cx.pkg.cas(&key, expected.as_deref(), new).map_err(code))
    }
} }
