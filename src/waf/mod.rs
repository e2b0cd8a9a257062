//! The web application firewall: "does this request look hostile?", asked
//! before "who are you?".
//!
//! * IP screening first (before routing): `allow_ips` skip the WAF,
//!   `deny_ips` / `deny_ip_files` get 403. Prefix tries (IPv4 and IPv6),
//!   no linear scan; the client address honours `server.trusted_proxies`.
//! * Signatures after routing (a route may turn the WAF off, to detect
//!   only, or exclude rule ids): the native rules of `rules/*.toml` run on a
//!   [`RequestView`] of the request — and of its body, read (up to
//!   `max_body`, at most Pingora's 64 KiB retry buffer) before anything is
//!   forwarded and replayed to the backend intact. Each rule that fires adds
//!   its severity to the inbound anomaly score; at `anomaly_threshold` the
//!   request is blocked (403, JSON) in `block` mode, or passed and logged in
//!   `detect` mode.
//! * Every blocked or detected request gets one JSON line in the audit log
//!   with the rule ids, targets and a truncated matched value; values of
//!   credential-carrying targets are never written.
//!
//! [`Inspector`] is the one interface the proxy calls, whatever engine sits
//! behind it: the native rules ([`Engine`]) or the OWASP Core Rule Set
//! ([`seclang::Crs`], whose own blocking evaluation decides).

pub(crate) mod clean_cache;
pub mod engine;
pub mod graphql;
pub(crate) mod prefilter;
pub mod request;
pub mod rules;
pub mod seclang;
pub mod transform;

use std::net::IpAddr;
use std::sync::Arc;

use prefix_trie::joint::JointPrefixSet;
use serde::Serialize;

pub use engine::{Engine, Hit};
pub use request::RequestView;

/// `[waf] mode` and a route's `waf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Block,
    Detect,
    Off,
}

/// What to do with a body over `max_body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOverflow {
    /// Forward it uninspected (only when its size is declared up front).
    Pass,
    /// 413.
    Block,
}

/// What an inspector found.
#[derive(Debug, Default)]
pub struct Inspection {
    pub hits: Vec<Hit>,
    /// `None`: the hits' scores are summed against `[waf] anomaly_threshold`.
    /// `Some((score, deny))`: the rule set scored and decided itself
    /// (`deny` is the status of the disruptive rule that ran, if one did).
    pub decided: Option<(u32, Option<u16>)>,
}

/// Inspects a request view; the engines behind the WAF implement it.
pub trait Inspector: Send + Sync {
    /// The rules that fire on `req`, ignoring the `excluded` ids.
    fn inspect(&self, req: &RequestView, excluded: &[u32]) -> Inspection;
    /// Whether any rule reads the body (else it is never buffered).
    fn reads_body(&self) -> bool;
}

impl Inspector for Engine {
    fn inspect(&self, req: &RequestView, excluded: &[u32]) -> Inspection {
        Inspection {
            hits: self.run(req, excluded),
            decided: None,
        }
    }
    fn reads_body(&self) -> bool {
        Engine::reads_body(self)
    }
}

impl Inspector for seclang::Crs {
    fn inspect(&self, req: &RequestView, excluded: &[u32]) -> Inspection {
        let v = self.run(req, excluded);
        Inspection {
            hits: v.hits,
            decided: Some((v.score, v.deny)),
        }
    }
    fn reads_body(&self) -> bool {
        true
    }
}

/// The compiled `[waf]` section.
pub struct Waf {
    pub mode: Mode,
    pub paranoia: u8,
    pub anomaly_threshold: u32,
    pub max_body: usize,
    pub body_overflow: BodyOverflow,
    pub deny: JointPrefixSet<ipnet::IpNet>,
    pub allow: JointPrefixSet<ipnet::IpNet>,
    pub inspector: Arc<dyn Inspector>,
    pub audit_log: crate::observe::AccessLogTarget,
}

/// A route's WAF setting.
#[derive(Debug, Clone, Default)]
pub struct RouteWaf {
    /// `None`: inherit `[waf] mode`.
    pub mode: Option<Mode>,
    pub exclude: Vec<u32>,
}

/// The outcome of screening by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVerdict {
    /// On `allow_ips`: no WAF for this request.
    Allowed,
    Denied,
    Inspect,
}

