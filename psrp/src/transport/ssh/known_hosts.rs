//! `known_hosts` data (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT") and the host key check OpenSSH's
//! client makes with it, for data held in memory (a Kubernetes Secret), not a file.
//!
//! What is understood: comments and blank lines; host pattern lists with `*`/`?` wildcards and `!`
//! negation, matched case-insensitively; `[host]:port` names for ports other than 22; hashed names
//! (`|1|salt|hash`, HMAC-SHA1 as `HashKnownHosts` writes them); the `@revoked` marker (that key is
//! refused for the hosts the line names); `@cert-authority` lines are skipped, since host certificates
//! are not negotiated. A server key is accepted only when a line for the host holds that very key.

use std::{fmt, sync::Arc};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use russh::keys::{HashAlg, PublicKey};

use super::SshError;

/// Parsed `known_hosts` data. Cheap to clone; parse it once per Secret version, not per connection.
#[derive(Clone, Default)]
pub struct KnownHosts {
    entries: Arc<[Entry]>,
}

struct Entry {
    /// 1-based line number, for error messages.
    line: usize,
    marker: Marker,
    hosts: Hosts,
    /// The key, or why the line's key cannot be used.
    key: Result<PublicKey, String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

enum Hosts {
    /// A comma-separated pattern list, lower-cased.
    Patterns(String),
    /// `|1|salt|hash`: HMAC-SHA1 of the host name keyed with the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// A hashed name that does not decode: matches nothing (OpenSSH skips such lines too).
    Unusable,
}

/// What `known_hosts` says about a server's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Known,
    Unknown,
    /// Lines for the host exist, none with this key.
    Changed,
    Revoked,
    /// A line for the host cannot be read, and no readable line holds this key.
    Invalid {
        line: usize,
        reason: String,
    },
}

impl KnownHosts {
    /// Parses `known_hosts` text. Never fails: a line that cannot be read is kept as such, and only
    /// matters (as [`SshError::KnownHostsInvalid`]) when it names the host being checked.
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .enumerate()
            .filter_map(|(index, line)| parse_line(index + 1, line))
            .collect();
        Self { entries }
    }

    /// Number of usable or unusable entries (comments and blank lines not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name `known_hosts` files use for a host and port: `host`, or `[host]:port` unless 22.
    pub fn lookup_name(host: &str, port: u16) -> String {
        let host = host.to_ascii_lowercase();
        if port == 22 {
            host
        } else {
            format!("[{host}]:{port}")
        }
    }

    /// The key algorithms recorded for the host (a client prefers these in the key exchange, as
    /// OpenSSH does, so that a server with several host keys shows the one that is known).
    pub(crate) fn algorithms_for(&self, name: &str) -> Vec<russh::keys::Algorithm> {
        let mut algorithms = Vec::new();
        for entry in self.entries.iter() {
            if entry.marker == Marker::None
                && let Ok(key) = &entry.key
                && entry.hosts.matches(name)
                && !algorithms.contains(&key.algorithm())
            {
                algorithms.push(key.algorithm());
            }
        }
        algorithms
    }

    /// Checks a server's key for the lookup name (see [`KnownHosts::lookup_name`]).
    pub(crate) fn check(&self, name: &str, key: &PublicKey) -> Verdict {
        let mut host_known = false;
        let mut invalid = None;
        let mut known = false;
        for entry in self.entries.iter().filter(|e| e.hosts.matches(name)) {
            match (&entry.key, entry.marker) {
                (_, Marker::CertAuthority) => {}
                (Ok(recorded), Marker::Revoked) => {
                    if recorded.key_data() == key.key_data() {
                        return Verdict::Revoked;
                    }
                }
                (Ok(recorded), Marker::None) => {
                    host_known = true;
                    known |= recorded.key_data() == key.key_data();
                }
                (Err(reason), _) => {
                    // An unreadable @revoked line might revoke this very key: it counts too.
                    invalid.get_or_insert_with(|| (entry.line, reason.clone()));
                }
            }
        }
        match (known, invalid) {
            (true, _) => Verdict::Known,
            (false, Some((line, reason))) => Verdict::Invalid { line, reason },
            (false, None) if host_known => Verdict::Changed,
            (false, None) => Verdict::Unknown,
        }
    }

    /// [`KnownHosts::check`] as the error the connection fails with, or `Ok` for a known key.
    pub(crate) fn verify(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), SshError> {
        let name = Self::lookup_name(host, port);
        let fingerprint = || fingerprint(key);
        match self.check(&name, key) {
            Verdict::Known => Ok(()),
            Verdict::Unknown => Err(SshError::HostKeyUnknown {
                host: name,
                fingerprint: fingerprint(),
            }),
            Verdict::Changed => Err(SshError::HostKeyChanged {
                host: name,
                fingerprint: fingerprint(),
            }),
            Verdict::Revoked => Err(SshError::HostKeyRevoked {
                host: name,
                fingerprint: fingerprint(),
            }),
            Verdict::Invalid { line, reason } => Err(SshError::KnownHostsInvalid {
                host: name,
                line,
                reason,
            }),
        }
    }
}

