//! `astrid:io/poll`: `poll` and `pollable.{ready, block}` on the wait primitive. Every
//! wait races the capsule's cancellation; `ready` is side-effect free and not audited.

use std::time::Instant;

use wasmtime::component::Resource;

use super::astrid::io::poll::{ErrorCode, Host, HostPollable};
use super::{Counts, Pollable, audit};
use crate::engine::state::{CapsuleState, MAX_POLL_LIST};
use crate::wait::{self, Readiness, WaitError};

impl Host for CapsuleState {
    fn poll(&mut self, pollables: Vec<Resource<Pollable>>) -> wasmtime::Result<Result<Vec<u32>, ErrorCode>> {
        let started = Instant::now();
        let count = Some(pollables.len() as u32);
        let cap = self.limits.poll_list.min(MAX_POLL_LIST);
        let result = if pollables.is_empty() {
            Err(ErrorCode::InvalidInput)
        } else if pollables.len() > cap {
            Err(ErrorCode::TooLarge)
        } else {
            let sources: Vec<&dyn Readiness> = pollables
                .iter()
                .map(|p| self.table.get(p).map(|p| &*p.source as &dyn Readiness))
                .collect::<Result<_, _>>()?;
            match wait::wait_any(&sources, &self.cancel, None) {
                Ok(ready) => Ok(ready.into_iter().map(|i| i as u32).collect()),
                Err(WaitError::Cancelled) => Err(ErrorCode::Cancelled),
                Err(WaitError::TimedOut) => unreachable!("poll waits without a deadline"),
            }
        };
        let counts = Counts {
            pollable_count: count,
            ready_count: result.as_ref().ok().map(|r: &Vec<u32>| r.len() as u32),
            ..Counts::default()
        };
        let error = result.as_ref().err().map(|e| format!("{e:?}"));
        audit(self, "astrid:io/poll.poll", started, counts, error.as_deref());
        Ok(result)
    }
}

impl HostPollable for CapsuleState {
    fn ready(&mut self, this: Resource<Pollable>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&this)?.source.is_ready())
    }

    fn block(&mut self, this: Resource<Pollable>) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        let source = self.table.get(&this)?.source.clone();
        let result = match wait::wait_one(&*source, &self.cancel, None) {
            Ok(()) => Ok(()),
            Err(WaitError::Cancelled) => Err(ErrorCode::Cancelled),
            Err(WaitError::TimedOut) => unreachable!("block waits without a deadline"),
        };
        let error = result.as_ref().err().map(|e| format!("{e:?}"));
        audit(self, "astrid:io/poll.pollable.block", started, Counts::default(), error.as_deref());
        Ok(result)
    }

    fn drop(&mut self, this: Resource<Pollable>) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.delete(this)?;
        audit(self, "astrid:io/poll.pollable.drop", started, Counts::default(), None);
        Ok(())
    }
}
