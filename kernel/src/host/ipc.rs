//! `astrid:ipc@1.0.0` over the in-image bus. `subscribe-readiness` hands out a real
//! pollable that fires on delivery; `recv` waits on the wait primitive with its deadline
//! and the capsule's cancellation. A cancelled `recv` answers `closed` (the capsule is
//! going away) and is recorded `cancelled`; a deadline that passes answers `timeout`.

use std::time::{Duration, Instant};

use wasmtime::component::Resource;

use super::bindings::astrid::ipc::host::{ErrorCode, Host, HostSubscription, InterceptorBinding, IpcEnvelope, IpcMessage, PrincipalAttribution};
use super::context::{IpcCtx, View};
use super::envelope::host_fns;
use crate::ipc::bus::{Attribution, Batch, Message};
use crate::ipc::{self, BATCH, BATCH_BYTES, Denied, MAX_RECV, Subscription};
use crate::wait::{self, Pollable, WaitError};

pub type IpcView<'a> = View<'a, IpcCtx>;

fn denied(d: Denied) -> ErrorCode {
    match d {
        Denied::Invalid => ErrorCode::InvalidInput,
        Denied::NotGranted => ErrorCode::CapabilityDenied,
        Denied::Quota => ErrorCode::Quota,
    }
}

fn envelope(batch: Batch) -> IpcEnvelope {
    IpcEnvelope {
        messages: batch
            .messages
            .into_iter()
            .map(|m| std::sync::Arc::try_unwrap(m).unwrap_or_else(|shared| (*shared).clone()))
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

fn payload_bytes(e: &IpcEnvelope) -> u64 {
    e.messages.iter().map(|m| m.payload.len() as u64).sum()
}

host_fns! { impl Host for IpcView<'_> as "astrid:ipc/host" {
    fn publish(cx, topic: String, payload: String) -> Result<(), ErrorCode> {
        cx.core.moved(payload.len() as u64);
        if let Err(d) = ipc::may_publish(cx.pkg.publish.as_deref(), &topic, payload.len()) {
            return Ok(Err(denied(d)));
        }
        let id = &cx.core.identity;
        cx.pkg.bus.publish(Message {
            topic,
            payload,
            source: id.capsule.to_string(),
            principal: Attribution::Verified(id.principal.to_string()),
        });
        Ok(Ok(()))
    }

    fn publish_as(cx, _topic: String, _payload: String, _principal: String) -> Result<(), ErrorCode> {
        // Speaking for another principal needs a capability no capsule holds yet.
        cx.core.refused("capability-denied: speaking for another principal needs a capability no capsule holds");
        Ok(Err(ErrorCode::CapabilityDenied))
    }

    fn subscribe(cx, pattern: String) -> Result<Resource<Subscription>, ErrorCode> {
        if let Err(d) = ipc::may_subscribe(cx.pkg.subscribe.as_deref(), &pattern, cx.pkg.subscriptions) {
            return Ok(Err(denied(d)));
        }
        let sub = cx.pkg.bus.subscribe(&pattern, &cx.pkg.queued);
        let handle = cx.core.push(Subscription { sub })?;
        cx.pkg.subscriptions += 1;
        Ok(Ok(handle))
    }

    fn get_interceptor_bindings(cx) -> Result<Vec<InterceptorBinding>, ErrorCode> {
        let _ = cx;
        Ok(Ok(Vec::new()))
    }
} }

host_fns! { impl HostSubscription for IpcView<'_> as "astrid:ipc/host.subscription" {
    fn poll(cx, this: Resource<Subscription>) -> Result<IpcEnvelope, ErrorCode> {
        let batch = envelope(cx.core.get(&this)?.sub.take(BATCH, BATCH_BYTES));
        cx.core.moved(payload_bytes(&batch));
        Ok(Ok(batch))
    }

    fn recv(cx, this: Resource<Subscription>, timeout_ms: u64) -> Result<IpcEnvelope, ErrorCode> {
        let started = Instant::now();
        let timeout = Duration::from_millis(timeout_ms);
        let sub = cx.core.get(&this)?.sub.clone();
        let result = if timeout > MAX_RECV {
            Err(ErrorCode::InvalidInput)
        } else {
            match wait::wait_one(&*sub, &cx.core.cancel, Some(started + timeout)) {
                Ok(()) => Ok(envelope(sub.take(BATCH, BATCH_BYTES))),
                Err(WaitError::TimedOut) => Err(ErrorCode::Timeout),
                Err(WaitError::Cancelled) => {
                    cx.core.cancelled();
                    Err(ErrorCode::Closed)
                }
            }
        };
        cx.core.moved(result.as_ref().map_or(0, payload_bytes));
        Ok(result)
    }

    fn subscribe_readiness(cx, this: Resource<Subscription>) -> Resource<Pollable> {
        let sub = cx.core.get(&this)?.sub.clone();
        cx.core.push_child(Pollable::new(sub), &this)
    }

    fn drop(cx, this: Resource<Subscription>) -> () {
        cx.core.delete(this)?;
        cx.pkg.subscriptions -= 1;
        Ok(())
    }
} }
