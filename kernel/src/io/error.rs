//! `astrid:io/error`: the error resource carried by `last-operation-failed`.

use wasmtime::component::Resource;

use super::astrid::io::error::{Host, HostError};
use super::{Counts, IoError, audit};
use crate::engine::state::CapsuleState;

impl Host for CapsuleState {}

impl HostError for CapsuleState {
    fn to_debug_string(&mut self, err: Resource<IoError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&err)?.message.clone())
    }

    fn drop(&mut self, err: Resource<IoError>) -> wasmtime::Result<()> {
        let started = std::time::Instant::now();
        self.delete(err)?;
        audit(self, "astrid:io/error.error.drop", started, Counts::default(), None);
        Ok(())
    }
}
