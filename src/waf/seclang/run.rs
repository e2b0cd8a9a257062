//! Runs a compiled SecLang program on one request, as ModSecurity does:
//! phase 1 then phase 2, rule by rule in load order, with the transaction
//! collection `TX`, flow control (`skip`, `skipAfter`), chains, captures,
//! `MATCHED_VAR(S)` and per-request `ctl:` removals.
//!
//! Where ModSecurity versions differ, this follows v3: a link's `setvar`s
//! run when that link matches (so a chain starter can set what its chained
//! rule reads), and `ctl:` actions run when the whole chain matches. Each
//! link's actions run once per match of the link, not once per matching
//! value (ModSecurity adds a rule's score once per matching value; here a
//! rule scores once however many arguments carry the attack).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use super::compile::{
    in_ranges, Ctl, Disruptive, EngineState, Exclusion, Link, NumCmp, Operator, Part, Program,
    Rule, Rx, Sel, SetOp, SetVar, Source, Step, Template, Var,
};
use crate::waf::clean_cache;
use crate::waf::engine::{
    invalid_url_encoding, may_be_sqli, may_be_xss, transformed, truncated, Form, Hit, Memo,
};
use crate::waf::request::{BodyKind, Field, RequestView};

/// Clean-cache "groups" of regex sets start here (below: link numbers).
const SET_KEYS: usize = 1 << 30;
use crate::waf::transform::apply_all;

/// One value of a variable.
struct Val<'a> {
    label: &'static str,
    key: Option<Cow<'a, str>>,
    /// Borrowed from the request view when it comes from the request.
    bytes: Cow<'a, [u8]>,
}

/// A value a rule matched: its name, and its value after the link's
/// transformations.
#[derive(Clone)]
struct Matched<'a> {
    label: &'static str,
    key: Option<Cow<'a, str>>,
    value: Form<'a>,
}

impl Matched<'_> {
    fn name(&self) -> String {
        match &self.key {
            Some(k) => format!("{}:{k}", self.label),
            None => self.label.to_string(),
        }
    }
}

/// What the run concluded.
#[derive(Debug, Default)]
pub struct Outcome {
    pub hits: Vec<Hit>,
    /// The status of a `deny` that ran with the engine on.
    pub deny: Option<u16>,
    /// The inbound anomaly score the rules computed.
    pub score: u32,
}

struct State<'a> {
    prog: &'a Program,
    req: &'a RequestView<'a>,
    tx: HashMap<String, String, foldhash::fast::FixedState>,
    matched_var: Option<Matched<'a>>,
    matched_vars: Vec<Matched<'a>>,
    removed_ids: Vec<(u32, u32)>,
    removed_tags: Vec<String>,
    removed_targets_by_id: Vec<((u32, u32), Exclusion)>,
    removed_targets_by_tag: Vec<(String, Exclusion)>,
    engine: EngineState,
    memo: Memo<'a>,
    /// Regex set results per (set, value address, length).
    set_memo: HashMap<(usize, usize, usize), bool, foldhash::fast::FixedState>,
    /// A value list to reuse for links without a slot.
    scratch: Vec<Val<'a>>,
    /// Value lists by slot, built on first use.
    value_cache: Vec<Option<Vec<Val<'a>>>>,
    out: Outcome,
    started: std::time::Instant,
    processor: &'static str,
}

enum Flow {
    Next,
    /// Stop this phase and every later one (`deny`, `allow`, engine off).
    Stop,
}

/// Runs the program; `excluded` rule ids do not run.
pub fn run(prog: &Program, req: &RequestView, excluded: &[u32]) -> Outcome {
    let mut s = State {
        prog,
        req,
        tx: HashMap::with_capacity_and_hasher(64, foldhash::fast::FixedState::default()),
        matched_var: None,
        matched_vars: Vec::new(),
        removed_ids: excluded.iter().map(|i| (*i, *i)).collect(),
        removed_tags: Vec::new(),
        removed_targets_by_id: Vec::new(),
        removed_targets_by_tag: Vec::new(),
        engine: prog.engine.unwrap_or(EngineState::On),
        memo: Memo::default(),
        value_cache: (0..prog.value_slots).map(|_| None).collect(),
        scratch: Vec::new(),
        set_memo: HashMap::with_capacity_and_hasher(256, foldhash::fast::FixedState::default()),
        out: Outcome::default(),
        started: std::time::Instant::now(),
        processor: body_processor(req),
    };
    if s.engine != EngineState::Off {
        for phase in 0..2 {
            if let Flow::Stop = s.phase(phase) {
                break;
            }
        }
    }
    s.out.score = [
        "inbound_anomaly_score",
        "anomaly_score",
        "blocking_inbound_anomaly_score",
    ]
    .iter()
    .map(|k| s.tx.get(*k).map_or(0, |v| atoi(v.as_bytes())))
    .max()
    .unwrap_or(0)
    .max(0) as u32;
    s.out
}