/// The outcome of inspecting a request.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub hits: Vec<Hit>,
    pub score: u32,
    pub block: bool,
    /// The status a block answers with.
    pub status: u16,
    /// Logged without blocking: over the threshold in detect mode, or
    /// (Core Rule Set) any rule that logs.
    pub detected: bool,
    /// The mode it was inspected in (block or detect).
    pub mode: Mode,
}

impl Waf {
    pub fn screen_ip(&self, ip: Option<IpAddr>) -> IpVerdict {
        let Some(ip) = ip else {
            return IpVerdict::Inspect;
        };
        let net = ipnet::IpNet::from(ip);
        if self.allow.get_lpm(&net).is_some() {
            IpVerdict::Allowed
        } else if self.deny.get_lpm(&net).is_some() {
            IpVerdict::Denied
        } else {
            IpVerdict::Inspect
        }
    }

    /// The effective mode on a route.
    pub fn mode_for(&self, route: &RouteWaf) -> Mode {
        match (self.mode, route.mode) {
            (Mode::Off, _) => Mode::Off,
            (_, Some(Mode::Off)) => Mode::Off,
            (_, Some(Mode::Detect)) => Mode::Detect,
            (m, _) => m,
        }
    }

    /// Runs the rules and scores the result.
    pub fn inspect(&self, req: &RequestView, route: &RouteWaf, mode: Mode) -> Verdict {
        let found = self.inspector.inspect(req, &route.exclude);
        let hits = found.hits;
        let (score, deny, logs) = match found.decided {
            Some((score, deny)) => (score, deny, deny.is_some() || !hits.is_empty()),
            None => {
                let score = hits.iter().map(|h| h.score).sum();
                let deny = (score >= self.anomaly_threshold).then_some(403);
                (score, deny, deny.is_some())
            }
        };
        let block = mode == Mode::Block && deny.is_some();
        Verdict {
            block,
            status: deny.unwrap_or(403),
            detected: !block && logs,
            hits,
            score,
            mode,
        }
    }
}

/// Targets whose values may be credentials: never written to the audit log.
/// Native names (`cookie:x`, `header:authorization`) and the Core Rule
/// Set's (`REQUEST_COOKIES:x`, `REQUEST_HEADERS:Authorization`).
fn is_secret_target(target: &str) -> bool {
    let t = target.to_ascii_lowercase();
    let header = t
        .strip_prefix("header:")
        .or_else(|| t.strip_prefix("request_headers:"));
    t.starts_with("cookie:")
        || t.starts_with("request_cookies:")
        || matches!(
            header,
            Some("authorization" | "proxy-authorization" | "cookie")
        )
        || t.contains("api-key")
        || t.contains("api_key")
        || t.contains("token")
        || t.contains("password")
        || t.contains("secret")
}

/// One audit log line.
#[derive(Debug, Serialize)]
pub struct AuditEntry<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    /// `blocked` or `detected`; `denied_ip` for the deny list.
    pub action: &'a str,
    pub score: u32,
    pub threshold: u32,
    pub rules: Vec<AuditRule<'a>>,
}

#[derive(Debug, Serialize)]
pub struct AuditRule<'a> {
    pub id: u32,
    pub msg: &'a str,
    pub target: &'a str,
    /// Truncated; `[redacted]` for credential-carrying targets.
    pub value: &'a str,
}

/// The audit view of hits: secrets redacted.
pub fn audit_rules(hits: &[Hit]) -> Vec<AuditRule<'_>> {
    hits.iter()
        .map(|h| AuditRule {
            id: h.id,
            msg: &h.msg,
            target: &h.target,
            value: if is_secret_target(&h.target) {
                "[redacted]"
            } else {
                &h.value
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_audit_log() {
        let hit = |target: &str| Hit {
            id: 1,
            msg: "m".into(),
            score: 5,
            target: target.into(),
            value: "secret-value".into(),
        };
        let hits = [
            hit("header:authorization"),
            hit("cookie:session"),
            hit("args:api_key"),
            hit("args:q"),
            // The Core Rule Set's names.
            hit("REQUEST_HEADERS:authorization"),
            hit("REQUEST_COOKIES:session"),
            hit("ARGS:json.password"),
            hit("REQUEST_HEADERS:user-agent"),
        ];
        let out = audit_rules(&hits);
        let values: Vec<&str> = out.iter().map(|r| r.value).collect();
        assert_eq!(
            values,
            [
                "[redacted]",
                "[redacted]",
                "[redacted]",
                "secret-value",
                "[redacted]",
                "[redacted]",
                "[redacted]",
                "secret-value"
            ]
        );
    }
}
