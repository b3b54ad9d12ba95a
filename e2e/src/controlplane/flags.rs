//! Command lines of the three components, modelled on controller-runtime's envtest
//! (pkg/internal/testing/controlplane) and kept as pure functions so they are unit-tested.

use std::path::Path;

use super::certs::PkiFiles;

/// Loopback ports the components listen on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub kcm: u16,
}

/// Service ClusterIPs are only allocated, never routed: nothing here sends traffic to them.
pub(crate) const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A single-member etcd on loopback, plain HTTP (as envtest), data in `data_dir`.
pub(crate) fn etcd(data_dir: &Path, ports: Ports) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
    vec![
        flag("name", "psso"),
        flag("data-dir", path(data_dir)),
        flag("listen-client-urls", &client),
        flag("advertise-client-urls", &client),
        flag("listen-peer-urls", &peer),
        flag("initial-advertise-peer-urls", &peer),
        flag("initial-cluster", format!("psso={peer}")),
        // Throwaway data: skipping fsync makes writes (every status update in a test) cheap.
        flag("unsafe-no-fsync", true),
        flag("log-level", "warn"),
    ]
}

/// kube-apiserver on 127.0.0.1 with client-certificate auth and RBAC.
pub(crate) fn apiserver(cert_dir: &Path, pki: &PkiFiles, ports: Ports) -> Vec<String> {
    let url = format!("https://127.0.0.1:{}", ports.apiserver);
    vec![
        flag("advertise-address", "127.0.0.1"),
        flag("bind-address", "127.0.0.1"),
        flag("secure-port", ports.apiserver),
        // Where the apiserver keeps its self-made loopback client certificate.
        flag("cert-dir", path(cert_dir)),
        flag("tls-cert-file", path(&pki.serving_cert)),
        flag("tls-private-key-file", path(&pki.serving_key)),
        flag("client-ca-file", path(&pki.ca_cert)),
        flag("etcd-servers", format!("http://127.0.0.1:{}", ports.etcd_client)),
        flag("service-cluster-ip-range", SERVICE_CLUSTER_IP_RANGE),
        // Required since 1.20 (token projection); the issuer only has to be a URL.
        flag("service-account-issuer", &url),
        flag("service-account-key-file", path(&pki.sa_pub)),
        flag("service-account-signing-key-file", path(&pki.sa_key)),
        // No nodes, so the Node authorizer has nothing to do; RBAC is what an operator's
        // manifests are checked against.
        flag("authorization-mode", "RBAC"),
        flag("allow-privileged", true),
        // As envtest: pods would otherwise wait for a token Secret/ServiceAccount dance
        // that the tests do not care about.
        flag("disable-admission-plugins", "ServiceAccount"),
        // The default "lease" reconciler writes 127.0.0.1 into the `kubernetes` Endpoints,
        // which validation rejects (loopback), and then logs that error forever.
        flag("endpoint-reconciler-type", "none"),
        flag("profiling", false),
    ]
}

/// The controllers the tests need: garbage collection and namespace deletion above all,
/// plus the everyday ones whose absence would surprise a test (service accounts, jobs,
/// workloads, endpoint slices, CSR signing). Node, cloud, volume and IPAM controllers are
/// left out: there are no nodes and no cloud, they would only log errors. Names as
/// `kube-controller-manager --help` lists them (1.37; the `-controller` suffixed names exist
/// since 1.30, the older short names are aliases).
pub(crate) const CONTROLLERS: &[&str] = &[
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "replicaset-controller",
    "deployment-controller",
    "statefulset-controller",
    "daemonset-controller",
    "replicationcontroller-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "resourcequota-controller",
    "disruption-controller",
    "horizontal-pod-autoscaler-controller",
    "certificatesigningrequest-signing-controller",
    "certificatesigningrequest-approving-controller",
    "certificatesigningrequest-cleaner-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
];