/// SecLang's `REQBODY_PROCESSOR` for the request's Content-Type: the
/// parser the request view uses for it.
fn body_processor(req: &RequestView) -> &'static str {
    let ct = req
        .headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| String::from_utf8_lossy(v))
        .unwrap_or_default();
    match BodyKind::of(&ct) {
        Some(BodyKind::Form) => "URLENCODED",
        Some(BodyKind::Json) => "JSON",
        Some(BodyKind::Xml) => "XML",
        Some(BodyKind::Multipart) => "MULTIPART",
        None => "",
    }
}

/// C's `atoi`: optional sign and leading digits; anything else is 0.
fn atoi(v: &[u8]) -> i64 {
    let v = v.trim_ascii_start();
    let (neg, digits) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    let mut n: i64 = 0;
    for b in digits.iter().take_while(|b| b.is_ascii_digit()) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -n
    } else {
        n
    }
}

impl<'a> State<'a> {
    fn phase(&mut self, p: usize) -> Flow {
        let prog = self.prog;
        let steps = &prog.phases[p];
        let mut i = 0;
        while i < steps.len() {
            let Step::Rule(ri) = steps[i] else {
                i += 1;
                continue;
            };
            let rule = &prog.rules[ri];
            if in_ranges(&self.removed_ids, rule.id)
                || rule.tags.iter().any(|t| self.removed_tags.contains(t))
            {
                i += 1;
                continue;
            }
            if !self.rule_matches(rule) {
                i += 1;
                continue;
            }
            if rule.log {
                self.record(rule);
            }
            match rule.disruptive {
                Disruptive::Deny(status) if self.engine == EngineState::On => {
                    self.out.deny = Some(status);
                    return Flow::Stop;
                }
                Disruptive::Allow => return Flow::Stop,
                _ => {}
            }
            if self.engine == EngineState::Off {
                return Flow::Stop;
            }
            if let Some(marker) = &rule.skip_after {
                // A marker that is not there skips to the phase's end.
                i = prog.markers[p].get(marker).copied().unwrap_or(steps.len());
                continue;
            }
            i += 1;
            let mut to_skip = rule.skip;
            while to_skip > 0 && i < steps.len() {
                if matches!(steps[i], Step::Rule(_)) {
                    to_skip -= 1;
                }
                i += 1;
            }
        }
        Flow::Next
    }

    fn record(&mut self, rule: &Rule) {
        if self.out.hits.iter().any(|h| h.id == rule.id) {
            return;
        }
        let msg = rule
            .msg
            .as_ref()
            .map(|m| self.expand(m, rule).into_owned())
            .unwrap_or_default();
        let (target, value) = match &self.matched_var {
            Some(m) => (m.name(), truncated(m.value.as_ref())),
            None => (String::new(), String::new()),
        };
        self.out.hits.push(Hit {
            id: rule.id,
            msg,
            score: rule.severity_score,
            target,
            value,
        });
    }

    /// Whether every link of the rule matches; runs their actions.
    fn rule_matches(&mut self, rule: &'a Rule) -> bool {
        // The starter's match is what the audit log shows.
        let mut first: Option<Matched<'a>> = None;
        for (n, link) in rule.links.iter().enumerate() {
            if !self.link_matches(rule, link) {
                return false;
            }
            if n == 0 {
                first = self.matched_var.clone();
            }
            for sv in &link.setvars {
                self.setvar(sv, rule);
            }
        }
        for link in &rule.links {
            for c in &link.ctls {
                self.ctl(c);
            }
        }
        if rule.links.len() > 1 {
            if let Some(f) = first {
                self.matched_var = Some(f);
            }
        }
        true
    }

