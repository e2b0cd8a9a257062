//! Client certificates: the TLS listener (with `client_ca`) has already
//! verified the chain during the handshake; this policy only reads who the
//! certificate names. The identity is extracted once per connection by the
//! TLS layer ([`crate::tls`]) into a [`ClientCertIdentity`].

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

use super::{AuthFailure, AuthMethod, Consumer, Credentials};
use crate::config::ConsumerFrom;

static X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertIdentity {
    pub subject_cn: Option<String>,
    pub san_dns: Vec<String>,
    /// Organizational units of the subject, offered as groups.
    pub subject_ou: Vec<String>,
}

pub struct MtlsPolicy {
    name: Arc<str>,
    consumer_from: ConsumerFrom,
}

impl MtlsPolicy {
    pub fn new(name: &str, consumer_from: ConsumerFrom) -> MtlsPolicy {
        MtlsPolicy {
            name: name.into(),
            consumer_from,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn authenticate(&self, creds: &Credentials<'_>) -> Result<Arc<Consumer>, AuthFailure> {
        let Some(id) = creds.client_cert else {
            return Err(AuthFailure::missing(
                "no client certificate: connect over TLS with a certificate signed by the listener's client_ca",
            ));
        };
        let name = match self.consumer_from {
            ConsumerFrom::SubjectCn => id.subject_cn.clone(),
            ConsumerFrom::SanDns => id.san_dns.first().cloned(),
        };
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            let what = match self.consumer_from {
                ConsumerFrom::SubjectCn => "a subject CN",
                ConsumerFrom::SanDns => "a DNS subjectAltName",
            };
            return Err(AuthFailure::new(
                "invalid_certificate",
                format!("the client certificate has no {what} to name the consumer"),
            ));
        };
        let header = HeaderValue::from_str(&name).map_err(|_| {
            AuthFailure::new(
                "invalid_certificate",
                "the client certificate's name is not printable",
            )
        })?;
        Ok(Arc::new(Consumer {
            name,
            groups: id.subject_ou.clone(),
            method: AuthMethod::Mtls,
            policy: self.name.clone(),
            forward: vec![(X_CONSUMER.clone(), header)],
            claims: serde_json::Map::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn consumer_from_cn_or_san() {
        let id = ClientCertIdentity {
            subject_cn: Some("device-7".into()),
            san_dns: vec!["d7.devices.example".into()],
            subject_ou: vec!["fleet".into()],
        };
        let h = HeaderMap::new();
        let creds = Credentials {
            headers: &h,
            query: None,
            client_cert: Some(&id),
        };
        let cn = MtlsPolicy::new("d", ConsumerFrom::SubjectCn);
        assert_eq!(cn.authenticate(&creds).unwrap().name, "device-7");
        let san = MtlsPolicy::new("d", ConsumerFrom::SanDns);
        assert_eq!(san.authenticate(&creds).unwrap().name, "d7.devices.example");
        let none = Credentials {
            headers: &h,
            query: None,
            client_cert: None,
        };
        assert_eq!(cn.authenticate(&none).unwrap_err().reason, "missing");
    }
}
