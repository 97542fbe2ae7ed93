//! The image's message bus: capsules publish to topics and subscribe with patterns.
//! Topics are dot-separated segments; in a pattern `*` matches one segment and a final
//! `**` matches the rest (zero or more segments). Each subscription has a bounded queue;
//! when it is full the oldest message is dropped and counted, never silently lost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use crate::wait::{Notifier, Readiness};

/// Messages one subscription holds before the oldest is dropped.
pub const QUEUE: usize = 1024;
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

/// What a subscriber takes in one go, with what it missed since the last take.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub messages: Vec<Message>,
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

struct Queue {
    messages: VecDeque<Message>,
    dropped: u64,
    lagged: u64,
    overflowing: bool,
}

/// One subscription's end of the bus: a readiness source for `subscribe-readiness`.
pub struct Subscriber {
    pattern: String,
    queue: Mutex<Queue>,
    notifier: Notifier,
}

impl Subscriber {
    pub fn take(&self, max: usize) -> Batch {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.messages.len().min(max);
        let batch = Batch { messages: q.messages.drain(..n).collect(), dropped: q.dropped, lagged: q.lagged };
        q.dropped = 0;
        q.lagged = 0;
        q.overflowing = false;
        batch
    }

    fn deliver(&self, message: &Message) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.messages.len() >= QUEUE {
                q.messages.pop_front();
                q.dropped += 1;
                if !q.overflowing {
                    q.lagged += 1;
                    q.overflowing = true;
                }
            }
            q.messages.push_back(message.clone());
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
    pub fn subscribe(&self, pattern: &str) -> Arc<Subscriber> {
        let sub = Arc::new(Subscriber {
            pattern: pattern.to_string(),
            queue: Mutex::new(Queue { messages: VecDeque::new(), dropped: 0, lagged: 0, overflowing: false }),
            notifier: Notifier::default(),
        });
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|w| w.strong_count() > 0);
        subs.push(Arc::downgrade(&sub));
        sub
    }

    /// Delivers to every live matching subscription; returns how many got it.
    pub fn publish(&self, message: Message) -> usize {
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
        let sub = bus.subscribe("t.**");
        for i in 0..QUEUE + 5 {
            bus.publish(Message { payload: i.to_string(), ..msg("t.x") });
        }
        let batch = sub.take(usize::MAX);
        assert_eq!(batch.messages.len(), QUEUE);
        assert_eq!(batch.messages[0].payload, "5");
        assert_eq!((batch.dropped, batch.lagged), (5, 1));
        assert_eq!(sub.take(10), Batch::default());
    }

    #[test]
    fn dropped_subscriptions_stop_receiving() {
        let bus = Bus::default();
        let a = bus.subscribe("x");
        let b = bus.subscribe("x");
        drop(b);
        assert_eq!(bus.publish(msg("x")), 1);
        assert!(a.is_ready());
    }
}
