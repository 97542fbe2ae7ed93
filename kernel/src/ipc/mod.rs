//! `astrid:ipc`'s provider: the in-image bus (`bus.rs`), the subscription resource a
//! capsule holds, and what a capsule's manifest lets it do on the bus. Limits: 128
//! subscriptions per capsule, 1 MiB payloads, 60 s `recv`, 256 messages and 4 MiB per
//! batch; a subscription queues at most 1,024 messages and 4 MiB, a capsule's
//! subscriptions together at most 16 MiB (the oldest are dropped and counted beyond).
//! Nothing here knows WIT.

pub mod bus;

use std::sync::Arc;
use std::time::Duration;

use bus::Subscriber;

/// Subscriptions one capsule may hold.
pub const MAX_SUBSCRIPTIONS: usize = 128;
/// Longest `recv` wait.
pub const MAX_RECV: Duration = Duration::from_secs(60);
/// Messages one `poll` or `recv` returns at most.
pub const BATCH: usize = 256;
/// Bytes (as charged: `bus::Message::cost`) one `poll` or `recv` returns at most,
/// beyond its first message.
pub const BATCH_BYTES: usize = 4 << 20;
/// Bytes all of one capsule's subscriptions may hold queued (unless the image's heap
/// gives it less).
pub const CAPSULE_QUEUE_BYTES: usize = 16 << 20;

/// A capsule's account for the messages its subscriptions hold, `limit` bytes.
pub fn queue_account(limit: usize) -> std::sync::Arc<crate::quota::Account> {
    crate::quota::Account::new("ipc queued bytes", limit)
}

/// `astrid:ipc/host.subscription`: one capsule's end of a subscription on the bus.
pub struct Subscription {
    pub sub: Arc<Subscriber>,
}

/// Why a publish or subscribe is not allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The topic or pattern is malformed, or the payload too large.
    Invalid,
    /// The capsule's manifest does not allow it.
    NotGranted,
    /// The capsule holds its most subscriptions.
    Quota,
}

/// Whether a capsule whose manifest allows `allowed` (`None`: everything) may publish
/// `payload_len` bytes to `topic`.
pub fn may_publish(allowed: Option<&[String]>, topic: &str, payload_len: usize) -> Result<(), Denied> {
    if !bus::valid_topic(topic) || payload_len > bus::MAX_PAYLOAD {
        return Err(Denied::Invalid);
    }
    if allowed.is_some_and(|allowed| !allowed.iter().any(|p| bus::matches(p, topic))) {
        return Err(Denied::NotGranted);
    }
    Ok(())
}

/// Whether a capsule allowed `allowed` and holding `held` subscriptions may subscribe
/// to `pattern`.
pub fn may_subscribe(allowed: Option<&[String]>, pattern: &str, held: usize) -> Result<(), Denied> {
    if !bus::valid_pattern(pattern) {
        return Err(Denied::Invalid);
    }
    if allowed.is_some_and(|allowed| !allowed.iter().any(|p| bus::covers(p, pattern))) {
        return Err(Denied::NotGranted);
    }
    if held >= MAX_SUBSCRIPTIONS {
        return Err(Denied::Quota);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_subscribe_permissions() {
        let chat = ["chat.**".to_string()];
        for (allowed, topic, len, want) in [
            (None, "chat.room", 10, Ok(())),
            (Some(&chat[..]), "chat.room", 10, Ok(())),
            (Some(&chat[..]), "admin.reset", 10, Err(Denied::NotGranted)),
            (None, "chat.room", bus::MAX_PAYLOAD + 1, Err(Denied::Invalid)),
            (None, "", 0, Err(Denied::Invalid)),
        ] {
            assert_eq!(may_publish(allowed, topic, len), want, "publish {topic}");
        }
        for (allowed, pattern, held, want) in [
            (None, "chat.*", 0, Ok(())),
            (Some(&chat[..]), "chat.*", 0, Ok(())),
            (Some(&chat[..]), "**", 0, Err(Denied::NotGranted)),
            (None, "chat.*", MAX_SUBSCRIPTIONS, Err(Denied::Quota)),
        ] {
            assert_eq!(may_subscribe(allowed, pattern, held), want, "subscribe {pattern}");
        }
    }
}
