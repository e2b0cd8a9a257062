//! TLS listeners: certificates loaded from PEM files and chosen per
//! handshake from the client's SNI.
//!
//! A [`CertStore`] holds every certificate of one listener with the DNS names
//! it covers (subjectAltName entries, or the subject CN when there are none).
//! [`SniResolver`] implements Pingora's `TlsAccept` and installs the matching
//! certificate during the handshake: an exact name first, then a wildcard
//! (`*.example.com` covers one label), then the listener's first
//! certificate. The store sits behind an `ArcSwap` so a reload can replace
//! certificates without touching the listening socket.
//!
//! A listener with `client_ca` asks for client certificates (mTLS): OpenSSL
//! verifies the chain against the bundle during the handshake, and the
//! handshake-complete callback reads the verified certificate's subject CN,
//! OUs and DNS names into a [`ClientCertIdentity`] that rides along with the
//! connection, for the `mtls` auth policy.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::NameType;
use pingora::tls::x509::X509;

use crate::auth::ClientCertIdentity;

/// One certificate chain and its key.
pub struct CertEntry {
    pub names: Vec<String>,
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

/// Every certificate of one TLS listener.
pub struct CertStore {
    pub entries: Vec<CertEntry>,
}

/// A certificate file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} holds no PEM certificate: {reason}")]
    Cert { path: String, reason: String },
    #[error("{path} holds no PEM private key: {reason}")]
    Key { path: String, reason: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: String, key: String },
}

impl CertEntry {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertEntry, CertError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| CertError::Read {
                path: p.display().to_string(),
                reason: e.to_string(),
            })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let chain = X509::stack_from_pem(&cert_pem).map_err(|e| CertError::Cert {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let Some(leaf) = chain.first() else {
            return Err(CertError::Cert {
                path: cert_path.display().to_string(),
                reason: "the file is empty".into(),
            });
        };
        let key = PKey::private_key_from_pem(&key_pem).map_err(|e| CertError::Key {
            path: key_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let matches = leaf
            .public_key()
            .map(|pk| pk.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(CertError::Mismatch {
                cert: cert_path.display().to_string(),
                key: key_path.display().to_string(),
            });
        }
        let mut names: Vec<String> = leaf
            .subject_alt_names()
            .map(|sans| {
                sans.iter()
                    .filter_map(|n| n.dnsname().map(|d| d.to_ascii_lowercase()))
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            names = leaf
                .subject_name()
                .entries_by_nid(pingora::tls::nid::Nid::COMMONNAME)
                .map(|e| String::from_utf8_lossy(e.data().as_slice()).to_ascii_lowercase())
                .collect();
        }
        Ok(CertEntry { names, chain, key })
    }

    fn covers(&self, server_name: &str) -> Option<bool> {
        let mut wildcard = false;
        for n in &self.names {
            if n == server_name {
                return Some(true);
            }
            if let Some(suffix) = n.strip_prefix("*.") {
                if let Some((label, rest)) = server_name.split_once('.') {
                    if !label.is_empty() && rest == suffix {
                        wildcard = true;
                    }
                }
            }
        }
        wildcard.then_some(false)
    }
}

impl CertStore {
    /// The certificate for a server name: exact, then wildcard, then the first.
    pub fn select(&self, server_name: Option<&str>) -> Option<&CertEntry> {
        if let Some(name) = server_name {
            let name = name.to_ascii_lowercase();
            let mut wildcard = None;
            for e in &self.entries {
                match e.covers(&name) {
                    Some(true) => return Some(e),
                    Some(false) if wildcard.is_none() => wildcard = Some(e),
                    _ => {}
                }
            }
            if wildcard.is_some() {
                return wildcard;
            }
        }
        self.entries.first()
    }
}

/// Checks that a client-CA bundle file holds at least one certificate.
pub fn check_ca_bundle(path: &Path) -> Result<usize, CertError> {
    let pem = std::fs::read(path).map_err(|e| CertError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| CertError::Cert {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(CertError::Cert {
            path: path.display().to_string(),
            reason: "the file is empty".into(),
        });
    }
    Ok(certs.len())
}

/// The identity a client certificate states.
pub fn identity_of(cert: &X509) -> ClientCertIdentity {
    let text = |e: &pingora::tls::x509::X509NameEntryRef| {
        String::from_utf8_lossy(e.data().as_slice()).into_owned()
    };
    let subject = cert.subject_name();
    ClientCertIdentity {
        subject_cn: subject
            .entries_by_nid(pingora::tls::nid::Nid::COMMONNAME)
            .next()
            .map(text),
        subject_ou: subject
            .entries_by_nid(pingora::tls::nid::Nid::ORGANIZATIONALUNITNAME)
            .map(text)
            .collect(),
        san_dns: cert
            .subject_alt_names()
            .map(|sans| {
                sans.iter()
                    .filter_map(|n| n.dnsname().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Pingora handshake callback that serves the store's certificates.
pub struct SniResolver {
    pub store: Arc<ArcSwap<CertStore>>,
    /// Read the client certificate's identity after the handshake (mTLS).
    pub client_identity: bool,
}

#[async_trait]
impl TlsAccept for SniResolver {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let store = self.store.load();
        let name = ssl.servername(NameType::HOST_NAME).map(str::to_string);
        let Some(entry) = store.select(name.as_deref()) else {
            log::error!("TLS handshake: the listener has no certificate");
            return;
        };
        let Some(leaf) = entry.chain.first() else {
            return;
        };
        if let Err(e) = pingora::tls::ext::ssl_use_certificate(ssl, leaf) {
            log::error!("TLS handshake: cannot use certificate: {e}");
            return;
        }
        if let Err(e) = pingora::tls::ext::ssl_use_private_key(ssl, &entry.key) {
            log::error!("TLS handshake: cannot use private key: {e}");
            return;
        }
        for intermediate in entry.chain.iter().skip(1) {
            if let Err(e) = pingora::tls::ext::ssl_add_chain_cert(ssl, intermediate) {
                log::error!("TLS handshake: cannot add chain certificate: {e}");
            }
        }
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        if !self.client_identity {
            return None;
        }
        // OpenSSL has verified the chain against client_ca by now; with
        // `client_auth = "optional"` there may be no certificate at all.
        let cert = ssl.peer_certificate()?;
        Some(Arc::new(identity_of(&cert)))
    }
}
