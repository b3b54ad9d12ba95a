//! The control plane's PKI, generated in-process with `rcgen` (pure Rust, ring backend).
//!
//! Why rcgen and not the `openssl` CLI: no external tool to find, no text output to parse,
//! and it is fast (ECDSA P-256 keys in microseconds, where RSA-2048 via a CLI takes a
//! noticeable share of a start-up). Go's crypto (etcd, kube-apiserver, kubectl) and rustls
//! (kube-rs) all accept P-256 certificates and PKCS#8 keys.
//!
//! Everything is throwaway: one CA per control plane, never trusted outside its temp dir.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

/// PEM texts of every key and certificate the control plane needs.
pub(crate) struct Pki {
    pub ca_cert: String,
    pub ca_key: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// Private key the apiserver signs service-account tokens with (and kcm's token controller).
    pub sa_key: String,
    /// Its public half, which the apiserver verifies tokens with.
    pub sa_pub: String,
}

/// Where [`Pki::write`] put the files; the components are pointed at these paths.
#[derive(Debug, Clone)]
pub(crate) struct PkiFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

/// The admin identity's group: the apiserver lets `system:masters` do anything without RBAC
/// rules, as envtest's admin user does.
pub(crate) const ADMIN_GROUP: &str = "system:masters";
pub(crate) const ADMIN_USER: &str = "psso-e2e-admin";

fn name(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

impl Pki {
    /// Generates a fresh CA, a serving certificate for loopback, an admin client certificate
    /// and a service-account signing key pair.
    pub(crate) fn generate() -> Result<Self> {
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("psso-e2e-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the CA certificate")?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        // The serving certificate covers every name a client on this machine may dial,
        // plus the in-cluster names so a pod-like client would not trip over them.
        let serving_key = KeyPair::generate().context("generating the serving key")?;
        let mut serving_params = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
        ])
        .context("serving certificate names")?;
        serving_params.distinguished_name = name("kube-apiserver", None);
        serving_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving_params.use_authority_key_identifier_extension = true;
        let serving_cert = serving_params
            .signed_by(&serving_key, &issuer)
            .context("signing the serving certificate")?;

        // The apiserver maps a client certificate's CN to the user and O to its groups.
        let admin_key = KeyPair::generate().context("generating the admin key")?;
        let mut admin_params = CertificateParams::default();
        admin_params.distinguished_name = name(ADMIN_USER, Some(ADMIN_GROUP));
        admin_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        admin_params.use_authority_key_identifier_extension = true;
        let admin_cert = admin_params
            .signed_by(&admin_key, &issuer)
            .context("signing the admin certificate")?;

        // ES256 service-account tokens: the apiserver and kcm accept PKCS#8 EC keys.
        let sa_key = KeyPair::generate().context("generating the service-account key")?;

        Ok(Self {
            ca_cert: ca_cert.pem(),
            ca_key: ca_key.serialize_pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            sa_pub: sa_key.public_key_pem(),
            sa_key: sa_key.serialize_pem(),
        })
    }

    /// Writes the PEM files into `dir` (keys with mode 0600).
    pub(crate) fn write(&self, dir: &Path) -> Result<PkiFiles> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let files = PkiFiles {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        };
        write_file(&files.ca_cert, &self.ca_cert, 0o644)?;
        write_file(&files.ca_key, &self.ca_key, 0o600)?;
        write_file(&files.serving_cert, &self.serving_cert, 0o644)?;
        write_file(&files.serving_key, &self.serving_key, 0o600)?;
        write_file(&files.admin_cert, &self.admin_cert, 0o644)?;
        write_file(&files.admin_key, &self.admin_key, 0o600)?;
        write_file(&files.sa_key, &self.sa_key, 0o600)?;
        write_file(&files.sa_pub, &self.sa_pub, 0o644)?;
        Ok(files)
    }
}

pub(crate) fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_material() {
        let pki = Pki::generate().expect("pki");
        assert!(pki.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.serving_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.admin_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        for key in [&pki.ca_key, &pki.serving_key, &pki.admin_key, &pki.sa_key] {
            assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        }
        assert!(pki.sa_pub.starts_with("-----BEGIN PUBLIC KEY-----"));
        // Distinct keys: a copy-paste slip here would make every identity the CA.
        assert_ne!(pki.ca_key, pki.admin_key);
        assert_ne!(pki.serving_key, pki.admin_key);
    }

    #[test]
    fn writes_keys_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("psso-certs-test-{}", std::process::id()));
        let files = Pki::generate().and_then(|p| p.write(&dir)).expect("write");
        let mode = fs::metadata(&files.admin_key).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            fs::read_to_string(&files.ca_cert)
                .expect("read")
                .contains("CERTIFICATE")
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