impl fmt::Debug for KnownHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnownHosts")
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// `ssh-ed25519 SHA256:...`, as `ssh-keygen -l` prints it.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        key.fingerprint(HashAlg::Sha256)
    )
}

fn parse_line(line: usize, text: &str) -> Option<Entry> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return None;
    }
    let mut fields = text.split_ascii_whitespace();
    let mut first = fields.next()?;
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        other if other.starts_with('@') => {
            // OpenSSH skips a line with an unknown marker; so does this, whatever host it names.
            tracing::debug!(line, "known_hosts: unknown marker, line skipped");
            return None;
        }
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next().unwrap_or("");
    }
    let hosts = parse_hosts(first);
    let key = match (fields.next(), fields.next()) {
        (Some(key_type), Some(base64)) if !first.is_empty() => {
            PublicKey::from_openssh(&format!("{key_type} {base64}"))
                .map_err(|e| format!("cannot read its {key_type} key: {e}"))
        }
        _ => Err("expected `[marker] hosts key-type base64-key [comment]`".to_owned()),
    };
    Some(Entry {
        line,
        marker,
        hosts,
        key,
    })
}

fn parse_hosts(field: &str) -> Hosts {
    let Some(hashed) = field.strip_prefix("|1|") else {
        return Hosts::Patterns(field.to_ascii_lowercase());
    };
    let mut parts = hashed.splitn(2, '|');
    let salt = parts.next().and_then(|s| BASE64.decode(s).ok());
    let hash = parts.next().and_then(|s| BASE64.decode(s).ok());
    match (salt, hash) {
        (Some(salt), Some(hash)) if hash.len() == 20 => Hosts::Hashed { salt, hash },
        _ => Hosts::Unusable,
    }
}

impl Hosts {
    /// `name` is lower-case already (see [`KnownHosts::lookup_name`]).
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Patterns(list) => {
                let mut positive = false;
                for pattern in list.split(',') {
                    if let Some(negated) = pattern.strip_prefix('!') {
                        if wildcard_match(negated.as_bytes(), name.as_bytes()) {
                            return false;
                        }
                    } else if wildcard_match(pattern.as_bytes(), name.as_bytes()) {
                        positive = true;
                    }
                }
                positive
            }
            Hosts::Hashed { salt, hash } => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
                ring::hmac::verify(&key, name.as_bytes(), hash).is_ok()
            }
            Hosts::Unusable => false,
        }
    }
}

