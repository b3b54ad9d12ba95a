//! `PSSession`: a live PowerShell Remoting session from the operator to one target host.

// kube's `printcolumn(...)` repeats its keys once per column, which this lint mistakes for a slip.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DURATION_PATTERN, LocalObjectReference};

/// A PowerShell Remoting session to one target host, opened and kept by the operator.
///
/// The session is persistent: PSJobs that run in it share its state (variables, functions, imported
/// modules), as commands in one PowerShell PSSession do. Deleting the object closes the remote session.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "psremoting.dev",
    version = "v1alpha1",
    kind = "PSSession",
    plural = "pssessions",
    singular = "pssession",
    shortname = "pss",
    category = "psremoting",
    namespaced,
    status = "PSSessionStatus",
    doc = "A live PowerShell Remoting session to one target host (WS-Management or SSH).",
    printcolumn(name = "Computer", type_ = "string", json_path = ".spec.computerName", description = "Target host"),
    printcolumn(name = "Transport", type_ = "string", json_path = ".spec.transport", description = "WSMan or SSH"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state", description = "Runspace state"),
    printcolumn(name = "Availability", type_ = "string", json_path = ".status.availability", description = "None, Available or Busy"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#, description = "Status of the Ready condition"),
    // A string column: kubectl prints a future date in a `date` column as `<invalid>`.
    printcolumn(name = "Idle-Expires", type_ = "string", json_path = ".status.idleExpiresAt", description = "When the idle rule closes the session"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.authentication) || (self.transport == 'SSH' ? self.authentication in ['PublicKey', 'Password'] : !(self.authentication in ['PublicKey', 'Password']))")
        .message("authentication must fit the transport: WSMan takes Basic, NTLM, Negotiate, Kerberos or Certificate; SSH takes PublicKey or Password")
        .field_path(".authentication"),
    validation = Rule::new("!has(self.authentication) || self.authentication != 'Certificate' || (has(self.useSSL) && self.useSSL)")
        .message("Certificate authentication needs useSSL: true")
        .field_path(".authentication"),
    validation = Rule::new("!has(self.useSSL) || !self.useSSL || self.transport == 'WSMan'")
        .message("useSSL applies to the WSMan transport only (SSH is always encrypted)")
        .field_path(".useSSL"),
    validation = Rule::new("!has(self.configurationName) || self.transport == 'WSMan'")
        .message("configurationName applies to the WSMan transport only; an SSH session has no session configuration")
        .field_path(".configurationName"),
    validation = Rule::new("!has(self.outputBufferingMode) || self.transport == 'WSMan'")
        .message("outputBufferingMode applies to the WSMan transport only")
        .field_path(".outputBufferingMode"),
    validation = Rule::new("!has(self.caSecretRef) || (self.transport == 'WSMan' && has(self.useSSL) && self.useSSL)")
        .message("caSecretRef needs the WSMan transport with useSSL: true")
        .field_path(".caSecretRef"),
    validation = Rule::new("!has(self.skipCACheck) || !self.skipCACheck || (self.transport == 'WSMan' && has(self.useSSL) && self.useSSL)")
        .message("skipCACheck needs the WSMan transport with useSSL: true")
        .field_path(".skipCACheck"),
    validation = Rule::new("!has(self.skipCNCheck) || !self.skipCNCheck || (self.transport == 'WSMan' && has(self.useSSL) && self.useSSL)")
        .message("skipCNCheck needs the WSMan transport with useSSL: true")
        .field_path(".skipCNCheck"),
    validation = Rule::new("self.transport != 'SSH' || has(self.knownHostsSecretRef) || (has(self.skipHostKeyCheck) && self.skipHostKeyCheck)")
        .message("an SSH session needs knownHostsSecretRef, unless skipHostKeyCheck: true is set explicitly")
        .field_path(".knownHostsSecretRef"),
    validation = Rule::new("!has(self.knownHostsSecretRef) || self.transport == 'SSH'")
        .message("knownHostsSecretRef applies to the SSH transport only")
        .field_path(".knownHostsSecretRef"),
    validation = Rule::new("!has(self.skipHostKeyCheck) || !self.skipHostKeyCheck || self.transport == 'SSH'")
        .message("skipHostKeyCheck applies to the SSH transport only")
        .field_path(".skipHostKeyCheck"),
    validation = Rule::new("!has(self.allowUnencrypted) || !self.allowUnencrypted || self.transport == 'WSMan'")
        .message("allowUnencrypted applies to the WSMan transport only")
        .field_path(".allowUnencrypted"),
    validation = Rule::new("self.desiredState != 'Disconnected' || self.transport == 'WSMan'")
        .message("desiredState Disconnected needs the WSMan transport: PowerShell has no disconnect over SSH")
        .field_path(".desiredState"),
    validation = Rule::new("!has(self.attach) || self.transport == 'WSMan'")
        .message("attach needs the WSMan transport: only a WS-Management shell outlives its client")
        .field_path(".attach"),
    validation = Rule::new("has(self.attach) == has(oldSelf.attach) && (!has(self.attach) || self.attach == oldSelf.attach)")
        .message("attach is immutable")
        .field_path(".attach"),
)]
pub struct PSSessionSpec {
    /// DNS name or IP address of the target host. Immutable.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("computerName is immutable"))]
    pub computer_name: String,

