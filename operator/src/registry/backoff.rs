//! Retry delays with jitter, so sessions that failed together do not retry together.

use std::time::Duration;

/// After Broken, PowerShell would give up; the operator keeps trying, at most this far apart.
pub const BROKEN_RETRY_CAP: Duration = Duration::from_secs(300);
/// Between the retries before Broken.
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(60);

/// The delay before retry number `attempt` (1-based): 1 s, 2 s, 4 s, ... capped at `cap`, then
/// scaled down by up to a fifth: never later than the cap promises.
pub fn delay(attempt: u32, cap: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let base = RETRY_BASE.saturating_mul(1 << exponent).min(cap);
    base.mul_f64(0.8 + 0.2 * jitter())
}

/// Retries before Broken.
pub fn retry_delay(attempt: u32) -> Duration {
    delay(attempt, RETRY_CAP)
}

/// A number in [0, 1), good enough to spread retries: no cryptography depends on it.
pub fn jitter() -> f64 {
    f64::from(rand::random::<u32>()) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped_with_jitter() {
        for _ in 0..100 {
            let first = retry_delay(1);
            assert!(first >= Duration::from_millis(800) && first <= Duration::from_secs(1));
            let fourth = retry_delay(4);
            assert!(fourth >= Duration::from_millis(6400) && fourth <= Duration::from_secs(8));
            let late = delay(40, BROKEN_RETRY_CAP);
            assert!(late >= Duration::from_secs(240) && late <= BROKEN_RETRY_CAP);
        }
    }
}