    fn link_matches(&mut self, rule: &'a Rule, link: &'a Link) -> bool {
        if link.always {
            return true;
        }
        // A ctl removed targets of this rule: no shortcut, no shared list.
        let runtime_exclusions = self.has_runtime_exclusions(rule);
        if !runtime_exclusions {
            if let Some(m) = self.tx_number_check(rule, link) {
                return m;
            }
        }
        let slot = link.values_slot.filter(|_| !runtime_exclusions);
        let vals = match slot.and_then(|s| self.value_cache[s].take()) {
            Some(v) => v,
            None => {
                let mut vals = std::mem::take(&mut self.scratch);
                vals.clear();
                for var in &link.vars {
                    self.values(var, rule, &link.exclusions, &mut vals);
                }
                vals
            }
        };
        self.matched_vars.clear();
        let mut any = false;
        for val in &vals {
            let matched = if link.multi_match {
                self.multi_match(link, val, rule)
            } else {
                if let Some(in_set) = self.set_verdict(link, &val.bytes) {
                    // The set said the pattern does not match.
                    if !in_set {
                        continue;
                    }
                }
                // An operator that depends only on the value, seen not to
                // match these bytes on an earlier request.
                let clean = match &val.bytes {
                    Cow::Borrowed(r) if !link.negate && link.op.pure() => {
                        clean_cache::Key::new(self.prog.id, link.gid as usize, r)
                    }
                    _ => None,
                };
                if clean.is_some_and(|k| k.clean() != 0) {
                    continue;
                }
                let form = self.transform(link, &val.bytes);
                let ok = self.op(link, form.as_ref(), rule);
                if let (false, Some(k)) = (ok, clean) {
                    k.remember(1);
                }
                ok.then_some(form)
            };
            if let Some(value) = matched {
                any = true;
                let m = Matched {
                    label: val.label,
                    key: val.key.clone(),
                    value,
                };
                self.matched_vars.push(m.clone());
                self.matched_var = Some(m);
            }
        }
        match slot {
            Some(s) if self.value_cache[s].is_none() => self.value_cache[s] = Some(vals),
            _ => self.scratch = vals,
        }
        any
    }