    /// Remoting transport: `WSMan` (WinRM, ports 5985/5986) or `SSH` (the `powershell` SSH subsystem
    /// of a PowerShell 7 host). Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("transport is immutable"))]
    pub transport: Transport,

    /// TCP port of the target. Unset: 5985 for WSMan, 5986 for WSMan with useSSL, 22 for SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Use HTTPS for WSMan (WSMan only). Default false.
    #[serde(default, rename = "useSSL", skip_serializing_if = "Option::is_none")]
    pub use_ssl: Option<bool>,

    /// How the operator authenticates. WSMan: Basic, NTLM, Negotiate (default), Kerberos,
    /// Certificate (needs useSSL). SSH: PublicKey (default), Password. CredSSP is not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,

    /// Secret in this namespace with the credentials: `kubernetes.io/basic-auth` (username, password),
    /// `kubernetes.io/ssh-auth` (ssh-privatekey, plus username and optional passphrase), or
    /// `kubernetes.io/tls` for Certificate authentication.
    pub credentials_secret_ref: LocalObjectReference,

    /// Remote session configuration (endpoint) to connect to, e.g. a JEA endpoint. WSMan only;
    /// unset means `Microsoft.PowerShell`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub configuration_name: Option<String>,

    /// Close the session remotely after it has had no running or queued job for this long (at least
    /// 10s). It reopens for the next job. Unset: never closed for idleness. A WSMan server is also
    /// told max(idleTimeout, 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("idleTimeout must be at least 10s"))]
    pub idle_timeout: Option<Duration>,

    /// How long opening the session may take (New-PSSessionOption's OpenTimeout). Default 3m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("openTimeout must be greater than 0"))]
    pub open_timeout: Option<Duration>,

    /// How long one remote operation may take (New-PSSessionOption's OperationTimeout). Default 3m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("operationTimeout must be greater than 0"))]
    pub operation_timeout: Option<Duration>,

    /// What the remote host does with output of a disconnected session when its buffer is full:
    /// `Block` (default) pauses the command, `Drop` discards the oldest output. WSMan only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_buffering_mode: Option<OutputBufferingMode>,

    /// Connection attempts after a network fault before the session is Broken (0-100).
    #[serde(default = "default_max_connection_retry_count")]
    #[schemars(range(min = 0, max = 100))]
    pub max_connection_retry_count: i32,

    /// Let Basic authentication go over plain HTTP, as WinRM's `AllowUnencrypted=true` does on the
    /// server: the password then crosses the network in clear text. WSMan only; default false, so
    /// Basic needs useSSL. NTLM, Negotiate and Kerberos encrypt every message over HTTP anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unencrypted: Option<bool>,

    /// Secret with the CA bundle (key `ca.crt`) that signs the WSMan HTTPS server's certificate.
    /// WSMan with useSSL only.
    #[serde(default, rename = "caSecretRef", skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectReference>,

    /// Do not check that the server certificate is signed by a trusted CA. WSMan with useSSL only.
    #[serde(default, rename = "skipCACheck", skip_serializing_if = "Option::is_none")]
    pub skip_ca_check: Option<bool>,

    /// Do not check that the server certificate's name matches computerName. WSMan with useSSL only.
    #[serde(default, rename = "skipCNCheck", skip_serializing_if = "Option::is_none")]
    pub skip_cn_check: Option<bool>,

    /// Secret with key `known_hosts` (OpenSSH format) holding the host keys the SSH server may
    /// present. Required for SSH unless skipHostKeyCheck is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_secret_ref: Option<LocalObjectReference>,

    /// Accept any SSH host key. Dangerous: only for hosts whose key cannot be known in advance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_host_key_check: Option<bool>,

    /// `Connected` (default) keeps the session connected; `Disconnected` disconnects it and leaves
    /// it, with its running commands, on the remote host (WSMan only).
    #[serde(default)]
    pub desired_state: DesiredState,

    /// Adopt a disconnected WSMan shell made elsewhere (by another client or an earlier operator)
    /// instead of opening a new one. WSMan only; immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<Attach>,
}

fn default_max_connection_retry_count() -> i32 {
    5
}

/// The remoting transport.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Transport {
    /// WS-Management (WinRM).
    #[default]
    #[serde(rename = "WSMan")]
    WSMan,
    /// The `powershell` subsystem of an SSH server.
    #[serde(rename = "SSH")]
    Ssh,
}

