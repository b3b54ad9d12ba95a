//! Status writes as a good citizen of a shared API server (DESIGN.md): at most one write per object
//! per interval, the latest state winning, and a token bucket over all writes of the process.
//!
//! A reconcile that may not write now is told how long to wait and requeues; when it runs again it
//! computes status afresh, so intermediate states are coalesced, never queued.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The write budget.
#[derive(Clone, Copy, Debug)]
pub struct WriteLimits {
    /// Least time between two status writes of one object.
    pub per_object_interval: Duration,
    /// Sustained writes per second for the whole process.
    pub rate: f64,
    /// Writes allowed at once above the rate.
    pub burst: f64,
}

impl Default for WriteLimits {
    fn default() -> Self {
        WriteLimits {
            per_object_interval: Duration::from_secs(1),
            rate: 50.0,
            burst: 100.0,
        }
    }
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Decides whether a write may go now.
pub struct WriteGate {
    limits: WriteLimits,
    bucket: Mutex<Bucket>,
    last: Mutex<HashMap<String, Instant>>,
    /// Tokens taken ahead for objects told to wait: when they come back at that time they write
    /// without asking again, so waiting writers queue in order instead of all retrying at once.
    reserved: Mutex<HashMap<String, Instant>>,
}

impl WriteGate {
    pub fn new(limits: WriteLimits) -> Self {
        WriteGate {
            limits,
            bucket: Mutex::new(Bucket {
                tokens: limits.burst,
                refilled: Instant::now(),
            }),
            last: Mutex::new(HashMap::new()),
            reserved: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` takes the write's token and records it; `Err` says how long to wait. An object's first
    /// write is not held back by the per-object interval (kstatus waits for it).
    pub fn admit(&self, uid: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = reserved.get(uid).copied() {
            // A requeue may fire a little early; a few milliseconds do not break the rate.
            if at <= now + Duration::from_millis(5) {
                reserved.remove(uid);
                last.insert(uid.to_owned(), now);
                return Ok(());
            }
            return Err(at - now);
        }
        if let Some(at) = last.get(uid) {
            let since = now.duration_since(*at);
            if since < self.limits.per_object_interval {
                return Err(self.limits.per_object_interval - since);
            }
        }
        let wait = self.take();
        if !wait.is_zero() {
            reserved.insert(uid.to_owned(), now + wait);
            return Err(wait);
        }
        last.insert(uid.to_owned(), now);
        Ok(())
    }

    /// Takes a token for a write that is not coalesced (an event, a finalizer, an owner
    /// reference, a delete) and says how long to wait before sending it, so every write of the
    /// process counts against one budget.
    pub fn take(&self) -> Duration {
        let now = Instant::now();
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.limits.rate).min(self.limits.burst) - 1.0;
        bucket.refilled = now;
        if bucket.tokens < 0.0 {
            Duration::from_secs_f64(-bucket.tokens / self.limits.rate.max(0.001))
        } else {
            Duration::ZERO
        }
    }

    /// Starts an object's interval now without a write: what happens within it is coalesced into
    /// one write at its end (a job that ends within a second is written once, already ended).
    pub fn hold(&self, uid: &str) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_owned(), Instant::now());
    }

    pub fn forget(&self, uid: &str) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
        self.reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_write_per_object_per_interval_and_a_bounded_total() {
        let gate = WriteGate::new(WriteLimits {
            per_object_interval: Duration::from_secs(60),
            rate: 0.001,
            burst: 3.0,
        });
        assert!(gate.admit("a").is_ok());
        let wait = gate.admit("a").expect_err("too soon");
        assert!(wait > Duration::from_secs(59), "{wait:?}");
        assert!(gate.admit("b").is_ok());
        assert!(gate.admit("c").is_ok());
        let wait = gate.admit("d").expect_err("the bucket is empty");
        assert!(gate.admit("d").is_err(), "d waits for its reserved token");
        let later = gate.admit("f").expect_err("f queues behind d");
        assert!(later > wait, "{later:?} after {wait:?}");
        assert!(gate.take() > later, "other writes queue behind them");
        gate.hold("e");
        assert!(gate.admit("e").expect_err("held") > Duration::from_secs(59));
    }
}
