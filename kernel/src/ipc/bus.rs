//! The image's message bus: capsules publish to topics and subscribe with patterns.
//! Topics are dot-separated segments; in a pattern `*` matches one segment and a final
//! `**` matches the rest (zero or more segments). Each subscription has a bounded queue;
//! when it is full the oldest message is dropped and counted, never silently lost.
//!
//! A published message is stored once and shared by every subscription it reaches.
//! Each queued copy is charged to the subscribing capsule's account (`queued`) at its
//! full cost, so one capsule's subscriptions together hold at most its account's limit
//! whatever others publish, and the bus as a whole holds at most the sum of those limits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use crate::quota::{Account, Charge};
use crate::wait::{Notifier, Readiness};

/// Messages one subscription holds before the oldest is dropped.
pub const QUEUE: usize = 1024;
/// Bytes one subscription holds before the oldest is dropped (at least one largest
/// message fits).
pub const QUEUE_BYTES: usize = 4 << 20;
/// What a queued message costs beyond its text: its bookkeeping, charged so that many
/// empty messages are not free.
pub const MESSAGE_OVERHEAD: usize = 128;
/// Largest payload.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Longest topic or pattern.
pub const MAX_TOPIC: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribution {
    Verified(String),
    Claimed(String),
    System,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    pub source: String,
    pub principal: Attribution,
}

impl Message {
    /// What one queued copy is charged.
    pub fn cost(&self) -> usize {
        let principal = match &self.principal {
            Attribution::Verified(p) | Attribution::Claimed(p) => p.len(),
            Attribution::System => 0,
        };
        self.payload.len() + self.topic.len() + self.source.len() + principal + MESSAGE_OVERHEAD
    }
}

/// What a subscriber takes in one go, with what it missed since the last take.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub messages: Vec<Arc<Message>>,
    /// Messages dropped because this subscription's queue was full.
    pub dropped: u64,
    /// How many times the queue overflowed (the subscriber lagged behind).
    pub lagged: u64,
}

pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC
        && topic.split('.').all(|s| !s.is_empty() && s != "*" && s != "**" && !s.contains(char::is_whitespace))
}

pub fn valid_pattern(pattern: &str) -> bool {
    let segments: Vec<&str> = pattern.split('.').collect();
    !pattern.is_empty()
        && pattern.len() <= MAX_TOPIC
        && segments.iter().enumerate().all(|(i, s)| {
            !s.is_empty() && !s.contains(char::is_whitespace) && (*s != "**" || i == segments.len() - 1)
        })
}

pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = topic.split('.');
    loop {
        match (p.next(), t.next()) {
            (Some("**"), _) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic `requested` can match is also matched by `allowed` (a
/// subscription falls within what a manifest grants).
pub fn covers(allowed: &str, requested: &str) -> bool {
    let mut a = allowed.split('.');
    let mut r = requested.split('.');
    loop {
        match (a.next(), r.next()) {
            (Some("**"), _) => return true,
            (Some("*"), Some(x)) if x != "**" => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A message in one subscription's queue, with what it costs its subscriber.
struct Queued {
    message: Arc<Message>,
    charge: Charge,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Queued>,
    bytes: usize,
    dropped: u64,
    lagged: u64,
    overflowing: bool,
}

impl Queue {
    /// Drops the oldest message, counting the loss.
    fn drop_oldest(&mut self) {
        if let Some(old) = self.messages.pop_front() {
            self.bytes -= old.charge.amount();
        }
        self.count_loss();
    }

    fn count_loss(&mut self) {
        self.dropped += 1;
        if !self.overflowing {
            self.lagged += 1;
            self.overflowing = true;
        }
    }
}

/// One subscription's end of the bus: a readiness source for `subscribe-readiness`.
pub struct Subscriber {
    pattern: String,
    queue: Mutex<Queue>,
    notifier: Notifier,
    /// The subscribing capsule's account for queued bytes.
    account: Arc<Account>,
}

impl Subscriber {
    /// Takes up to `max` messages and about `max_bytes` of them (always at least one
    /// when any is queued, so no message is too large to be taken).
    pub fn take(&self, max: usize, max_bytes: usize) -> Batch {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        while messages.len() < max {
            let Some(next) = q.messages.front() else { break };
            let cost = next.charge.amount();
            if !messages.is_empty() && bytes + cost > max_bytes {
                break;
            }
            let queued = q.messages.pop_front().expect("the front exists");
            q.bytes -= cost;
            bytes += cost;
            messages.push(queued.message);
        }
        let batch = Batch { messages, dropped: q.dropped, lagged: q.lagged };
        q.dropped = 0;
        q.lagged = 0;
        q.overflowing = false;
        batch
    }

    /// Queues `message`, dropping the oldest while this queue is full or the capsule's
    /// account cannot pay for it; drops the message itself (counted) when the capsule's
    /// other subscriptions hold its whole account.
    fn deliver(&self, message: &Arc<Message>) {
        let cost = message.cost();
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            while q.messages.len() >= QUEUE || q.bytes + cost > QUEUE_BYTES.max(cost) {
                q.drop_oldest();
            }
            loop {
                match self.account.charge(cost) {
                    Ok(charge) => {
                        q.bytes += cost;
                        q.messages.push_back(Queued { message: message.clone(), charge });
                        break;
                    }
                    Err(_) if !q.messages.is_empty() => q.drop_oldest(),
                    Err(_) => {
                        // The capsule's other subscriptions hold its whole account: this
                        // message is the one lost.
                        q.count_loss();
                        return;
                    }
                }
            }
        }
        self.notifier.notify();
    }
}

impl Readiness for Subscriber {
    fn is_ready(&self) -> bool {
        !self.queue.lock().unwrap_or_else(|e| e.into_inner()).messages.is_empty()
    }
    fn notifier(&self) -> Option<&Notifier> {
        Some(&self.notifier)
    }
}

/// The bus every capsule of the image shares.
#[derive(Default)]
pub struct Bus {
    subscribers: Mutex<Vec<Weak<Subscriber>>>,
}

impl Bus {
    /// A subscription whose queued messages are charged to `account`.
    pub fn subscribe(&self, pattern: &str, account: &Arc<Account>) -> Arc<Subscriber> {
        let sub = Arc::new(Subscriber {
            pattern: pattern.to_string(),
            queue: Mutex::new(Queue::default()),
            notifier: Notifier::default(),
            account: account.clone(),
        });
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|w| w.strong_count() > 0);
        subs.push(Arc::downgrade(&sub));
        sub
    }

    /// Delivers to every live matching subscription (one shared copy); returns how
    /// many got it.
    pub fn publish(&self, message: Message) -> usize {
        let message = Arc::new(message);
        let targets: Vec<Arc<Subscriber>> = {
            let subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
            subs.iter().filter_map(Weak::upgrade).filter(|s| matches(&s.pattern, &message.topic)).collect()
        };
        for s in &targets {
            s.deliver(&message);
        }
        targets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str) -> Message {
        Message { topic: topic.into(), payload: "p".into(), source: "t".into(), principal: Attribution::System }
    }

    fn big(topic: &str, bytes: usize) -> Message {
        Message { payload: "x".repeat(bytes), ..msg(topic) }
    }

    fn account() -> Arc<Account> {
        Account::new("ipc queue bytes", usize::MAX)
    }

    #[test]
    fn patterns_match_segments_and_tails() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.**", "a.b.c"));
        assert!(matches("a.**", "a"));
        assert!(matches("**", "x.y"));
        assert!(valid_pattern("a.*.c.**") && !valid_pattern("a.**.c") && !valid_pattern("a..b"));
        assert!(valid_topic("a.b") && !valid_topic("a.*") && !valid_topic("a b"));
    }

    #[test]
    fn full_queues_drop_the_oldest_and_say_so() {
        let bus = Bus::default();
        let sub = bus.subscribe("t.**", &account());
        for i in 0..QUEUE + 5 {
            bus.publish(Message { payload: i.to_string(), ..msg("t.x") });
        }
        let batch = sub.take(usize::MAX, usize::MAX);
        assert_eq!(batch.messages.len(), QUEUE);
        assert_eq!(batch.messages[0].payload, "5");
        assert_eq!((batch.dropped, batch.lagged), (5, 1));
        assert_eq!(sub.take(10, usize::MAX), Batch::default());
    }

    #[test]
    fn a_queue_holds_at_most_its_bytes() {
        let bus = Bus::default();
        let sub = bus.subscribe("t", &account());
        for _ in 0..5 {
            bus.publish(big("t", MAX_PAYLOAD));
        }
        let per = big("t", MAX_PAYLOAD).cost();
        let fits = QUEUE_BYTES / per;
        let batch = sub.take(usize::MAX, usize::MAX);
        assert_eq!(batch.messages.len(), fits);
        assert_eq!(batch.dropped, (5 - fits) as u64);
    }

    /// The fan-out attack: one capsule holding 128 `**` subscriptions while 1 MiB
    /// payloads are published. What it holds never passes its account, and every queued
    /// copy shares one allocation.
    #[test]
    fn fan_out_is_bounded_by_the_subscribers_account_and_shares_one_copy() {
        let bus = Bus::default();
        let attacker = Account::new("ipc queue bytes", 16 << 20);
        let subs: Vec<_> = (0..128).map(|_| bus.subscribe("**", &attacker)).collect();
        for _ in 0..64 {
            assert_eq!(bus.publish(big("flood.x", MAX_PAYLOAD)), 128);
            assert!(attacker.used() <= attacker.limit(), "{} over {}", attacker.used(), attacker.limit());
        }
        let held: usize = subs.iter().map(|s| s.queue.lock().unwrap().messages.len()).sum();
        assert!(held > 0 && held * big("f", MAX_PAYLOAD).cost() <= attacker.limit());
        let batches: Vec<Batch> = subs.iter().map(|s| s.take(usize::MAX, usize::MAX)).collect();
        assert!(batches.iter().map(|b| b.dropped).sum::<u64>() > 0, "losses are counted");
        assert_eq!(attacker.used(), 0, "taking gives the charge back");
    }

    #[test]
    fn a_message_the_account_cannot_pay_for_is_lost_and_counted() {
        let bus = Bus::default();
        let tight = Account::new("ipc queue bytes", msg("a").cost());
        let first = bus.subscribe("a", &tight);
        let second = bus.subscribe("a", &tight);
        bus.publish(msg("a"));
        // `first` holds the whole account; `second` cannot pay and has nothing to drop.
        assert_eq!(first.take(10, usize::MAX).messages.len(), 1);
        let lost = second.take(10, usize::MAX);
        assert_eq!((lost.messages.len(), lost.dropped, lost.lagged), (0, 1, 1));
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_but_always_takes_one() {
        let bus = Bus::default();
        let sub = bus.subscribe("t", &account());
        for _ in 0..3 {
            bus.publish(big("t", 1000));
        }
        let cost = big("t", 1000).cost();
        for (max_bytes, want) in [(0, 1), (cost, 1), (2 * cost, 2), (usize::MAX, 3)] {
            let sub = bus.subscribe("t", &account());
            for _ in 0..3 {
                bus.publish(big("t", 1000));
            }
            assert_eq!(sub.take(usize::MAX, max_bytes).messages.len(), want, "max_bytes {max_bytes}");
        }
        assert_eq!(sub.take(2, usize::MAX).messages.len(), 2);
    }

    #[test]
    fn dropped_subscriptions_stop_receiving() {
        let bus = Bus::default();
        let a = bus.subscribe("x", &account());
        let b = bus.subscribe("x", &account());
        drop(b);
        assert_eq!(bus.publish(msg("x")), 1);
        assert!(a.is_ready());
    }
}