/// Authentication mechanisms; which ones apply depends on the transport.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Authentication {
    Basic,
    #[serde(rename = "NTLM")]
    Ntlm,
    Negotiate,
    Kerberos,
    Certificate,
    PublicKey,
    Password,
}

/// OutputBufferingMode of a disconnected WSMan session.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OutputBufferingMode {
    #[default]
    Block,
    Drop,
}

/// Whether the operator keeps the session connected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DesiredState {
    #[default]
    Connected,
    Disconnected,
}

/// Identity of an existing disconnected WSMan shell to adopt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attach {
    /// The WS-Management shell id (a GUID), as `Get-PSSession -ComputerName` shows it.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub shell_id: String,
    /// The PowerShell runspace pool id (InstanceId, a GUID). Unset: the shell id is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub session_id: Option<String>,
}

const GUID_PATTERN: &str = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$";

/// Observed state of a PSSession.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PSSessionStatus {
    /// PowerShell's runspace state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunspaceState>,
    /// Whether the session can take a command now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<Availability>,
    /// Ready, Reconciling and Stalled, as kstatus and Argo CD read them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The runspace pool id; a new one means the remote state was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The WS-Management shell id; what a reconnect needs, written before the first command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell_id: Option<String>,
    /// The WS-Management session id used with the shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wsman_session_id: Option<String>,
    /// When the current runspace was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<Time>,
    /// When a job last ran or finished in the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Time>,
    /// When the idle rule will close the session, if nothing runs before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_expires_at: Option<Time>,
    /// The PSJob running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_job: Option<String>,
    /// PSJobs waiting for the session, in the order they will run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued_jobs: Vec<String>,
    /// The PSRP protocol version the server announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// A human-readable account of the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// PowerShell's runspace states (System.Management.Automation.Runspaces.RunspaceState).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunspaceState {
    BeforeOpen,
    Opening,
    Opened,
    Disconnecting,
    Disconnected,
    Connecting,
    Broken,
    Closing,
    Closed,
}

/// PowerShell's runspace availability.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Availability {
    None,
    Available,
    Busy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_spec_takes_the_documented_defaults() {
        let spec: PSSessionSpec = serde_json::from_value(serde_json::json!({
            "computerName": "web01",
            "credentialsSecretRef": {"name": "web01-winrm"},
        }))
        .expect("minimal spec parses");
        assert_eq!(spec.transport, Transport::WSMan);
        assert_eq!(spec.desired_state, DesiredState::Connected);
        assert_eq!(spec.max_connection_retry_count, 5);
        assert_eq!(spec.port, None);
        assert_eq!(spec.idle_timeout, None);
    }

    #[test]
    fn field_names_match_the_api_contract() {
        let spec: PSSessionSpec = serde_json::from_value(serde_json::json!({
            "computerName": "web01", "transport": "WSMan", "port": 5986, "useSSL": true,
            "authentication": "NTLM", "credentialsSecretRef": {"name": "c"},
            "configurationName": "JEA.Ops", "idleTimeout": "90s", "openTimeout": "1m",
            "operationTimeout": "2m", "outputBufferingMode": "Drop", "maxConnectionRetryCount": 0,
            "caSecretRef": {"name": "ca"}, "skipCACheck": false, "skipCNCheck": true,
            "desiredState": "Disconnected",
            "attach": {"shellId": "2D6534D0-6B12-40E3-B773-CBA26459CFA8"},
        }))
        .expect("full spec parses");
        assert_eq!(spec.authentication, Some(Authentication::Ntlm));
        assert_eq!(spec.use_ssl, Some(true));
        assert_eq!(spec.skip_cn_check, Some(true));
        assert_eq!(
            spec.idle_timeout.map(std::time::Duration::from),
            Some(std::time::Duration::from_secs(90))
        );
        let round_trip = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(round_trip["useSSL"], true);
        assert_eq!(round_trip["caSecretRef"]["name"], "ca");
        assert_eq!(round_trip["skipCACheck"], false);
        assert_eq!(
            round_trip["attach"]["shellId"],
            "2D6534D0-6B12-40E3-B773-CBA26459CFA8"
        );
    }

    #[test]
    fn ssh_values_are_spelled_as_powershell_spells_them() {
        let spec: PSSessionSpec = serde_json::from_value(serde_json::json!({
            "computerName": "10.0.0.5", "transport": "SSH", "authentication": "PublicKey",
            "credentialsSecretRef": {"name": "k"}, "knownHostsSecretRef": {"name": "kh"},
        }))
        .expect("ssh spec parses");
        assert_eq!(spec.transport, Transport::Ssh);
        assert_eq!(serde_json::to_value(spec.transport).expect("serializes"), "SSH");
        assert_eq!(
            serde_json::to_value(Authentication::Ntlm).expect("serializes"),
            "NTLM"
        );
    }
}
