//! `astrid:ipc@1.0.0`: the in-image bus (`bus.rs`) for capsules. Subscriptions are
//! resources in the capsule's own table; `subscribe-readiness` hands out a real pollable
//! that fires on delivery; `recv` waits on the wait primitive with its deadline and the
//! capsule's cancellation. Limits: 128 subscriptions per capsule, 1 MiB payloads, 60 s
//! `recv`. A cancelled `recv` returns `closed` (the capsule is going away); a deadline
//! that passes returns `timeout`. Every call is audited.

pub mod bus;

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Resource;

use crate::engine::state::CapsuleState;
use crate::io::astrid::ipc::host::{ErrorCode, Host, HostSubscription, InterceptorBinding, IpcEnvelope, IpcMessage, PrincipalAttribution};
use crate::io::{Counts, Pollable, audit};
use crate::wait::{self, WaitError};
use bus::{Attribution, Batch, Message, Subscriber};

/// Subscriptions one capsule may hold.
pub const MAX_SUBSCRIPTIONS: usize = 128;
/// Longest `recv` wait.
pub const MAX_RECV: Duration = Duration::from_secs(60);
/// Messages one `poll` or `recv` returns at most.
const BATCH: usize = 256;

/// `astrid:ipc/host.subscription`.
pub struct Subscription {
    sub: Arc<Subscriber>,
}

fn envelope(batch: Batch) -> IpcEnvelope {
    IpcEnvelope {
        messages: batch
            .messages
            .into_iter()
            .map(|m| IpcMessage {
                topic: m.topic,
                payload: m.payload,
                source_id: m.source,
                principal: match m.principal {
                    Attribution::Verified(p) => PrincipalAttribution::Verified(p),
                    Attribution::Claimed(p) => PrincipalAttribution::Claimed(p),
                    Attribution::System => PrincipalAttribution::System,
                },
            })
            .collect(),
        dropped: batch.dropped,
        lagged: batch.lagged,
    }
}

impl CapsuleState {
    fn ipc_done<T>(&mut self, function: &str, started: Instant, bytes: Option<u64>, result: Result<T, ErrorCode>) -> wasmtime::Result<Result<T, ErrorCode>> {
        let counts = Counts { bytes, ..Counts::default() };
        audit(self, function, started, counts, result.as_ref().err().map(|e| format!("{e:?}")).as_deref());
        Ok(result)
    }
}

impl Host for CapsuleState {
    fn publish(&mut self, topic: String, payload: String) -> wasmtime::Result<Result<(), ErrorCode>> {
        let started = Instant::now();
        let n = payload.len() as u64;
        let result = if !bus::valid_topic(&topic) || payload.len() > bus::MAX_PAYLOAD {
            Err(ErrorCode::InvalidInput)
        } else if self.ipc_publish.as_ref().is_some_and(|allowed| !allowed.iter().any(|p| bus::matches(p, &topic))) {
            Err(ErrorCode::CapabilityDenied)
        } else {
            let message = Message {
                topic,
                payload,
                source: self.capsule.clone(),
                principal: Attribution::Verified(self.principal.clone()),
            };
            self.bus.publish(message);
            Ok(())
        };
        self.ipc_done("astrid:ipc/host.publish", started, Some(n), result)
    }

    fn publish_as(&mut self, _topic: String, _payload: String, _principal: String) -> wasmtime::Result<Result<(), ErrorCode>> {
        // Speaking for another principal needs a capability no capsule holds yet.
        self.ipc_done("astrid:ipc/host.publish-as", Instant::now(), None, Err(ErrorCode::CapabilityDenied))
    }

    fn subscribe(&mut self, pattern: String) -> wasmtime::Result<Result<Resource<Subscription>, ErrorCode>> {
        let started = Instant::now();
        let result = if !bus::valid_pattern(&pattern) {
            Err(ErrorCode::InvalidInput)
        } else if self.ipc_subscribe.as_ref().is_some_and(|allowed| !allowed.iter().any(|p| bus::covers(p, &pattern))) {
            Err(ErrorCode::CapabilityDenied)
        } else if self.ipc_subscriptions >= MAX_SUBSCRIPTIONS {
            Err(ErrorCode::Quota)
        } else {
            let sub = self.bus.subscribe(&pattern);
            self.ipc_subscriptions += 1;
            Ok(self.push(Subscription { sub })?)
        };
        self.ipc_done("astrid:ipc/host.subscribe", started, None, result)
    }

    fn get_interceptor_bindings(&mut self) -> wasmtime::Result<Result<Vec<InterceptorBinding>, ErrorCode>> {
        self.ipc_done("astrid:ipc/host.get-interceptor-bindings", Instant::now(), None, Ok(Vec::new()))
    }
}

impl HostSubscription for CapsuleState {
    fn poll(&mut self, this: Resource<Subscription>) -> wasmtime::Result<Result<IpcEnvelope, ErrorCode>> {
        let started = Instant::now();
        let batch = self.table.get(&this)?.sub.take(BATCH);
        let n = batch.messages.iter().map(|m| m.payload.len() as u64).sum();
        self.ipc_done("astrid:ipc/host.subscription.poll", started, Some(n), Ok(envelope(batch)))
    }

    fn recv(&mut self, this: Resource<Subscription>, timeout_ms: u64) -> wasmtime::Result<Result<IpcEnvelope, ErrorCode>> {
        let started = Instant::now();
        let timeout = Duration::from_millis(timeout_ms);
        let sub = self.table.get(&this)?.sub.clone();
        let result = if timeout > MAX_RECV {
            Err(ErrorCode::InvalidInput)
        } else {
            match wait::wait_one(&*sub, &self.cancel, Some(started + timeout)) {
                Ok(()) => Ok(envelope(sub.take(BATCH))),
                Err(WaitError::TimedOut) => Err(ErrorCode::Timeout),
                Err(WaitError::Cancelled) => Err(ErrorCode::Closed),
            }
        };
        let n = result.as_ref().map(|e| e.messages.iter().map(|m| m.payload.len() as u64).sum()).unwrap_or(0);
        self.ipc_done("astrid:ipc/host.subscription.recv", started, Some(n), result)
    }

    fn subscribe_readiness(&mut self, this: Resource<Subscription>) -> wasmtime::Result<Resource<Pollable>> {
        let started = Instant::now();
        let sub = self.table.get(&this)?.sub.clone();
        let pollable = self.push_child(Pollable::new(sub), &this)?;
        audit(self, "astrid:ipc/host.subscription.subscribe-readiness", started, Counts::default(), None);
        Ok(pollable)
    }

    fn drop(&mut self, this: Resource<Subscription>) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.delete(this)?;
        self.ipc_subscriptions -= 1;
        audit(self, "astrid:ipc/host.subscription.drop", started, Counts::default(), None);
        Ok(())
    }
}
