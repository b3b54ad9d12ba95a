//! Leader election on the real API server: one leader at a time, a prompt hand-over on release,
//! a bounded takeover after a crash, and a leader that learns it lost the lease.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::{
    api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use pssession_operator::leader::{LeaderElectionConfig, LeaderElector};
use tokio::task::JoinHandle;

const LEASE_NAME: &str = "pssession-operator-leader";
/// Short, so the test takes seconds; the default is 15 s.
const LEASE_DURATION: Duration = Duration::from_secs(3);
const GRACE: Duration = Duration::from_secs(1);
const RETRY_PERIOD: Duration = Duration::from_secs(1);

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("pssession_operator=info")),
        )
        .with_test_writer()
        .try_init();
}

fn elector(client: &kube::Client, namespace: &str, identity: &str) -> Result<LeaderElector> {
    let config = LeaderElectionConfig {
        lease_duration: LEASE_DURATION,
        grace: GRACE,
        retry_period: RETRY_PERIOD,
        ..LeaderElectionConfig::new(LEASE_NAME, namespace, identity)
    };
    Ok(LeaderElector::new(client.clone(), config)?)
}

/// Runs `acquire` in a task that hands back the elector and the moment it began to lead.
fn stand_by(mut elector: LeaderElector) -> JoinHandle<Result<(LeaderElector, Instant)>> {
    tokio::spawn(async move {
        elector.acquire().await?;
        Ok((elector, Instant::now()))
    })
}

async fn holder(leases: &Api<Lease>) -> Result<Option<String>> {
    let lease = leases.get(LEASE_NAME).await?;
    Ok(lease.spec.and_then(|spec| spec.holder_identity))
}

#[tokio::test]
async fn standby_takes_over_on_release_and_after_a_crash() -> Result<()> {
    init_logs();
    let ns = e2e::test_namespace("leader").await;
    let leases = Api::<Lease>::namespaced(ns.client.clone(), &ns.name);

    let mut a = elector(&ns.client, &ns.name, "replica-a")?;
    tokio::time::timeout(Duration::from_secs(10), a.acquire())
        .await
        .context("replica-a did not lead an uncontended lease within 10 s")??;
    ensure!(a.is_leader());
    ensure!(holder(&leases).await?.as_deref() == Some("replica-a"));

    // The standby waits while the leader renews, through several lease durations.
    let b = stand_by(elector(&ns.client, &ns.name, "replica-b")?);
    tokio::time::sleep(2 * LEASE_DURATION + GRACE).await;
    ensure!(
        !b.is_finished(),
        "replica-b led while replica-a held the lease: {:?}",
        b.await?
    );
    ensure!(a.is_leader(), "replica-a lost leadership while renewing");
    ensure!(holder(&leases).await?.as_deref() == Some("replica-a"));

    // Graceful release: the standby takes over at once, not at the lease's expiry.
    let a_lost = a.lost();
    let released_at = Instant::now();
    a.release().await;
    let (b, b_leads_at) = tokio::time::timeout(LEASE_DURATION, b)
        .await
        .context("replica-b did not lead within a lease duration of the release")???;
    let handover = b_leads_at.duration_since(released_at);
    eprintln!("hand-over after release: {handover:?}");
    ensure!(
        handover < RETRY_PERIOD,
        "hand-over took {handover:?}, not promptly (under the {RETRY_PERIOD:?} retry period)"
    );
    tokio::time::timeout(Duration::from_secs(1), a_lost)
        .await
        .context("replica-a's lost() did not fire on release")?;
    ensure!(b.is_leader());
    ensure!(holder(&leases).await?.as_deref() == Some("replica-b"));

    // A leader that stops renewing (a crash): the standby waits for the lease to expire, then
    // leads within the bound.
    let c = stand_by(elector(&ns.client, &ns.name, "replica-c")?);
    tokio::time::sleep(LEASE_DURATION).await;
    ensure!(
        !c.is_finished(),
        "replica-c led while replica-b held the lease: {:?}",
        c.await?
    );
    let crashed_at = Instant::now();
    drop(b);
    let bound = 2 * (LEASE_DURATION + RETRY_PERIOD);
    let (c, c_leads_at) = tokio::time::timeout(bound, c)
        .await
        .with_context(|| format!("replica-c did not take over within {bound:?} of the crash"))???;
    let takeover = c_leads_at.duration_since(crashed_at);
    eprintln!("takeover after a crash: {takeover:?} (bound {bound:?})");
    ensure!(takeover <= bound, "takeover took {takeover:?}, over {bound:?}");
    // replica-b renewed at most lease duration - grace before the crash, so its lease was
    // valid for at least `GRACE` more: leading sooner would have made two leaders.
    ensure!(
        takeover >= GRACE,
        "replica-c led {takeover:?} after the crash, before replica-b's lease could have expired"
    );
    ensure!(holder(&leases).await?.as_deref() == Some("replica-c"));

    c.release().await;
    ensure!(
        holder(&leases).await?.is_none(),
        "the lease is still held after release"
    );
    Ok(())
}

#[tokio::test]
async fn leader_learns_when_the_lease_is_taken_from_it() -> Result<()> {
    init_logs();
    let ns = e2e::test_namespace("leader-lost").await;
    let leases = Api::<Lease>::namespaced(ns.client.clone(), &ns.name);
    let mut a = elector(&ns.client, &ns.name, "replica-a")?;
    tokio::time::timeout(Duration::from_secs(10), a.acquire())
        .await
        .context("replica-a did not lead within 10 s")??;
    let mut leading = a.subscribe();
    ensure!(*leading.borrow_and_update());

    // Someone else writes itself in as holder (an admin, or a replica with a skewed clock).
    let taken_at = Instant::now();
    let patch = serde_json::json!({
        "spec": {
            "holderIdentity": "intruder",
            "renewTime": MicroTime(Timestamp::now()),
            "leaseDurationSeconds": LEASE_DURATION.as_secs(),
        }
    });
    leases
        .patch(LEASE_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tokio::time::timeout(Duration::from_secs(2), a.lost())
        .await
        .context("the leader did not notice within 2 s that its lease was taken")?;
    eprintln!("loss noticed after {:?}", taken_at.elapsed());
    ensure!(!a.is_leader());
    ensure!(leading.has_changed()? && !*leading.borrow_and_update());
    // It must not write itself back in: the intruder keeps the lease it took.
    tokio::time::sleep(GRACE).await;
    ensure!(holder(&leases).await?.as_deref() == Some("intruder"));
    a.release().await;
    ensure!(holder(&leases).await?.as_deref() == Some("intruder"));
    Ok(())
}
