//! Leader election over a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! runs the controllers and owns the live remote sessions.
//!
//! Built on `kube-lease-manager`, which takes and renews the Lease with server-side apply (a
//! conflict, not a silent overwrite, when two replicas race). Two things it does not do are
//! added here, both from one watch on the Lease object:
//! - a prompt hand-over: a standby of the crate sleeps until the lease it last read expires, so
//!   a graceful release would go unnoticed for up to a lease duration. The watch sees the
//!   release and the standby takes the lease at once.
//! - a bounded loss: the crate only reports a lost lease once someone else holds it. The watch
//!   shows each renewal this replica made (its `renewTime` is written with this process's own
//!   clock, so no skew between nodes enters); when none lands before the lease would expire,
//!   leadership counts as lost, before a standby may take over.

use std::{
    future::Future,
    pin::Pin,
    time::{Duration, SystemTime},
};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

/// Where and how to elect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    pub lease_name: String,
    pub namespace: String,
    /// Unique per replica (the pod name, say); written as the Lease's `holderIdentity`.
    pub identity: String,
    /// How long a lease stays valid after its last renewal; after a crash, a standby takes over
    /// within about this long. Whole seconds (the Lease API's unit), at least 2 s.
    pub lease_duration: Duration,
    /// kube-lease-manager's "grace": the leader renews this long before the lease expires, so
    /// it also bounds the clock skew between nodes that is tolerated. Whole seconds, at least
    /// 1 s and less than `lease_duration`.
    pub grace: Duration,
    /// The wait before trying again after an API error.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
    pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

    /// client-go's defaults: a 15 s lease, renewed 5 s before it ends, retries every 2 s.
    pub fn new(
        lease_name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            lease_name: lease_name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Self::DEFAULT_LEASE_DURATION,
            grace: Self::DEFAULT_GRACE,
            retry_period: Self::DEFAULT_RETRY_PERIOD,
        }
    }

    fn validate(&self) -> Result<(), LeaderError> {
        let invalid = |reason| Err(LeaderError::InvalidConfig { reason });
        if self.lease_name.is_empty() || self.namespace.is_empty() || self.identity.is_empty() {
            return invalid("lease name, namespace and identity must not be empty");
        }
        if self.lease_duration.subsec_nanos() != 0 || self.grace.subsec_nanos() != 0 {
            return invalid("lease duration and grace are whole seconds");
        }
        if self.grace.is_zero() || self.grace >= self.lease_duration {
            return invalid("grace must be at least 1 s and less than the lease duration");
        }
        if i32::try_from(self.lease_duration.as_secs()).is_err() {
            return invalid("lease duration does not fit the Lease's leaseDurationSeconds");
        }
        if self.retry_period.is_zero() {
            return invalid("retry period must be positive");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election config: {reason}")]
    InvalidConfig { reason: &'static str },
    /// An error retrying cannot fix: the Lease API refused this identity (RBAC) or the namespace
    /// does not exist.
    #[error("cannot use Lease {namespace}/{lease}: {source}")]
    Api {
        namespace: String,
        lease: String,
        #[source]
        source: LeaseManagerError,
    },
}

/// Wins and holds one Lease for this replica. See the module documentation.
///
/// Dropping it without [`release`](Self::release) stops renewing and leaves the lease to expire,
/// as a crash would.
pub struct LeaderElector {
    client: Client,
    config: LeaderElectionConfig,
    leading: watch::Sender<bool>,
    holder: Option<Holder>,
}

/// The task renewing a lease this replica won.
struct Holder {
    release: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .field("leading", &*self.leading.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for LeaderElector {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.take() {
            holder.task.abort();
        }
    }
}

type LeaseEvents = BoxStream<'static, Result<watcher::Event<Lease>, watcher::Error>>;

impl LeaderElector {
    pub fn new(client: Client, config: LeaderElectionConfig) -> Result<Self, LeaderError> {
        config.validate()?;
        Ok(Self {
            client,
            config,
            leading: watch::Sender::new(false),
            holder: None,
        })
    }

    pub fn config(&self) -> &LeaderElectionConfig {
        &self.config
    }

    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// `true` while this replica leads; changes to `false` when leadership is lost or released.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Resolves when this replica stops leading (at once if it does not lead): select on it
    /// beside the controllers after [`acquire`](Self::acquire), and stop them when it fires.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut leading = self.leading.subscribe();
        async move {
            // An error means the elector is gone, which ends leadership too.
            let _ = leading.wait_for(|leading| !*leading).await;
        }
    }

    /// Waits until this replica leads (returns at once if it already does). API errors are
    /// logged and retried every `retry_period`, except those retrying cannot fix (RBAC, a
    /// missing namespace). Cancel-safe: dropping the future gives up the attempt, though a
    /// lease won in the very last moment then stays held until it expires.
    pub async fn acquire(&mut self) -> Result<(), LeaderError> {
        if self.is_leader() {
            return Ok(());
        }
        if let Some(old) = self.holder.take() {
            // It ended when leadership was lost; nothing is left to release.
            old.task.abort();
        }
        let config = &self.config;
        tracing::info!(
            identity = %config.identity,
            lease = %config.lease_name,
            namespace = %config.namespace,
            lease_duration = ?config.lease_duration,
            "waiting to lead"
        );
        let mut events = lease_events(&self.client, config);
        let mut last_holder: Option<String> = None;
        loop {
            let manager = match self.manager().await {
                Ok(manager) => manager,
                Err(error) => {
                    self.retry_or_fail(error).await?;
                    continue;
                }
            };
            let outcome = {
                let mut changed = std::pin::pin!(manager.changed());
                loop {
                    tokio::select! {
                        changed = &mut changed => break Some(changed),
                        event = events.next() => match lease_of(event) {
                            Some(lease) => {
                                let holder = holder_of(&lease);
                                if holder.is_none() {
                                    // Released (or never held): read it again now rather than at
                                    // the expiry the crate remembers. When no holder was seen, the
                                    // manager may still have read one just before the release.
                                    match last_holder.take() {
                                        Some(previous) => tracing::info!(
                                            identity = %config.identity,
                                            lease = %config.lease_name,
                                            previous_holder = %previous,
                                            "lease released, taking it"
                                        ),
                                        None => tracing::debug!(
                                            identity = %config.identity,
                                            lease = %config.lease_name,
                                            "lease is free, taking it"
                                        ),
                                    }
                                    break None;
                                }
                                if holder != last_holder.as_deref() && holder != Some(config.identity.as_str()) {
                                    tracing::info!(
                                        identity = %config.identity,
                                        lease = %config.lease_name,
                                        holder = holder.unwrap_or(""),
                                        "lease held by another replica, standing by"
                                    );
                                    last_holder = holder.map(str::to_owned);
                                }
                            }
                            None => continue,
                        },
                    }
                }
            };
            match outcome {
                Some(Ok(true)) => {
                    self.lead(manager, events);
                    return Ok(());
                }
                // Only a leader can see the lock change to false; a standby just tries again.
                Some(Ok(false)) | None => {}
                Some(Err(error)) => self.retry_or_fail(error).await?,
            }
        }
    }

    /// Gives the lease up so a standby takes over at once instead of after expiry. Errors are
    /// logged: at shutdown nothing better can be done with them, and the lease then expires.
    pub async fn release(mut self) {
        let Some(holder) = self.holder.take() else {
            return;
        };
        // The task releases, logs, and marks leadership over; if it already ended (leadership
        // was lost), there is nothing to release.
        let _ = holder.release.send(());
        let bound = self.config.lease_duration;
        let mut task = holder.task;
        if tokio::time::timeout(bound, &mut task).await.is_err() {
            task.abort();
            self.leading.send_replace(false);
            tracing::warn!(
                identity = %self.config.identity,
                lease = %self.config.lease_name,
                waited = ?bound,
                "releasing the lease timed out; it will expire instead"
            );
        }
    }

    async fn manager(&self) -> Result<LeaseManager, LeaseManagerError> {
        let config = &self.config;
        LeaseManagerBuilder::new(self.client.clone(), config.lease_name.clone())
            .with_namespace(config.namespace.clone())
            .with_identity(config.identity.clone())
            .with_duration(config.lease_duration.as_secs())
            .with_grace(config.grace.as_secs())
            .with_create_mode(LeaseCreateMode::AutoCreate)
            .build()
            .await
    }

    async fn retry_or_fail(&self, error: LeaseManagerError) -> Result<(), LeaderError> {
        let config = &self.config;
        if is_permanent(&error) {
            tracing::error!(
                identity = %config.identity,
                lease = %config.lease_name,
                namespace = %config.namespace,
                %error,
                "cannot take part in leader election"
            );
            return Err(LeaderError::Api {
                namespace: config.namespace.clone(),
                lease: config.lease_name.clone(),
                source: error,
            });
        }
        tracing::warn!(
            identity = %config.identity,
            lease = %config.lease_name,
            %error,
            retry_in = ?config.retry_period,
            "leader election step failed, retrying"
        );
        tokio::time::sleep(config.retry_period).await;
        Ok(())
    }

    fn lead(&mut self, manager: LeaseManager, events: LeaseEvents) {
        let config = &self.config;
        tracing::info!(
            identity = %config.identity,
            lease = %config.lease_name,
            namespace = %config.namespace,
            "leading"
        );
        self.leading.send_replace(true);
        let (release, released) = oneshot::channel();
        let task = tokio::spawn(hold(
            manager,
            events,
            self.leading.clone(),
            released,
            config.clone(),
        ));
        self.holder = Some(Holder { release, task });
    }
}

/// Renews the lease until it is released or lost.
async fn hold(
    manager: LeaseManager,
    mut events: LeaseEvents,
    leading: watch::Sender<bool>,
    mut released: oneshot::Receiver<()>,
    config: LeaderElectionConfig,
) {
    // The crate renews `grace` before expiry; a renewal still unseen halfway through the grace
    // is taken as failed, which leaves the other half for this replica to stop acting before
    // a standby may take the lease.
    let margin = config.grace / 2;
    let mut valid_until = SystemTime::now() + config.lease_duration;
    let mut changed: Pin<Box<dyn Future<Output = Result<bool, LeaseManagerError>> + Send + '_>> =
        Box::pin(manager.changed());
    let lost_because: &'static str = loop {
        let deadline = tokio::time::Instant::now()
            + until(valid_until.checked_sub(margin).unwrap_or(SystemTime::UNIX_EPOCH));
        tokio::select! {
            biased;
            _ = &mut released => {
                drop(changed);
                release(&manager, &config).await;
                leading.send_replace(false);
                return;
            }
            renewed = &mut changed => match renewed {
                Ok(true) => changed = Box::pin(manager.changed()),
                Ok(false) => break "LeaseHeldByOther",
                Err(error) => {
                    tracing::warn!(
                        identity = %config.identity,
                        lease = %config.lease_name,
                        %error,
                        valid_for = ?until(valid_until),
                        "renewing the lease failed, retrying"
                    );
                    let retry = config.retry_period;
                    let manager = &manager;
                    changed = Box::pin(async move {
                        tokio::time::sleep(retry).await;
                        manager.changed().await
                    });
                }
            },
            event = events.next() => {
                if let Some(lease) = lease_of(event) {
                    match holder_of(&lease) {
                        Some(holder) if holder == config.identity => {
                            // A re-list may replay an older renewal; never move backwards.
                            if let Some(until) = expiry_of(&lease) {
                                valid_until = valid_until.max(until);
                            }
                        }
                        Some(_) => break "LeaseHeldByOther",
                        // Cleared or deleted by someone else: not ours any more either.
                        None => break "LeaseCleared",
                    }
                }
            }
            () = tokio::time::sleep_until(deadline) => break "RenewDeadlineMissed",
        }
    };
    leading.send_replace(false);
    tracing::warn!(
        identity = %config.identity,
        lease = %config.lease_name,
        namespace = %config.namespace,
        reason = lost_because,
        "lost leadership"
    );
}

async fn release(manager: &LeaseManager, config: &LeaderElectionConfig) {
    match manager.release().await {
        Ok(()) => tracing::info!(
            identity = %config.identity,
            lease = %config.lease_name,
            namespace = %config.namespace,
            "released the lease"
        ),
        Err(error) => tracing::warn!(
            identity = %config.identity,
            lease = %config.lease_name,
            %error,
            "releasing the lease failed; it will expire instead"
        ),
    }
}

fn lease_events(client: &Client, config: &LeaderElectionConfig) -> LeaseEvents {
    let api = Api::<Lease>::namespaced(client.clone(), &config.namespace);
    let selector = format!("metadata.name={}", config.lease_name);
    // kube's watcher does not end (it re-lists and re-watches with backoff); were it to end, a
    // select over a finished stream would spin. Pending instead degrades safely: a standby
    // falls back to the crate's expiry timing, a leader to its renew deadline.
    watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .chain(futures::stream::pending())
        .boxed()
}

/// The Lease an event carries; watch errors are logged (the watcher retries with backoff).
fn lease_of(event: Option<Result<watcher::Event<Lease>, watcher::Error>>) -> Option<Lease> {
    match event? {
        Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) => Some(lease),
        // A deleted Lease is free: the manager's auto-create makes it again.
        Ok(watcher::Event::Delete(mut lease)) => {
            lease.spec = None;
            Some(lease)
        }
        Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
        Err(error) => {
            tracing::debug!(%error, "lease watch error, the watcher retries");
            None
        }
    }
}