/// OpenSSH's `match_pattern`: `*` any run of characters, `?` any one character.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it is currently assumed to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILpSIfJgjp+qJn03cCLdz8ADNj9dvURjxOUo94Grlti2";
    const ED2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKHJR/EMixWI8B3w+5USwta9/F5V2EwA94vZFv3XEkJt";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    fn hashed(name: &str, salt: &[u8]) -> String {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
        let tag = ring::hmac::sign(&k, name.as_bytes());
        format!("|1|{}|{}", BASE64.encode(salt), BASE64.encode(tag.as_ref()))
    }

    #[test]
    fn plain_names_and_ports() {
        let kh = KnownHosts::parse(&format!(
            "# comment\n\n10.0.0.2 {ED1}\n[10.0.0.3]:2222 {ED1} a comment\nWeb01.Example.com,10.0.0.4 {ED2}\n"
        ));
        assert_eq!(kh.len(), 3);
        assert_eq!(
            kh.check(&KnownHosts::lookup_name("10.0.0.2", 22), &key(ED1)),
            Verdict::Known
        );
        assert_eq!(
            kh.check(&KnownHosts::lookup_name("10.0.0.2", 22), &key(ED2)),
            Verdict::Changed
        );
        // A non-standard port is looked up as [host]:port only, as OpenSSH does.
        assert_eq!(
            kh.check(&KnownHosts::lookup_name("10.0.0.2", 2222), &key(ED1)),
            Verdict::Unknown
        );
        assert_eq!(
            kh.check(&KnownHosts::lookup_name("10.0.0.3", 2222), &key(ED1)),
            Verdict::Known
        );
        assert_eq!(
            kh.check(&KnownHosts::lookup_name("10.0.0.3", 22), &key(ED1)),
            Verdict::Unknown
        );
        assert_eq!(
            kh.check(&KnownHosts::lookup_name("WEB01.example.COM", 22), &key(ED2)),
            Verdict::Known
        );
        assert_eq!(kh.check("10.0.0.4", &key(ED2)), Verdict::Known);
        assert_eq!(kh.check("10.0.0.5", &key(ED2)), Verdict::Unknown);
    }

    #[test]
    fn several_keys_for_a_host() {
        let kh = KnownHosts::parse(&format!("h {ED1}\nh {ED2}\n"));
        assert_eq!(kh.check("h", &key(ED1)), Verdict::Known);
        assert_eq!(kh.check("h", &key(ED2)), Verdict::Known);
    }

    #[test]
    fn hashed_names() {
        let line = format!(
            "{} {ED1}\n{} {ED2}\n",
            hashed("10.0.0.2", b"salt-one-twenty-byte"),
            hashed("[h]:2200", b"x")
        );
        let kh = KnownHosts::parse(&line);
        assert_eq!(kh.check("10.0.0.2", &key(ED1)), Verdict::Known);
        assert_eq!(kh.check("10.0.0.2", &key(ED2)), Verdict::Changed);
        assert_eq!(kh.check("10.0.0.3", &key(ED1)), Verdict::Unknown);
        assert_eq!(
            kh.check(&KnownHosts::lookup_name("H", 2200), &key(ED2)),
            Verdict::Known
        );
        // A hashed entry that does not decode matches nothing.
        let kh = KnownHosts::parse(&format!("|1|%%%|%%% {ED1}\n"));
        assert_eq!(kh.check("10.0.0.2", &key(ED1)), Verdict::Unknown);
    }

    #[test]
    fn wildcards_and_negation() {
        let kh = KnownHosts::parse(&format!("*.example.com,!bad.example.com {ED1}\n10.0.0.? {ED2}\n"));
        assert_eq!(kh.check("a.example.com", &key(ED1)), Verdict::Known);
        assert_eq!(kh.check("bad.example.com", &key(ED1)), Verdict::Unknown);
        assert_eq!(kh.check("example.com", &key(ED1)), Verdict::Unknown);
        assert_eq!(kh.check("10.0.0.7", &key(ED2)), Verdict::Known);
        assert_eq!(kh.check("10.0.0.17", &key(ED2)), Verdict::Unknown);
        assert!(wildcard_match(b"a*b*c", b"aXXbYYbc"));
        assert!(wildcard_match(b"*", b""));
        assert!(!wildcard_match(b"a*b", b"aXXbc"));
        assert!(wildcard_match(b"[*]:22?2", b"[h]:2202"));
    }

    #[test]
    fn markers() {
        let kh = KnownHosts::parse(&format!(
            "h {ED1}\n@revoked * {ED1}\n@cert-authority h {ED2}\n@bogus h {ED2}\n"
        ));
        assert_eq!(kh.check("h", &key(ED1)), Verdict::Revoked);
        // A CA line does not make its key a host key.
        assert_eq!(kh.check("h", &key(ED2)), Verdict::Changed);
        assert_eq!(kh.check("other", &key(ED2)), Verdict::Unknown);
    }

    #[test]
    fn invalid_lines_count_only_for_their_hosts() {
        let kh = KnownHosts::parse(&format!("h ssh-ed25519 AAAAnotakey\nh2 {ED1}\nh3\n"));
        assert_eq!(kh.check("h2", &key(ED1)), Verdict::Known);
        assert!(matches!(
            kh.check("h", &key(ED1)),
            Verdict::Invalid { line: 1, .. }
        ));
        assert!(matches!(
            kh.check("h3", &key(ED1)),
            Verdict::Invalid { line: 3, .. }
        ));
        // A readable line with the key wins over an unreadable one.
        let kh = KnownHosts::parse(&format!("h ssh-rsa AAAA\nh {ED1}\n"));
        assert_eq!(kh.check("h", &key(ED1)), Verdict::Known);
        assert!(matches!(
            kh.check("h", &key(ED2)),
            Verdict::Invalid { line: 1, .. }
        ));
    }

    #[test]
    fn algorithms_for_a_host() {
        let kh = KnownHosts::parse(&format!("h {ED1}\nh {ED2}\n@revoked h {ED1}\n"));
        assert_eq!(kh.algorithms_for("h"), vec![russh::keys::Algorithm::Ed25519]);
        assert!(kh.algorithms_for("x").is_empty());
    }
}
