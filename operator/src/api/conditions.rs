//! Conditions as kstatus and Argo CD read them: Ready, Reconciling, Stalled (and a Job's Complete,
//! Failed). A condition keeps its `lastTransitionTime` while its status stays the same.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition's status, as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(value: bool) -> Self {
        if value { Status::True } else { Status::False }
    }
}

/// Builds conditions for one status write, carrying transition times over from the last one.
pub struct Conditions<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: Time,
    out: Vec<Condition>,
}

impl<'a> Conditions<'a> {
    pub fn new(previous: &'a [Condition], generation: Option<i64>, now: Time) -> Self {
        Conditions {
            previous,
            generation,
            now,
            out: Vec::new(),
        }
    }

    pub fn set(
        mut self,
        type_: &str,
        status: impl Into<Status>,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        let status = status.into().as_str().to_owned();
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| self.now.clone());
        // The API server caps a condition message at 32 KiB.
        let mut message = message.into();
        if message.len() > 32 * 1024 {
            let mut end = 32 * 1024;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.out.push(Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: self.generation,
            last_transition_time,
        });
        self
    }

    pub fn build(self) -> Vec<Condition> {
        self.out
    }
}

/// A timestamp as the API stores it: whole seconds. Status built from finer times would never
/// compare equal to what was written, and every reconcile would write again.
pub fn time(ts: jiff::Timestamp) -> Time {
    Time(jiff::Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

pub fn now() -> Time {
    time(jiff::Timestamp::now())
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    #[test]
    fn transition_time_is_kept_while_the_status_stays() {
        let first = Conditions::new(&[], Some(1), time("2026-01-01T00:00:00Z"))
            .set("Ready", false, "Opening", "opening")
            .build();
        let same = Conditions::new(&first, Some(2), time("2026-01-01T00:01:00Z"))
            .set("Ready", false, "HostUnreachable", "retrying")
            .build();
        assert_eq!(same[0].last_transition_time, time("2026-01-01T00:00:00Z"));
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = Conditions::new(&same, Some(2), time("2026-01-01T00:02:00Z"))
            .set("Ready", true, "Opened", "open")
            .build();
        assert_eq!(flipped[0].last_transition_time, time("2026-01-01T00:02:00Z"));
        assert_eq!(flipped[0].status, "True");
        assert_eq!(find(&flipped, "Ready").map(|c| c.reason.as_str()), Some("Opened"));
    }
}
