//! Checks that async code leaves no task behind: each `#[tokio::test]` has a runtime of its own,
//! so its count of alive tasks is the test's own.

use std::time::Duration;

use tokio::time::Instant;

/// Tasks alive on the current runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// Waits (at most 5 s) until the runtime is back to `baseline` tasks; panics naming `what` if not.
pub async fn assert_tasks_settle(baseline: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive_tasks() > baseline {
        assert!(
            Instant::now() < deadline,
            "{what}: {} tasks alive, {baseline} before",
            alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
