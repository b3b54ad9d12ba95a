//! The admin kubeconfig: certificates embedded (base64), so the file stands on its own and
//! can be copied out of the temp dir while the control plane runs.

use std::path::Path;

use anyhow::Result;
use base64::{Engine as _, engine::general_purpose::STANDARD};

use super::certs::write_file;

/// Name used for the cluster, user and context entries.
pub(crate) const CONTEXT: &str = "psso-e2e";

/// Renders a kubeconfig for `server` (an `https://127.0.0.1:<port>` URL) with a client
/// certificate identity. YAML is written by hand: every value is a URL, a fixed name or
/// base64, none of which needs quoting.
pub(crate) fn render(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    let ca = STANDARD.encode(ca_pem);
    let cert = STANDARD.encode(cert_pem);
    let key = STANDARD.encode(key_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {CONTEXT}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {CONTEXT}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {CONTEXT}
  context:
    cluster: {CONTEXT}
    user: {CONTEXT}
    namespace: default
current-context: {CONTEXT}
"
    )
}

/// Writes a kubeconfig with mode 0600: it holds a private key.
pub(crate) fn write(path: &Path, server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<()> {
    write_file(path, &render(server, ca_pem, cert_pem, key_pem), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_reads_what_we_render() {
        let text = render("https://127.0.0.1:6443", "CA", "CERT", "KEY");
        let kc = kube::config::Kubeconfig::from_yaml(&text).expect("parse");
        assert_eq!(kc.current_context.as_deref(), Some(CONTEXT));
        let cluster = kc.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some(STANDARD.encode("CA").as_str())
        );
        let user = kc.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(
            user.client_certificate_data.as_deref(),
            Some(STANDARD.encode("CERT").as_str())
        );
    }
}