fn holder_of(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()?
        .holder_identity
        .as_deref()
        .filter(|holder| !holder.is_empty())
}

fn expiry_of(lease: &Lease) -> Option<SystemTime> {
    let spec = lease.spec.as_ref()?;
    let renewed: SystemTime = spec.renew_time.as_ref()?.0.into();
    let seconds = u64::try_from(spec.lease_duration_seconds?).ok()?;
    renewed.checked_add(Duration::from_secs(seconds))
}

/// Time from now until `when`, zero when it has passed.
fn until(when: SystemTime) -> Duration {
    when.duration_since(SystemTime::now()).unwrap_or_default()
}

fn is_permanent(error: &LeaseManagerError) -> bool {
    match error {
        LeaseManagerError::KubeError(kube::Error::Api(status)) => matches!(status.code, 401 | 403 | 404),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaderElectionConfig {
        LeaderElectionConfig::new("pssession-operator", "system", "pod-a")
    }

    #[test]
    fn defaults_are_client_go_s() {
        let config = config();
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.grace, Duration::from_secs(5));
        assert_eq!(config.retry_period, Duration::from_secs(2));
        config.validate().unwrap();
    }

    #[test]
    fn invalid_configs_are_refused_before_the_crate_panics_on_them() {
        let cases = [
            LeaderElectionConfig {
                identity: String::new(),
                ..config()
            },
            LeaderElectionConfig {
                lease_duration: Duration::from_millis(1500),
                ..config()
            },
            LeaderElectionConfig {
                grace: Duration::ZERO,
                ..config()
            },
            LeaderElectionConfig {
                grace: Duration::from_secs(15),
                ..config()
            },
            LeaderElectionConfig {
                retry_period: Duration::ZERO,
                ..config()
            },
        ];
        for case in cases {
            let error = case.validate().unwrap_err();
            assert!(
                matches!(error, LeaderError::InvalidConfig { .. }),
                "{case:?}: {error}"
            );
        }
    }

    #[test]
    fn expiry_is_renew_time_plus_duration() {
        use k8s_openapi::{
            api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
        };
        let renewed = Timestamp::from_second(1_700_000_000).unwrap();
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("pod-a".into()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert_eq!(holder_of(&lease), Some("pod-a"));
        assert_eq!(
            expiry_of(&lease),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_015))
        );
        let released = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert_eq!(holder_of(&released), None);
        assert_eq!(expiry_of(&released), None);
    }
}