/// kube-controller-manager against the apiserver, with the admin identity (it is the only
/// client certificate the CA issues) and the service-account key for token Secrets.
pub(crate) fn controller_manager(
    cert_dir: &Path,
    kubeconfig: &Path,
    pki: &PkiFiles,
    ports: Ports,
) -> Vec<String> {
    vec![
        flag("kubeconfig", path(kubeconfig)),
        // Lets /metrics and other non-health paths check callers; health paths are
        // always allowed (--authorization-always-allow-paths' default).
        flag("authentication-kubeconfig", path(kubeconfig)),
        flag("authorization-kubeconfig", path(kubeconfig)),
        // Trust our CA directly instead of reading the front-proxy (requestheader) CA from
        // the extension-apiserver-authentication ConfigMap: there is no front proxy, and the
        // lookup logs "missing content for CA bundle" errors over and over.
        flag("authentication-skip-lookup", true),
        flag("client-ca-file", path(&pki.ca_cert)),
        flag("bind-address", "127.0.0.1"),
        flag("secure-port", ports.kcm),
        // Its self-signed serving certificate goes here, not to /var/run/kubernetes.
        flag("cert-dir", path(cert_dir)),
        flag("leader-elect", false),
        flag("controllers", CONTROLLERS.join(",")),
        flag("service-account-private-key-file", path(&pki.sa_key)),
        flag("root-ca-file", path(&pki.ca_cert)),
        flag("use-service-account-credentials", false),
        flag("cluster-signing-cert-file", path(&pki.ca_cert)),
        flag("cluster-signing-key-file", path(&pki.ca_key)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn pki() -> PkiFiles {
        let p = |n: &str| PathBuf::from("/pki").join(n);
        PkiFiles {
            ca_cert: p("ca.crt"),
            ca_key: p("ca.key"),
            serving_cert: p("apiserver.crt"),
            serving_key: p("apiserver.key"),
            admin_cert: p("admin.crt"),
            admin_key: p("admin.key"),
            sa_key: p("sa.key"),
            sa_pub: p("sa.pub"),
        }
    }

    const PORTS: Ports = Ports {
        etcd_client: 1001,
        etcd_peer: 1002,
        apiserver: 1003,
        kcm: 1004,
    };

    #[test]
    fn apiserver_points_at_etcd_and_keys() {
        let args = apiserver(Path::new("/d/certs"), &pki(), PORTS);
        for want in [
            "--etcd-servers=http://127.0.0.1:1001",
            "--secure-port=1003",
            "--bind-address=127.0.0.1",
            "--service-account-signing-key-file=/pki/sa.key",
            "--service-account-key-file=/pki/sa.pub",
            "--client-ca-file=/pki/ca.crt",
            "--authorization-mode=RBAC",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing from {args:?}");
        }
    }

    #[test]
    fn etcd_listens_on_loopback_only() {
        let args = etcd(Path::new("/d/etcd"), PORTS);
        assert!(args.contains(&"--listen-client-urls=http://127.0.0.1:1001".to_owned()));
        assert!(args.contains(&"--initial-cluster=psso=http://127.0.0.1:1002".to_owned()));
        assert!(
            args.iter()
                .filter(|a| a.contains("://"))
                .all(|a| a.contains("127.0.0.1"))
        );
    }

    #[test]
    fn controller_manager_runs_gc_and_namespace_controllers() {
        let args = controller_manager(Path::new("/d/kcm"), Path::new("/d/kubeconfig"), &pki(), PORTS);
        let controllers = args
            .iter()
            .find_map(|a| a.strip_prefix("--controllers="))
            .expect("controllers flag");
        assert!(controllers.contains("garbage-collector-controller"));
        assert!(controllers.contains("namespace-controller"));
        assert!(args.contains(&"--leader-elect=false".to_owned()));
        assert!(args.contains(&"--secure-port=1004".to_owned()));
    }
}