    /// Whether the link's pattern matches the value, from its regex set
    /// (one scan per set and value); `None` when the set cannot say.
    /// Only values borrowed from the request view (`raw`) are remembered
    /// by address.
    #[allow(clippy::ptr_arg)] // whether it borrows is the point
    fn set_verdict(&mut self, link: &Link, raw: &Cow<'a, [u8]>) -> Option<bool> {
        let si = link.set?;
        let r: &'a [u8] = match raw {
            Cow::Borrowed(r) => r,
            Cow::Owned(_) => return None,
        };
        let key = (si, r.as_ptr() as usize, r.len());
        if let Some(any) = self.set_memo.get(&key) {
            return (!any).then_some(false);
        }
        // Remembered from an earlier request: no pattern of the set
        // matches these bytes.
        let clean = clean_cache::Key::new(self.prog.id, SET_KEYS + si, r);
        if clean.is_some_and(|k| k.clean() != 0) {
            self.set_memo.insert(key, false);
            return Some(false);
        }
        // One yes/no scan: "no" rejects every rule of the set on this
        // value; after a "yes" each rule runs its own regex (asking the
        // set which patterns matched costs more than that on clean values).
        let form = transformed(&mut self.memo, r, &link.transforms);
        let any = self.prog.sets[si].is_match(form.as_ref());
        self.set_memo.insert(key, any);
        if !any {
            if let Some(k) = clean {
                k.remember(1);
            }
        }
        (!any).then_some(false)
    }

    /// The commonest rule of all, `TX:name "@lt 2"` (paranoia gates, score
    /// checks), without building a value list: `None` for any other link
    /// (the caller has checked that no ctl removed targets of the rule).
    fn tx_number_check(&mut self, rule: &Rule, link: &Link) -> Option<bool> {
        let ([var], Operator::Num(cmp, t)) = (link.vars.as_slice(), &link.op) else {
            return None;
        };
        let Some(Sel::Key(key)) = &var.selector else {
            return None;
        };
        if var.source != Source::Tx || var.count || link.multi_match || !link.exclusions.is_empty()
        {
            return None;
        }
        self.matched_vars.clear();
        let Some(v) = self.tx.get(key.as_str()) else {
            return Some(false);
        };
        let a = atoi(v.as_bytes());
        let b = atoi(self.expand(t, rule).as_bytes());
        let matched = cmp.holds(a, b) != link.negate;
        if matched {
            let m = Matched {
                label: var.label,
                key: Some(Cow::Owned(key.clone())),
                value: Form::Owned(bytes::Bytes::from(v.clone().into_bytes())),
            };
            self.matched_vars.push(m.clone());
            self.matched_var = Some(m);
        }
        Some(matched)
    }

    fn has_runtime_exclusions(&self, rule: &Rule) -> bool {
        self.removed_targets_by_id
            .iter()
            .any(|(r, _)| (r.0..=r.1).contains(&rule.id))
            || self
                .removed_targets_by_tag
                .iter()
                .any(|(t, _)| rule.tags.contains(t))
    }

    fn transform(&mut self, link: &Link, raw: &Cow<'a, [u8]>) -> Form<'a> {
        match raw {
            Cow::Borrowed(r) => transformed(&mut self.memo, r, &link.transforms),
            Cow::Owned(o) => Form::Owned(bytes::Bytes::from(
                apply_all(&link.transforms, o).into_owned(),
            )),
        }
    }

    /// `multiMatch`: the operator runs on the value and after each step
    /// that changed it.
    fn multi_match(&mut self, link: &Link, val: &Val<'a>, rule: &Rule) -> Option<Form<'a>> {
        let mut cur: Cow<'_, [u8]> = Cow::Borrowed(val.bytes.as_ref());
        let found = |cur: Cow<'_, [u8]>| Form::Owned(bytes::Bytes::from(cur.into_owned()));
        if self.op(link, &cur, rule) {
            return Some(found(cur));
        }
        for t in &link.transforms {
            let before = cur.clone();
            cur = t.apply(cur);
            if cur != before && self.op(link, &cur, rule) {
                return Some(found(cur));
            }
        }
        None
    }

    /// The operator (with `!`) on one transformed value.
    fn op(&mut self, link: &Link, v: &[u8], rule: &Rule) -> bool {
        let m = match &link.op {
            Operator::Rx(rx) => self.rx(rx, v, link.capture),
            Operator::RxMacro(t, cache) => {
                let pattern = self.expand(t, rule).into_owned();
                let compiled = {
                    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
                    match c.get(&pattern) {
                        Some(rx) => Some(rx.clone()),
                        None => match Rx::compile(&pattern) {
                            Ok((rx, _)) => {
                                if c.len() >= 64 {
                                    c.clear();
                                }
                                let rx = std::sync::Arc::new(rx);
                                c.insert(pattern.clone(), rx.clone());
                                Some(rx)
                            }
                            Err(e) => {
                                log::debug!("rule {}: @rx {pattern:?}: {e}", rule.id);
                                None
                            }
                        },
                    }
                };
                compiled.is_some_and(|rx| self.rx(&rx, v, link.capture))
            }
            Operator::Pm(ac) => ac.is_match(v),
            Operator::Contains(t) | Operator::StrMatch(t) => {
                let p = self.expand(t, rule);
                contains(v, p.as_bytes())
            }
            Operator::ContainsWord(t) => {
                let p = self.expand(t, rule);
                contains_word(v, p.as_bytes())
            }
            Operator::BeginsWith(t) => v.starts_with(self.expand(t, rule).as_bytes()),
            Operator::EndsWith(t) => v.ends_with(self.expand(t, rule).as_bytes()),
            Operator::Streq(t) => v == self.expand(t, rule).as_bytes(),
            Operator::Within(t) => {
                let p = self.expand(t, rule);
                !v.is_empty() && contains(p.as_bytes(), v)
            }
            Operator::Num(cmp, t) => cmp.holds(atoi(v), atoi(self.expand(t, rule).as_bytes())),
            Operator::ValidateByteRange(allowed) => v.iter().any(|b| !allowed[usize::from(*b)]),
            Operator::ValidateUrlEncoding => invalid_url_encoding(v),
            Operator::ValidateUtf8 => std::str::from_utf8(v).is_err(),
            Operator::IpMatch(set) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| set.get_lpm(&ipnet::IpNet::from(ip)).is_some()),
            Operator::DetectSqli => {
                may_be_sqli(v) && {
                    let r = libinjectionrs::detect_sqli(v);
                    if r.is_injection() && link.capture {
                        if let Some(fp) = &r.fingerprint {
                            self.tx.insert("0".into(), fp.to_string());
                        }
                    }
                    r.is_injection()
                }
            }
            Operator::DetectXss => may_be_xss(v) && libinjectionrs::detect_xss(v).is_injection(),
            Operator::Unconditional => true,
            Operator::NoMatch => false,
        };
        m != link.negate
    }

    fn rx(&mut self, rx: &Rx, v: &[u8], capture: bool) -> bool {
        match rx {
            // Captures cost far more than a yes/no: only for a match.
            Rx::Linear(re) => {
                if !re.is_match(v) {
                    return false;
                }
                if capture {
                    if let Some(caps) = re.captures(v) {
                        let groups: Vec<Option<String>> = (0..10)
                            .map(|i| {
                                caps.get(i)
                                    .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                            })
                            .collect();
                        self.set_captures(groups);
                    }
                }
                true
            }
            Rx::Backtracking(re) => {
                let text = String::from_utf8_lossy(v);
                match re.captures(text.as_ref()) {
                    Ok(Some(caps)) => {
                        if capture {
                            let groups = (0..10)
                                .map(|i| caps.get(i).map(|m| m.as_str().to_string()))
                                .collect();
                            self.set_captures(groups);
                        }
                        true
                    }
                    Ok(None) => false,
                    Err(e) => {
                        log::debug!("backtracking regex gave up: {e}");
                        false
                    }
                }
            }
        }
    }

    fn set_captures(&mut self, groups: Vec<Option<String>>) {
        for (i, g) in groups.into_iter().enumerate() {
            let key = i.to_string();
            match g {
                Some(text) => {
                    self.tx.insert(key, text);
                }
                None => {
                    self.tx.remove(&key);
                }
            }
        }
    }

    fn excluded(
        &self,
        rule: &Rule,
        static_ex: &[Exclusion],
        source: Source,
        key: Option<&str>,
    ) -> bool {
        static_ex.iter().any(|e| e.covers(source, key))
            || self
                .removed_targets_by_id
                .iter()
                .any(|(r, e)| (r.0..=r.1).contains(&rule.id) && e.covers(source, key))
            || self
                .removed_targets_by_tag
                .iter()
                .any(|(t, e)| rule.tags.contains(t) && e.covers(source, key))
    }

    /// Appends the values of `var` (selected, exclusions applied).
    fn values(&self, var: &Var, rule: &Rule, ex: &[Exclusion], out: &mut Vec<Val<'a>>) {
        let start = out.len();
        let req = self.req;
        let label = var.label;
        let sel_ok = |key: &str| var.selector.as_ref().is_none_or(|s| s.matches(key));
        let keyed = |key: &'a str, value: &'a [u8], out: &mut Vec<Val<'a>>| {
            if sel_ok(key) && !self.excluded(rule, ex, var.source, Some(key)) {
                out.push(Val {
                    label,
                    key: Some(Cow::Borrowed(key)),
                    bytes: Cow::Borrowed(value),
                });
            }
        };
        let scalar = |value: Cow<'a, [u8]>, out: &mut Vec<Val<'a>>| {
            if var.selector.is_none() && !self.excluded(rule, ex, var.source, None) {
                out.push(Val {
                    label,
                    key: None,
                    bytes: value,
                });
            }
        };
        // A keyed collection's values (or, with `names`, its keys).
        let fields = |list: &'a [Field<'a>], names: bool, out: &mut Vec<Val<'a>>| {
            for (k, v) in list {
                keyed(k, if names { k.as_bytes() } else { v }, out);
            }
        };
        let owned = |s: String| Cow::Owned(s.into_bytes());
        let path = || req.uri_path();
        match var.source {
            Source::Args
            | Source::ArgsGet
            | Source::ArgsPost
            | Source::ArgsNames
            | Source::ArgsGetNames
            | Source::ArgsPostNames => {
                use Source::*;
                let names = matches!(var.source, ArgsNames | ArgsGetNames | ArgsPostNames);
                if !matches!(var.source, ArgsPost | ArgsPostNames) {
                    fields(&req.query_args, names, out);
                }
                if !matches!(var.source, ArgsGet | ArgsGetNames) {
                    fields(&req.body_args, names, out);
                }
            }
            Source::ArgsCombinedSize => {
                let n: usize = req.args().map(|(k, v)| k.len() + v.len()).sum();
                scalar(owned(n.to_string()), out)
            }
            Source::Cookies => fields(&req.cookies, false, out),
            Source::CookiesNames => fields(&req.cookies, true, out),
            Source::Headers => fields(&req.headers, false, out),
            Source::HeadersNames => fields(&req.headers, true, out),
            Source::Filename => scalar(Cow::Borrowed(path()), out),
            Source::Basename => {
                let p = path();
                let base = &p[p.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1)..];
                scalar(Cow::Borrowed(base), out)
            }
            Source::Uri | Source::UriRaw => scalar(Cow::Borrowed(req.uri), out),
            Source::Line => {
                let mut line = Vec::with_capacity(req.uri.len() + 20);
                line.extend_from_slice(req.method.as_bytes());
                line.push(b' ');
                line.extend_from_slice(req.uri);
                line.push(b' ');
                line.extend_from_slice(req.protocol.as_bytes());
                scalar(Cow::Owned(line), out)
            }
            Source::Method => scalar(Cow::Borrowed(req.method.as_bytes()), out),
            Source::Protocol => scalar(Cow::Borrowed(req.protocol.as_bytes()), out),
            Source::Body => {
                if !req.body.is_empty() {
                    scalar(Cow::Borrowed(req.body), out)
                }
            }
            Source::BodyLength => scalar(owned(req.body.len().to_string()), out),
            Source::QueryString => {
                if !req.query.is_empty() {
                    scalar(Cow::Borrowed(req.query), out)
                }
            }
            Source::RemoteAddr => {
                if let Some(ip) = req.client_ip {
                    scalar(owned(ip.to_string()), out)
                }
            }
            Source::Files => fields(&req.files, false, out),
            Source::FilesNames => fields(&req.files, true, out),
            Source::FilesCombinedSize => scalar(owned("0".into()), out),
            Source::MultipartPartHeaders => fields(&req.part_headers, false, out),
            Source::Xml => {
                if self.processor == "XML" {
                    for (_, v) in &req.body_args {
                        if !self.excluded(rule, ex, var.source, None) {
                            out.push(Val {
                                label,
                                key: Some(Cow::Borrowed("/*")),
                                bytes: Cow::Borrowed(v),
                            });
                        }
                    }
                }
            }
            Source::Tx => match &var.selector {
                Some(Sel::Key(k)) => {
                    if let Some(v) = self.tx.get(k.as_str()) {
                        if !self.excluded(rule, ex, var.source, Some(k)) {
                            out.push(Val {
                                label,
                                key: Some(Cow::Owned(k.clone())),
                                bytes: Cow::Owned(v.clone().into_bytes()),
                            });
                        }
                    }
                }
                sel => {
                    for (k, v) in &self.tx {
                        if sel.as_ref().is_none_or(|s| s.matches(k))
                            && !self.excluded(rule, ex, var.source, Some(k))
                        {
                            out.push(Val {
                                label,
                                key: Some(Cow::Owned(k.clone())),
                                bytes: Cow::Owned(v.clone().into_bytes()),
                            });
                        }
                    }
                }
            },
            Source::MatchedVar => {
                if let Some(m) = &self.matched_var {
                    scalar(Cow::Owned(m.value.as_ref().to_vec()), out)
                }
            }
            Source::MatchedVarName => {
                if let Some(m) = &self.matched_var {
                    scalar(owned(m.name()), out)
                }
            }
            Source::MatchedVars | Source::MatchedVarsNames => {
                for m in &self.matched_vars {
                    let n = m.name();
                    if sel_ok(&n) {
                        let bytes = if var.source == Source::MatchedVars {
                            m.value.as_ref().to_vec()
                        } else {
                            n.clone().into_bytes()
                        };
                        out.push(Val {
                            label,
                            key: Some(Cow::Owned(n)),
                            bytes: Cow::Owned(bytes),
                        });
                    }
                }
            }
            Source::ReqbodyProcessor => scalar(Cow::Borrowed(self.processor.as_bytes()), out),
            Source::ReqbodyError => scalar(
                Cow::Borrowed(if req.body_malformed { b"1" } else { b"0" }),
                out,
            ),
            Source::ReqbodyErrorMsg => {
                if req.body_malformed {
                    scalar(owned(format!("{} parsing error", self.processor)), out)
                }
            }
            Source::UniqueId => scalar(owned(format!("{:016x}", fastrand::u64(..))), out),
            Source::Duration => scalar(owned(self.started.elapsed().as_micros().to_string()), out),
            Source::Empty => {}
        }
        if var.count {
            let n = out.len() - start;
            out.truncate(start);
            out.push(Val {
                label,
                key: match &var.selector {
                    Some(Sel::Key(k)) => Some(Cow::Owned(k.clone())),
                    _ => None,
                },
                bytes: owned(n.to_string()),
            });
        }
    }

    /// Expands `%{...}` macros.
    fn expand<'t>(&self, t: &'t Template, rule: &Rule) -> Cow<'t, str> {
        if let [Part::Lit(s)] = t.parts.as_slice() {
            return Cow::Borrowed(s);
        }
        let mut out = String::new();
        for p in &t.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::RuleField(f) => {
                    if f == "id" {
                        out.push_str(&rule.id.to_string());
                    }
                }
                Part::Macro(source, key, label) => {
                    let var = Var {
                        count: false,
                        source: *source,
                        label,
                        selector: key.as_ref().map(|k| Sel::Key(k.clone())),
                    };
                    let mut vals = Vec::new();
                    self.values(&var, rule, &[], &mut vals);
                    if let Some(v) = vals.first() {
                        out.push_str(&String::from_utf8_lossy(&v.bytes));
                    }
                }
            }
        }
        Cow::Owned(out)
    }

    fn setvar(&mut self, sv: &SetVar, rule: &Rule) {
        match sv {
            SetVar::Delete(key) => {
                let k = self.expand(key, rule).to_ascii_lowercase();
                self.tx.remove(&k);
            }
            SetVar::Set { key, op, value } => {
                let k = self.expand(key, rule).to_ascii_lowercase();
                let v = self.expand(value, rule).into_owned();
                let new = match op {
                    SetOp::Assign => v,
                    SetOp::Add | SetOp::Sub => {
                        let old = self.tx.get(&k).map_or(0, |o| atoi(o.as_bytes()));
                        let d = atoi(v.as_bytes());
                        let n = if matches!(op, SetOp::Add) {
                            old.saturating_add(d)
                        } else {
                            old.saturating_sub(d)
                        };
                        n.to_string()
                    }
                };
                self.tx.insert(k, new);
            }
        }
    }

    fn ctl(&mut self, c: &Ctl) {
        match c {
            Ctl::RemoveById(r) => self.removed_ids.extend(r.iter().copied()),
            Ctl::RemoveByTag(t) => self.removed_tags.push(t.clone()),
            Ctl::RemoveTargetById(ranges, ex) => {
                for r in ranges {
                    for e in ex {
                        self.removed_targets_by_id.push((*r, e.clone()));
                    }
                }
            }
            Ctl::RemoveTargetByTag(t, ex) => {
                for e in ex {
                    self.removed_targets_by_tag.push((t.clone(), e.clone()));
                }
            }
            Ctl::Engine(state) => self.engine = *state,
        }
    }
}

impl NumCmp {
    fn holds(self, a: i64, b: i64) -> bool {
        match self {
            NumCmp::Eq => a == b,
            NumCmp::Ge => a >= b,
            NumCmp::Gt => a > b,
            NumCmp::Le => a <= b,
            NumCmp::Lt => a < b,
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn contains_word(hay: &[u8], word: &[u8]) -> bool {
    if word.is_empty() {
        return true;
    }
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    hay.windows(word.len()).enumerate().any(|(i, w)| {
        w == word
            && (i == 0 || !is_word(hay[i - 1]))
            && hay.get(i + word.len()).is_none_or(|b| !is_word(*b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_is_c_like() {
        assert_eq!(atoi(b"42abc"), 42);
        assert_eq!(atoi(b" -7"), -7);
        assert_eq!(atoi(b"x"), 0);
        assert_eq!(atoi(b""), 0);
    }

    #[test]
    fn words() {
        assert!(contains_word(b"a select b", b"select"));
        assert!(!contains_word(b"selection", b"select"));
    }
}
