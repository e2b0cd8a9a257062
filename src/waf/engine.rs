//! The native signature engine: rules compiled once per config load, run
//! against a [`RequestView`].
//!
//! Rules that share a transform chain form a group. Per request the engine
//! walks each target's values once; each value is transformed once per
//! group that reads it (a value no step of a chain can change, most of
//! them, is not transformed at all; chains share the steps they have in
//! common) and each group runs, in one pass, the regexes of its rules that
//! read the target (a `RegexSet` per group and target, shared by targets
//! the same rules read; phrase lists are Aho-Corasick automata). A set of
//! only those, rather than the whole group's, keeps a target few rules
//! read (the raw query) from being scanned by every pattern of the chain,
//! at the price of compiling a pattern once per distinct set. One set for all
//! groups was tried, even only to ask "does any pattern match" of the
//! forms that several chains share: its lazy DFA has so many more states
//! that new inputs spent their time building them (a benign corpus request
//! took a millisecond). Values found clean are remembered per thread
//! (`clean_cache`).
//!
//! Regexes use Rust's `regex` crate: finite automata, linear in the input,
//! no backtracking — a pattern that needs backreferences or look-around is
//! refused when the rules load, and every pattern's compiled size is capped. Rules above the
//! configured paranoia level are not compiled at all.
//!
//! Patterns match bytes, ASCII-only (`\w`, `\s`, `\b` are ASCII; `\xHH` is
//! a raw byte): Unicode classes would push the engine off its DFA onto a
//! much slower one, and attack syntax is ASCII anyway.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use prefix_trie::joint::JointPrefixSet;
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::clean_cache;
use super::prefilter::{needed_bytes, ByteSet};
use super::request::{Field, RequestView};
use super::rules::{severity_score, LocatedRule};
use super::transform::{apply_all, ChainReacts, Summary, Transform};
use bytes::Bytes;

/// Where a rule looks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Method,
    Path,
    Uri,
    /// The URI's path as sent: before any `?`, neither decoded nor
    /// normalized (what `uri` adds to `args` for most rules).
    UriPath,
    Query,
    Args,
    ArgsNames,
    QueryArgs,
    BodyArgs,
    Headers,
    HeaderNames,
    Header(String),
    Cookies,
    CookieNames,
    Body,
    Files,
    ClientIp,
    /// How many Content-Length fields the request has (as text).
    ContentLengthFields,
    TransferEncoding,
    /// `1` when the body does not parse as its Content-Type says.
    BodyError,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        if let Some(h) = s.strip_prefix("header:") {
            return (!h.is_empty()).then(|| Target::Header(h.to_ascii_lowercase()));
        }
        Some(match s {
            "method" => Target::Method,
            "path" => Target::Path,
            "uri" => Target::Uri,
            "uri_path" => Target::UriPath,
            "query" => Target::Query,
            "args" => Target::Args,
            "args_names" => Target::ArgsNames,
            "query_args" => Target::QueryArgs,
            "body_args" => Target::BodyArgs,
            "headers" => Target::Headers,
            "header_names" => Target::HeaderNames,
            "user_agent" => Target::Header("user-agent".into()),
            "cookies" => Target::Cookies,
            "cookie_names" => Target::CookieNames,
            "body" => Target::Body,
            "files" => Target::Files,
            "client_ip" => Target::ClientIp,
            "content_length_fields" => Target::ContentLengthFields,
            "transfer_encoding" => Target::TransferEncoding,
            "body_error" => Target::BodyError,
            _ => return None,
        })
    }

    pub const NAMES: &'static str = "method, path, uri, uri_path, query, args, args_names, query_args, body_args, headers, header_names, header:NAME, user_agent, cookies, cookie_names, body, files, client_ip, content_length_fields, transfer_encoding, body_error";

    /// Whether the target reads the body (such rules need it read first).
    pub fn reads_body(&self) -> bool {
        matches!(
            self,
            Target::Args
                | Target::ArgsNames
                | Target::BodyArgs
                | Target::Body
                | Target::Files
                | Target::BodyError
        )
    }

    /// Calls `f(name, value)` for each value of the target in `req`.
    fn each<'a>(&self, req: &'a RequestView, f: &mut dyn FnMut(Name<'a>, Cow<'a, [u8]>)) {
        let b = |v: &'a [u8]| Cow::Borrowed(v);
        match self {
            Target::Method => f(Name::Static("method"), b(req.method.as_bytes())),
            Target::Path => f(Name::Static("path"), b(req.path.as_bytes())),
            Target::Uri => f(Name::Static("uri"), b(req.uri)),
            Target::UriPath => f(Name::Static("uri_path"), b(req.uri_path())),
            Target::Query => {
                if !req.query.is_empty() {
                    f(Name::Static("query"), b(req.query))
                }
            }
            Target::Args => {
                for (k, v) in req.args() {
                    f(Name::Of("args:", k), b(v));
                }
            }
            Target::ArgsNames => {
                for k in &req.arg_names {
                    f(Name::Static("args_names"), b(k.as_bytes()));
                }
            }
            Target::QueryArgs => values(&req.query_args, "args:", f),
            Target::BodyArgs => values(&req.body_args, "args:", f),
            Target::Headers => values(&req.headers, "header:", f),
            Target::HeaderNames => names(&req.headers, "header_names", f),
            Target::Header(name) => {
                for (k, v) in req.headers.iter().filter(|(k, _)| k == name) {
                    f(Name::Of("header:", k), b(v));
                }
            }
            Target::Cookies => values(&req.cookies, "cookie:", f),
            Target::CookieNames => names(&req.cookies, "cookie_names", f),
            Target::Body => {
                if !req.body.is_empty() {
                    f(Name::Static("body"), b(req.body));
                }
            }
            Target::Files => values(&req.files, "files:", f),
            Target::ClientIp => {
                if let Some(ip) = req.client_ip {
                    f(
                        Name::Static("client_ip"),
                        Cow::Owned(ip.to_string().into_bytes()),
                    );
                }
            }
            Target::ContentLengthFields => f(
                Name::Static("content_length_fields"),
                Cow::Owned(req.content_length_fields.to_string().into_bytes()),
            ),
            Target::TransferEncoding => {
                if let Some(te) = &req.transfer_encoding {
                    f(Name::Static("transfer_encoding"), b(te));
                }
            }
            Target::BodyError => {
                if req.body_malformed {
                    f(Name::Static("body_error"), b(b"1"));
                }
            }
        }
    }
}

/// Each field's value, named `prefix` + its name.
fn values<'a>(
    fields: &'a [Field<'_>],
    prefix: &'static str,
    f: &mut dyn FnMut(Name<'a>, Cow<'a, [u8]>),
) {
    for (k, v) in fields {
        f(Name::Of(prefix, k), Cow::Borrowed(v));
    }
}

/// Each field's name, as a value of the target `label`.
fn names<'a>(
    fields: &'a [Field<'_>],
    label: &'static str,
    f: &mut dyn FnMut(Name<'a>, Cow<'a, [u8]>),
) {
    for (k, _) in fields {
        f(Name::Static(label), Cow::Borrowed(k.as_bytes()));
    }
}

/// A value's name in hits and the audit log, built only when a rule fires.
#[derive(Clone, Copy)]
enum Name<'a> {
    Static(&'static str),
    Of(&'static str, &'a str),
}

impl Name<'_> {
    fn render(self) -> String {
        match self {
            Name::Static(s) => s.to_string(),
            Name::Of(prefix, k) => format!("{prefix}{k}"),
        }
    }
}

#[derive(Debug)]
enum Op {
    /// The regex itself only for a negated rule (which runs on its own).
    /// Positive rules run in their targets' sets alone: keeping their own
    /// compiled copies would only cost memory.
    Regex(Option<Box<Regex>>),
    Phrases(Box<AhoCorasick>),
    Contains(Vec<u8>),
    StartsWith(Vec<u8>),
    EndsWith(Vec<u8>),
    Equals(Vec<u8>),
    Num(NumCmp, f64),
    IpMatch(Box<JointPrefixSet<ipnet::IpNet>>),
    DetectSqli,
    DetectXss,
    /// Matches a malformed `%` escape.
    InvalidUrlEncoding,
    InvalidUtf8,
    /// Matches a byte outside the allowed set.
    ByteRange(Box<[bool; 256]>),
    /// Matches when the target has no value at all.
    Absent,
}

#[derive(Debug, Clone, Copy)]
enum NumCmp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: u32,
    pub msg: String,
    pub score: u32,
    pub paranoia: u8,
    pub tags: Vec<String>,
    targets: Vec<Target>,
    op: Op,
    negate: bool,
}

/// Rules that share a transform chain: each value is transformed once per
/// chain.
#[derive(Debug)]
struct Group {
    transforms: Vec<Transform>,
    /// Which values the chain can change at all.
    reacts: ChainReacts,
    rules: Vec<Rule>,
}

/// The positive regexes of one group that read one target, as one set.
#[derive(Debug)]
struct Scan {
    set: RegexSet,
    /// The rule (index in the group) of each pattern.
    rules: Vec<usize>,
    /// Bytes without which no regex of the set can match (`prefilter`).
    needs: Option<ByteSet>,
}

/// How one group reads one target.
#[derive(Debug)]
struct ReaderGroup {
    group: usize,
    /// Its positive regexes that read the target, run as one set: only
    /// those, so a target few rules read (the raw query) is not scanned
    /// with the whole group's automaton. Targets with the same rules share
    /// the set (and its automaton's cache).
    scan: Option<Arc<Scan>>,
    /// Its rules evaluated one by one: all but the positive regexes and
    /// positive `absent` (which looks at what is missing, not at values).
    own: Vec<usize>,
}

/// The groups that read one target, in group order.
#[derive(Debug)]
struct Reader {
    target: Target,
    groups: Vec<ReaderGroup>,
    /// The clean-cache bits of all its groups; `None` when a group is
    /// past [`CACHED_GROUPS`] (its verdicts are never remembered).
    all_groups: Option<u64>,
}

/// A transformed value: the request view's own bytes when no step
/// changed them, else a shared copy.
#[derive(Clone)]
pub(crate) enum Form<'a> {
    Borrowed(&'a [u8]),
    Owned(Bytes),
}

impl AsRef<[u8]> for Form<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Form::Borrowed(b) => b,
            Form::Owned(o) => o,
        }
    }
}

/// What the engine knows of one value of the request view during a run:
/// its byte summary and the results of the transform steps applied to it
/// so far, keyed by the steps that changed it (5 bits per step).
struct ValueMemo<'a> {
    /// The value's address and length in the request view.
    key: (usize, usize),
    summary: Summary,
    forms: Vec<(u128, Form<'a>, Summary)>,
}

/// The memo of one run: every value seen, found by its address.
#[derive(Default)]
pub(crate) struct Memo<'a> {
    values: Vec<ValueMemo<'a>>,
    /// Address to index, once there are more values than a scan is quick
    /// for (a JSON body has dozens; a GET a handful).
    index: std::collections::HashMap<(usize, usize), usize, foldhash::fast::FixedState>,
}

/// Up to this many values a linear scan finds one faster than a hash.
const MEMO_SCAN: usize = 12;

impl<'a> Memo<'a> {
    /// Where the value's entry is, made with `summary` (the value's own)
    /// when new.
    fn entry(&mut self, raw: &'a [u8], summary: Option<Summary>) -> usize {
        let key = (raw.as_ptr() as usize, raw.len());
        let found = if self.values.len() <= MEMO_SCAN {
            self.values.iter().position(|m| m.key == key)
        } else {
            self.index.get(&key).copied()
        };
        let i = match found {
            Some(i) => i,
            None => {
                self.values.push(ValueMemo {
                    key,
                    summary: summary.unwrap_or_else(|| Summary::of(raw)),
                    forms: Vec::new(),
                });
                let i = self.values.len() - 1;
                if self.values.len() == MEMO_SCAN + 1 {
                    for (n, v) in self.values.iter().enumerate() {
                        self.index.insert(v.key, n);
                    }
                } else if self.values.len() > MEMO_SCAN {
                    self.index.insert(key, i);
                }
                i
            }
        };
        i
    }
}

/// `chain` applied to `raw` (a value borrowed from the request view),
/// computing only steps that can change it and never the same steps twice.
pub(crate) fn transformed<'a>(memo: &mut Memo<'a>, raw: &'a [u8], chain: &[Transform]) -> Form<'a> {
    let i = memo.entry(raw, None);
    transformed_in(&mut memo.values[i], raw, chain)
}

/// [`transformed`], with the value's memo entry already found.
fn transformed_in<'a>(m: &mut ValueMemo<'a>, raw: &'a [u8], chain: &[Transform]) -> Form<'a> {
    let mut form = Form::Borrowed(raw);
    let mut summary = m.summary;
    let mut steps: u128 = 0;
    for (n, t) in chain.iter().enumerate() {
        if t.leaves_unchanged(summary) {
            continue;
        }
        if n >= 25 {
            // Longer than the key can say: apply the rest unmemoized.
            return match apply_all(&chain[n..], form.as_ref()) {
                Cow::Borrowed(_) => form,
                Cow::Owned(o) => Form::Owned(Bytes::from(o)),
            };
        }
        let next = (steps << 5) | (*t as u128 + 1);
        if let Some((_, f, s)) = m.forms.iter().find(|(k, _, _)| *k == next) {
            form = f.clone();
            summary = *s;
            steps = next;
            continue;
        }
        let out = match t.apply(Cow::Borrowed(form.as_ref())) {
            Cow::Borrowed(_) => None,
            Cow::Owned(o) => Some(o),
        };
        if let Some(o) = out {
            summary = Summary::of(&o);
            form = Form::Owned(Bytes::from(o));
        }
        m.forms.push((next, form.clone(), summary));
        steps = next;
    }
    form
}

/// What rules of one group share: the transform chain.
type GroupKey = Vec<Transform>;

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub id: u32,
    pub msg: String,
    pub score: u32,
    pub target: String,
    /// The (transformed) value that matched, truncated; empty for `absent`.
    pub value: String,
}

/// The compiled rule set.
#[derive(Debug, Default)]
pub struct Engine {
    groups: Vec<Group>,
    /// Every target some rule reads, sorted, with the groups that read it.
    readers: Vec<Reader>,
    /// `absent` rules (group, rule): they fire on what a request lacks.
    absent_rules: Vec<(usize, usize)>,
    /// (rule id, the clean-cache bit of its group), sorted by id: a
    /// route's exclusions name rule ids, and a group with an excluded
    /// rule is not fully evaluated, so its verdicts are not remembered.
    rule_groups: Vec<(u32, u64)>,
    rule_count: usize,
    reads_body: bool,
    /// Apply every chain in full to every value (no memo, no summaries,
    /// no clean-value cache): the reference the fast run must agree with.
    unmemoized: bool,
    /// Never use the clean-value cache (every value inspected as if seen
    /// for the first time): for benchmarks.
    no_clean_cache: bool,
    /// Names this compiled rule set in the clean-value cache.
    id: u64,
}

/// Groups past this index are never remembered clean (the clean-value
/// cache keeps one bit per group).
const CACHED_GROUPS: usize = 64;

/// Source of [`Engine`] ids.
static ENGINE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A new id for a compiled rule set (native or Core Rule Set): what names
/// it in the clean-value cache.
pub(crate) fn next_engine_id() -> u64 {
    ENGINE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Limits on a compiled pattern, so a rule file cannot make the gateway
/// build huge automata.
const REGEX_SIZE_LIMIT: usize = 8 << 20;
const HIT_VALUE_MAX: usize = 80;

pub(crate) fn truncated(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(&v[..v.len().min(HIT_VALUE_MAX)]);
    if v.len() > HIT_VALUE_MAX {
        format!("{s}...")
    } else {
        s.into_owned()
    }
}

pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::Syntax(s) if s.contains("look-around") || s.contains("backreference") => {
                format!("{s}\n(look-around and backreferences are not supported: the engine is linear-time by construction)")
            }
            other => other.to_string(),
        })
}

impl Engine {
    /// Compiles the rules at or below `paranoia`. Problems are
    /// `file:line: rule ID: message`.
    pub fn compile(rules: &[LocatedRule], paranoia: u8) -> Result<Engine, Vec<String>> {
        let mut problems = Vec::new();
        let mut seen = BTreeMap::new();
        let mut groups: BTreeMap<GroupKey, Vec<(Rule, Option<String>)>> = BTreeMap::new();
        for r in rules {
            let s = &r.spec;
            let at = format!("{}:{}: rule {}", r.file, r.line, s.id);
            let before = problems.len();
            if let Some(first) = seen.insert(s.id, at.clone()) {
                problems.push(format!("{at}: id {} is also used at {first}", s.id));
            }
            let score = severity_score(&s.severity).unwrap_or_else(|| {
                problems.push(format!(
                    "{at}: severity {:?} is not one of critical, error, warning, notice",
                    s.severity
                ));
                0
            });
            if !(1..=4).contains(&s.paranoia) {
                problems.push(format!("{at}: paranoia must be 1 to 4"));
            }
            let mut targets = Vec::new();
            if s.targets.is_empty() {
                problems.push(format!("{at}: a rule needs targets"));
            }
            for t in &s.targets {
                match Target::parse(t) {
                    Some(t) => targets.push(t),
                    None => problems.push(format!(
                        "{at}: unknown target {t:?} (targets: {})",
                        Target::NAMES
                    )),
                }
            }
            targets.sort();
            targets.dedup();
            let mut transforms = Vec::new();
            for t in &s.transforms {
                match Transform::parse(t) {
                    Some(t) => transforms.push(t),
                    None => problems.push(format!(
                        "{at}: unknown transform {t:?} (transforms: {})",
                        Transform::NAMES
                    )),
                }
            }
            let value = || s.value.clone().unwrap_or_default();
            let need_value = |problems: &mut Vec<String>| {
                if s.value.is_none() {
                    problems.push(format!(
                        "{at}: operator {:?} needs value = \"...\"",
                        s.operator
                    ));
                }
            };
            let mut pattern = None;
            let op = match s.operator.as_str() {
                "regex" => {
                    need_value(&mut problems);
                    match compile_regex(&value()) {
                        Ok(re) => {
                            pattern = Some(value());
                            Some(Op::Regex(s.negate.then(|| Box::new(re))))
                        }
                        Err(e) => {
                            problems.push(format!("{at}: invalid regex: {e}"));
                            None
                        }
                    }
                }
                "phrases" => match &s.values {
                    Some(list) if !list.is_empty() => {
                        match AhoCorasick::builder()
                            .ascii_case_insensitive(true)
                            .build(list)
                        {
                            Ok(ac) => Some(Op::Phrases(Box::new(ac))),
                            Err(e) => {
                                problems.push(format!("{at}: phrases: {e}"));
                                None
                            }
                        }
                    }
                    _ => {
                        problems.push(format!(
                            "{at}: operator \"phrases\" needs values = [\"...\"]"
                        ));
                        None
                    }
                },
                "contains" | "starts_with" | "ends_with" | "equals" => {
                    need_value(&mut problems);
                    let v = value().into_bytes();
                    Some(match s.operator.as_str() {
                        "contains" => Op::Contains(v),
                        "starts_with" => Op::StartsWith(v),
                        "ends_with" => Op::EndsWith(v),
                        _ => Op::Equals(v),
                    })
                }
                "gt" | "ge" | "lt" | "le" | "eq" => match value().trim().parse::<f64>() {
                    Ok(n) => Some(Op::Num(
                        match s.operator.as_str() {
                            "gt" => NumCmp::Gt,
                            "ge" => NumCmp::Ge,
                            "lt" => NumCmp::Lt,
                            "le" => NumCmp::Le,
                            _ => NumCmp::Eq,
                        },
                        n,
                    )),
                    Err(_) => {
                        problems.push(format!(
                            "{at}: operator {:?} needs a number in value",
                            s.operator
                        ));
                        None
                    }
                },
                "ip_match" => {
                    let mut set = JointPrefixSet::new();
                    for v in s.values.iter().flatten() {
                        match parse_net(v) {
                            Some(n) => {
                                set.insert(n);
                            }
                            None => problems.push(format!("{at}: {v:?} is not an address or CIDR")),
                        }
                    }
                    Some(Op::IpMatch(Box::new(set)))
                }
                "detect_sqli" => Some(Op::DetectSqli),
                "detect_xss" => Some(Op::DetectXss),
                "validate_url_encoding" => Some(Op::InvalidUrlEncoding),
                "validate_utf8" => Some(Op::InvalidUtf8),
                "byte_range" => {
                    match parse_byte_range(&value()) {
                        Some(allowed) => Some(Op::ByteRange(Box::new(allowed))),
                        None => {
                            problems.push(format!("{at}: byte_range value must be like \"1-255\" or \"9,10,13,32-126\""));
                            None
                        }
                    }
                }
                "absent" => Some(Op::Absent),
                other => {
                    problems.push(format!(
                        "{at}: unknown operator {other:?} (operators: regex, phrases, contains, starts_with, ends_with, equals, gt, ge, lt, le, eq, ip_match, detect_sqli, detect_xss, validate_url_encoding, validate_utf8, byte_range, absent)"
                    ));
                    None
                }
            };
            if problems.len() > before || s.paranoia > paranoia {
                continue;
            }
            let Some(op) = op else { continue };
            let rule = Rule {
                id: s.id,
                msg: s.msg.clone(),
                score,
                paranoia: s.paranoia,
                tags: s.tags.clone(),
                targets,
                op,
                negate: s.negate,
            };
            groups
                .entry(transforms)
                .or_default()
                .push((rule, pattern.filter(|_| !s.negate)));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut engine = Engine {
            id: next_engine_id(),
            ..Engine::default()
        };
        let mut readers: BTreeMap<Target, Reader> = BTreeMap::new();
        // Sets by (group, its rules in the set): shared by the targets
        // that the same rules read.
        let mut scans: BTreeMap<(usize, Vec<usize>), Arc<Scan>> = BTreeMap::new();
        for (gi, (transforms, rules)) in groups.into_iter().enumerate() {
            let mut compiled = Vec::new();
            // (rule, pattern) of the group's positive regexes.
            let mut patterns: Vec<(usize, String)> = Vec::new();
            for (ri, (rule, pattern)) in rules.into_iter().enumerate() {
                let one_by_one = match (pattern, &rule.op) {
                    (Some(p), Op::Regex(..)) => {
                        patterns.push((ri, p));
                        false
                    }
                    (_, Op::Absent) if !rule.negate => {
                        engine.absent_rules.push((gi, ri));
                        false
                    }
                    _ => true,
                };
                for t in &rule.targets {
                    let reader = readers.entry(t.clone()).or_insert_with(|| Reader {
                        target: t.clone(),
                        groups: Vec::new(),
                        all_groups: Some(0),
                    });
                    if reader.groups.last().map(|g| g.group) != Some(gi) {
                        reader.groups.push(ReaderGroup {
                            group: gi,
                            scan: None,
                            own: Vec::new(),
                        });
                    }
                    if one_by_one {
                        if let Some(g) = reader.groups.last_mut() {
                            g.own.push(ri);
                        }
                    }
                }
                engine.reads_body |= rule.targets.iter().any(Target::reads_body);
                compiled.push(rule);
            }
            for reader in readers.values_mut() {
                let Some(rg) = reader.groups.last_mut().filter(|g| g.group == gi) else {
                    continue;
                };
                let mine: Vec<&(usize, String)> = patterns
                    .iter()
                    .filter(|(ri, _)| compiled[*ri].targets.contains(&reader.target))
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let key = (gi, mine.iter().map(|(ri, _)| *ri).collect::<Vec<_>>());
                if let Some(scan) = scans.get(&key) {
                    rg.scan = Some(scan.clone());
                    continue;
                }
                let set = RegexSetBuilder::new(mine.iter().map(|(_, p)| p))
                    .unicode(false)
                    .size_limit(REGEX_SIZE_LIMIT * 4)
                    .build()
                    .map_err(|e| vec![format!("rule set does not compile as one set: {e}")])?;
                let needs = mine
                    .iter()
                    .map(|(_, p)| needed_bytes(p))
                    .try_fold(ByteSet::default(), |acc, n| n.map(|n| acc.union(n)));
                let scan = Arc::new(Scan {
                    set,
                    rules: key.1.clone(),
                    needs,
                });
                scans.insert(key, scan.clone());
                rg.scan = Some(scan);
            }
            engine.rule_count += compiled.len();
            engine.groups.push(Group {
                reacts: ChainReacts::of(&transforms),
                transforms,
                rules: compiled,
            });
        }
        engine.readers = readers.into_values().collect();
        for (gi, g) in engine.groups.iter().enumerate().take(CACHED_GROUPS) {
            engine
                .rule_groups
                .extend(g.rules.iter().map(|r| (r.id, 1u64 << gi)));
        }
        engine.rule_groups.sort_unstable();
        for r in &mut engine.readers {
            r.all_groups = r.groups.iter().try_fold(0u64, |m, g| {
                (g.group < CACHED_GROUPS).then(|| m | (1 << g.group))
            });
        }
        Ok(engine)
    }

    /// The same engine applying every transform chain in full, without
    /// the per-value memo: for the equivalence test and benchmarks.
    #[doc(hidden)]
    pub fn unmemoized(mut self) -> Engine {
        self.unmemoized = true;
        self
    }

    /// The same engine without the clean-value cache: what a request costs
    /// when none of its values was seen before. For benchmarks.
    #[doc(hidden)]
    pub fn without_clean_cache(mut self) -> Engine {
        self.no_clean_cache = true;
        self
    }

    /// Whether any rule looks at the body (else bodies are not read).
    pub fn reads_body(&self) -> bool {
        self.reads_body
    }

    /// Rules compiled (at or below the paranoia level).
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// Runs every rule not in `excluded` against `req`; one hit per rule.
    ///
    /// Value by value: each value of a target is looked up once in the
    /// clean-value cache (which groups found nothing in it before), then
    /// transformed by each remaining group's chain. Transform results are
    /// memoized per value: chains share most of their steps (nearly all
    /// start url_decode, remove_nulls), and on clean values most steps
    /// change nothing (the value's byte summary says so without a scan).
    /// A group's regexes run as one set, and only on a value holding a
    /// byte one of them needs; only a match asks which patterns matched.
    pub fn run(&self, req: &RequestView, excluded: &[u32]) -> Vec<Hit> {
        let mut run = Run {
            engine: self,
            excluded,
            hits: Vec::new(),
            // A GET's values fit without regrowing; a body's grow once or twice.
            memo: Memo {
                values: Vec::with_capacity(16),
                index: Default::default(),
            },
            seen: vec![false; self.readers.len()],
        };
        // A group with a rule the route excludes is not fully evaluated:
        // its values' verdicts are not remembered.
        let mut cacheable: u64 = if self.no_clean_cache || self.unmemoized {
            0
        } else {
            u64::MAX
        };
        for id in excluded {
            let from = self.rule_groups.partition_point(|(r, _)| r < id);
            for (_, bit) in self.rule_groups[from..].iter().take_while(|(r, _)| r == id) {
                cacheable &= !bit;
            }
        }
        for (ti, reader) in self.readers.iter().enumerate() {
            reader
                .target
                .each(req, &mut |name, raw| run.value(ti, name, raw, cacheable));
        }
        run.absent();
        // In rule order (the walk's order, value by value, says little to
        // whoever reads the audit line).
        run.hits.sort_by_key(|h| h.id);
        run.hits
    }
}

/// One run of the engine over one request.
struct Run<'e, 'a> {
    engine: &'e Engine,
    excluded: &'e [u32],
    hits: Vec<Hit>,
    memo: Memo<'a>,
    /// Which readers' targets had any value (for `absent`).
    seen: Vec<bool>,
}

impl<'a> Run<'_, 'a> {
    /// Whether the rule is excluded on this route or has already fired.
    fn skip(&self, rule: &Rule) -> bool {
        self.excluded.contains(&rule.id) || self.hits.iter().any(|h| h.id == rule.id)
    }

    /// Every group reading target `ti` on one of its values.
    fn value(&mut self, ti: usize, name: Name<'a>, raw: Cow<'a, [u8]>, cacheable: u64) {
        let engine = self.engine;
        let reader = &engine.readers[ti];
        self.seen[ti] = true;
        // Keyed by the value as read: each group's chain is fixed, so it
        // decides what the group's rules see.
        let key = (cacheable != 0)
            .then(|| clean_cache::Key::new(engine.id, ti, &raw))
            .flatten();
        let known_clean = key.map_or(0, |k| k.clean());
        if reader
            .all_groups
            .is_some_and(|all| known_clean & all == all)
        {
            // Every group that reads the target found this value clean.
            return;
        }
        let fast = !engine.unmemoized;
        // The value's byte summary, made when a group first needs it (not
        // at all for a value every group remembers clean).
        let mut summary_memo: Option<Summary> = None;
        // The value's memo entry, found once for all its groups.
        let mut entry = None;
        let mut evaluated: u64 = 0;
        // Groups in which some rule matched (reported or not), or a rule
        // was not evaluated: only the others are remembered as clean.
        let mut dirty: u64 = 0;
        // The bytes of the last form looked at (forms repeat group to
        // group). The form is held so that its address, the key, cannot be
        // reused by another one while it is remembered.
        let mut present: Option<(Form<'a>, ByteSet)> = None;
        for rg in &reader.groups {
            let gi = rg.group;
            if gi < CACHED_GROUPS && known_clean & (1 << gi) != 0 {
                continue;
            }
            let bit = if gi < CACHED_GROUPS { 1 << gi } else { 0 };
            evaluated |= bit;
            let g = &engine.groups[gi];
            let summary = fast.then(|| *summary_memo.get_or_insert_with(|| Summary::of(&raw)));
            let form = match &raw {
                // Most values of clean traffic: no step can change them.
                Cow::Borrowed(r) if summary.is_some_and(|s| g.reacts.leaves_unchanged(s)) => {
                    Form::Borrowed(r)
                }
                Cow::Borrowed(r) if fast => {
                    let i = *entry.get_or_insert_with(|| self.memo.entry(r, summary));
                    transformed_in(&mut self.memo.values[i], r, &g.transforms)
                }
                Cow::Borrowed(r) => match apply_all(&g.transforms, r) {
                    Cow::Borrowed(_) => Form::Borrowed(r),
                    Cow::Owned(t) => Form::Owned(Bytes::from(t)),
                },
                Cow::Owned(o) => match apply_all(&g.transforms, o) {
                    Cow::Borrowed(_) => Form::Owned(Bytes::from(o.clone())),
                    Cow::Owned(t) => Form::Owned(Bytes::from(t)),
                },
            };
            let v: &[u8] = form.as_ref();
            // One pass answers "does any pattern match"; only then ask
            // which (clean traffic stops at the first question). A form
            // without any byte the set's regexes need is not scanned.
            let scan = rg.scan.as_deref();
            let may_match = match scan.and_then(|sc| sc.needs).filter(|_| fast) {
                Some(needs) => {
                    let bytes = match &present {
                        Some((f, b)) if std::ptr::eq(f.as_ref(), v) => *b,
                        _ => {
                            let b = ByteSet::of(v);
                            present = Some((form.clone(), b));
                            b
                        }
                    };
                    bytes.intersects(&needs)
                }
                None => true,
            };
            if let Some(sc) = scan.filter(|sc| may_match && sc.set.is_match(v)) {
                for m in sc.set.matches(v).iter() {
                    let rule = &g.rules[sc.rules[m]];
                    dirty |= bit;
                    if !self.skip(rule) {
                        self.hits.push(hit(rule, name, v));
                    }
                }
            }
            for &ri in &rg.own {
                let rule = &g.rules[ri];
                if self.skip(rule) {
                    // Not evaluated: the value's verdict is unknown.
                    dirty |= bit;
                    continue;
                }
                let matched = match &rule.op {
                    Op::Regex(re) => rule.negate && re.as_ref().is_some_and(|re| !re.is_match(v)),
                    // `absent` negated is "present".
                    Op::Absent => rule.negate,
                    other => eval(other, v) != rule.negate,
                };
                if matched {
                    dirty |= bit;
                    self.hits.push(hit(rule, name, v));
                }
            }
        }
        if let Some(k) = key {
            k.remember(evaluated & !dirty & cacheable);
        }
    }

    /// No value at all for a rule's targets: only `absent` can match (an
    /// operator, negated or not, has nothing to look at).
    fn absent(&mut self) {
        let engine = self.engine;
        for &(gi, ri) in &engine.absent_rules {
            let rule = &engine.groups[gi].rules[ri];
            if self.skip(rule) {
                continue;
            }
            let any = engine
                .readers
                .iter()
                .zip(&self.seen)
                .any(|(r, s)| *s && rule.targets.contains(&r.target));
            if !any {
                self.hits.push(Hit {
                    id: rule.id,
                    msg: rule.msg.clone(),
                    score: rule.score,
                    target: rule
                        .targets
                        .iter()
                        .map(|t| format!("{t:?}"))
                        .collect::<Vec<_>>()
                        .join(","),
                    value: String::new(),
                });
            }
        }
    }
}

fn hit(rule: &Rule, target: Name<'_>, v: &[u8]) -> Hit {
    Hit {
        id: rule.id,
        msg: rule.msg.clone(),
        score: rule.score,
        target: target.render(),
        value: truncated(v),
    }
}

fn eval(op: &Op, v: &[u8]) -> bool {
    match op {
        Op::Regex(re) => re.as_ref().is_some_and(|re| re.is_match(v)),
        Op::Phrases(ac) => ac.is_match(v),
        Op::Contains(n) => !n.is_empty() && v.windows(n.len()).any(|w| w == n.as_slice()),
        Op::StartsWith(n) => v.starts_with(n),
        Op::EndsWith(n) => v.ends_with(n),
        Op::Equals(n) => v == n.as_slice(),
        Op::Num(cmp, n) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .is_some_and(|x| match cmp {
                NumCmp::Gt => x > *n,
                NumCmp::Ge => x >= *n,
                NumCmp::Lt => x < *n,
                NumCmp::Le => x <= *n,
                NumCmp::Eq => x == *n,
            }),
        Op::IpMatch(set) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .is_some_and(|ip| set.get_lpm(&ipnet::IpNet::from(ip)).is_some()),
        Op::DetectSqli => may_be_sqli(v) && libinjectionrs::detect_sqli(v).is_injection(),
        Op::DetectXss => may_be_xss(v) && libinjectionrs::detect_xss(v).is_injection(),
        Op::InvalidUrlEncoding => invalid_url_encoding(v),
        Op::InvalidUtf8 => std::str::from_utf8(v).is_err(),
        Op::ByteRange(allowed) => v.iter().any(|b| !allowed[usize::from(*b)]),
        Op::Absent => false,
    }
}

/// libinjection's SQL fingerprints all need a quote, an operator, a
/// parenthesis, a comment or a statement separator; a value without any
/// (plain words, numbers, identifiers) cannot produce one. Skipping those
/// saves the tokenizer (microseconds) on most API values.
pub(crate) fn may_be_sqli(v: &[u8]) -> bool {
    v.iter().any(|b| {
        matches!(
            b,
            b'\''
                | b'"'
                | b'`'
                | b'('
                | b')'
                | b';'
                | b'='
                | b'<'
                | b'>'
                | b'|'
                | b'&'
                | b'#'
                | b'*'
                | b'/'
                | b'\\'
                | b'%'
                | b'!'
                | b'^'
                | b'~'
                | b'@'
                | b'{'
                | b'}'
        )
    }) || v.windows(2).any(|w| w == b"--")
}

/// libinjection's XSS detector looks for tags and attributes: without `<`,
/// a quote, `=` or a backtick there is nothing for it to find.
pub(crate) fn may_be_xss(v: &[u8]) -> bool {
    v.iter()
        .any(|b| matches!(b, b'<' | b'>' | b'"' | b'\'' | b'=' | b'`'))
}

pub(crate) fn invalid_url_encoding(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            let ok = v.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && v.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

pub(crate) fn parse_byte_range(spec: &str) -> Option<[bool; 256]> {
    let mut allowed = [false; 256];
    for part in spec.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u8>().ok()?, b.trim().parse::<u8>().ok()?),
            None => {
                let n = part.parse::<u8>().ok()?;
                (n, n)
            }
        };
        if lo > hi {
            return None;
        }
        for b in lo..=hi {
            allowed[usize::from(b)] = true;
        }
    }
    Some(allowed)
}

/// An address or CIDR.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::super::rules::parse_file;
    use super::*;
    use http::HeaderMap;
    use std::path::Path;

    fn engine(text: &str) -> Engine {
        let rules = parse_file(Path::new("t.toml"), text).unwrap();
        Engine::compile(&rules, 2).unwrap()
    }

    static NO_HEADERS: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);

    fn view(uri: &str) -> RequestView<'_> {
        let path = uri.split('?').next().unwrap_or("/");
        RequestView::new("GET", path, uri.as_bytes(), &NO_HEADERS, None)
    }

    /// A group's regexes run per target as a set of only the rules that
    /// read it: a pattern fires on the targets its rule names, never on
    /// another target the group's other rules read.
    #[test]
    fn each_target_runs_only_the_regexes_that_read_it() {
        let e = engine(
            r#"
[[rule]]
id = 31
msg = "raw query"
targets = ["query"]
transforms = ["url_decode"]
operator = "regex"
value = "evil"
[[rule]]
id = 32
msg = "arguments"
targets = ["args"]
transforms = ["url_decode"]
operator = "regex"
value = "evil|bad"
[[rule]]
id = 33
msg = "path as sent"
targets = ["uri_path", "args"]
transforms = ["url_decode"]
operator = "regex"
value = "bad"
"#,
        );
        let fired = |uri: &str| {
            let v = view(uri);
            e.run(&v, &[])
                .into_iter()
                .map(|h| (h.id, h.target))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fired("/p?x=evil"),
            [(31, "query".to_string()), (32, "args:x".to_string())]
        );
        assert_eq!(
            fired("/p?x=bad"),
            [(32, "args:x".to_string()), (33, "args:x".to_string())]
        );
        // The path is not an argument, and the query is not the path.
        assert_eq!(fired("/bad/evil?x=1"), [(33, "uri_path".to_string())]);
        assert_eq!(fired("/p?bad=1"), []);
    }

    #[test]
    fn groups_share_one_pass_and_report_one_hit_per_rule() {
        let e = engine(
            r#"
[[rule]]
id = 1
msg = "a"
targets = ["args"]
transforms = ["url_decode", "lowercase"]
operator = "regex"
value = "union\\s+select"
[[rule]]
id = 2
msg = "b"
targets = ["args"]
transforms = ["url_decode", "lowercase"]
operator = "regex"
value = "sleep\\("
[[rule]]
id = 3
msg = "paranoid"
paranoia = 3
targets = ["args"]
operator = "contains"
value = "x"
"#,
        );
        assert_eq!(e.rule_count(), 2, "paranoia 3 is not compiled at level 2");
        let hits = e.run(
            &view("/p?a=1%20UNION%20SELECT%20sleep(1)&b=union+select"),
            &[],
        );
        let ids: Vec<u32> = hits.iter().map(|h| h.id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(hits[0].target, "args:a");
        assert!(e.run(&view("/p?a=1"), &[]).is_empty());
        assert_eq!(
            e.run(&view("/p?a=union%20select"), &[1]).len(),
            0,
            "excluded"
        );
    }

    #[test]
    fn operators() {
        let e = engine(
            r#"
[[rule]]
id = 10
msg = "sqli"
targets = ["query_args"]
operator = "detect_sqli"
[[rule]]
id = 11
msg = "xss"
targets = ["query_args"]
operator = "detect_xss"
[[rule]]
id = 12
msg = "no host"
targets = ["header:host"]
operator = "absent"
[[rule]]
id = 13
msg = "ua not mozilla"
targets = ["user_agent"]
operator = "starts_with"
value = "Mozilla"
negate = true
[[rule]]
id = 14
msg = "bad encoding"
targets = ["uri"]
operator = "validate_url_encoding"
[[rule]]
id = 15
msg = "ip"
targets = ["client_ip"]
operator = "ip_match"
values = ["10.0.0.0/8", "2001:db8::/32"]
"#,
        );
        let ids = |v: &RequestView| {
            let mut ids: Vec<u32> = e.run(v, &[]).iter().map(|h| h.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&view("/p?id=1'%20or%20'1'='1")), [10, 12]);
        assert_eq!(ids(&view("/p?q=<script>alert(1)</script>")), [11, 12]);
        assert_eq!(ids(&view("/p?q=%zz")), [12, 14]);
        let mut h = HeaderMap::new();
        h.insert("host", "a".parse().unwrap());
        h.insert("user-agent", "sqlmap/1.7".parse().unwrap());
        let v = RequestView::new("GET", "/", b"/", &h, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(ids(&v), [13, 15]);
        let v = RequestView::new("GET", "/", b"/", &h, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(ids(&v), [13, 15]);
    }

    #[test]
    fn backtracking_patterns_are_refused_and_matching_is_linear() {
        let rules = parse_file(
            Path::new("r.toml"),
            "[[rule]]\nid = 7\nmsg = \"m\"\ntargets = [\"args\"]\noperator = \"regex\"\nvalue = '(a)\\1'\n",
        )
        .unwrap();
        let err = Engine::compile(&rules, 1).unwrap_err();
        assert!(
            err[0].starts_with("r.toml:1: rule 7: invalid regex"),
            "{err:?}"
        );
        assert!(err[0].contains("backreference"), "{err:?}");
        // The classic catastrophic pattern for backtracking engines runs
        // as a finite automaton here: it completes on a long hostile input.
        let e = engine(
            "[[rule]]\nid = 8\nmsg = \"m\"\ntargets = [\"args\"]\noperator = \"regex\"\nvalue = '^(a+)+$'\n",
        );
        let hostile = format!("/p?x={}!", "a".repeat(50_000));
        assert!(e.run(&view(&hostile), &[]).is_empty());
    }

    #[test]
    fn rule_file_problems_name_file_line_and_id() {
        let err = parse_file(
            Path::new("bad.toml"),
            "[[rule]]\nid = 1\nmsg = \"ok\"\ntargets = [\"args\"]\noperator = \"absent\"\n\n[[rule]]\nid = 2\nmsg = \"x\"\ntargets = [\"args\"]\noperator = \"regex\"\nvalu = \"typo\"\n",
        )
        .unwrap_err();
        assert!(
            err[0].starts_with("bad.toml:7: rule 2: unknown field `valu`"),
            "{err:?}"
        );
        let rules = parse_file(
            Path::new("b.toml"),
            "[[rule]]\nid = 3\nmsg = \"x\"\ntargets = [\"argz\"]\noperator = \"nope\"\n",
        )
        .unwrap();
        let err = Engine::compile(&rules, 1).unwrap_err();
        assert!(err
            .iter()
            .any(|e| e.contains("b.toml:1: rule 3: unknown target \"argz\"")));
        assert!(err.iter().any(|e| e.contains("unknown operator \"nope\"")));
    }

    /// The shipped rules.
    fn shipped(paranoia: u8) -> Engine {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
        let mut rules = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for p in files {
            let text = std::fs::read_to_string(&p).unwrap();
            rules.extend(parse_file(&p, &text).unwrap());
        }
        Engine::compile(&rules, paranoia).unwrap()
    }

    /// A corpus request held by value; [`CorpusRequest::view`] borrows it.
    struct CorpusRequest {
        method: String,
        uri: String,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    }

    impl CorpusRequest {
        fn get(uri: &str) -> CorpusRequest {
            CorpusRequest {
                method: "GET".into(),
                uri: uri.into(),
                headers: HeaderMap::new(),
                body: None,
            }
        }

        fn view(&self) -> RequestView<'_> {
            let path = self.uri.split('?').next().unwrap_or("/");
            let mut v =
                RequestView::new(&self.method, path, self.uri.as_bytes(), &self.headers, None);
            if let Some(b) = &self.body {
                let ct = self.headers.get("content-type").map(|v| v.as_bytes());
                v.set_body(ct, b);
            }
            v
        }
    }

    /// Requests of the shared WAF corpus (CRS attacks and benign API
    /// traffic), plus a few built-in ones.
    fn corpus() -> Vec<CorpusRequest> {
        use base64::Engine as _;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/waf-corpus");
        let mut requests: Vec<CorpusRequest> = [
            "/p?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
            "/p?q=<SCRIPT>alert(1)</script>&x=Blue+Shoes&y=a%2500b",
            "/p?cmd=;CAT%20/etc/passwd&f=..%5c..%5cetc/shadow&h=%26lt;svg%26gt;",
            "/p?a=${jndi:ldap://x/a}&page=2&sort=-created_at&j=%5cu0061lert",
        ]
        .into_iter()
        .map(CorpusRequest::get)
        .collect();
        for f in ["crs-dev.jsonl", "benign-dev.jsonl"] {
            let Ok(text) = std::fs::read_to_string(format!("{dir}/{f}")) else {
                continue;
            };
            for line in text.lines() {
                let Ok(r) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let mut req = CorpusRequest::get(r["uri"].as_str().unwrap_or("/"));
                req.method = r["method"].as_str().unwrap_or("GET").into();
                for pair in r["headers"].as_array().into_iter().flatten() {
                    let (Some(k), Some(v)) = (pair[0].as_str(), pair[1].as_str()) else {
                        continue;
                    };
                    if let (Ok(k), Ok(v)) = (
                        http::header::HeaderName::from_bytes(k.as_bytes()),
                        http::HeaderValue::from_str(v),
                    ) {
                        req.headers.append(k, v);
                    }
                }
                req.body = match (r["body"].as_str(), r["body_b64"].as_str()) {
                    (Some(b), _) => Some(b.as_bytes().to_vec()),
                    (_, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
                    _ => None,
                };
                requests.push(req);
            }
        }
        requests
    }

    /// The shipped rules read the path as sent plus the arguments and
    /// their names, not the whole URI: an attack anywhere in the URI is
    /// still seen (in the path, in a value, in a name, in a valueless
    /// query), and only the rule that needs name and value together reads
    /// the raw query.
    #[test]
    fn the_shipped_rules_see_the_whole_uri_without_reading_it() {
        let e = shipped(1);
        let ids = |uri: &str| -> Vec<u32> { e.run(&view(uri), &[]).iter().map(|h| h.id).collect() };
        for (uri, id) in [
            ("/files/..%2f..%2fetc/passwd", 100300),
            ("/p?f=../../etc/passwd", 100300),
            ("/p?../../etc/passwd", 100300),
            ("/p?x=1&../../etc/passwd=", 100300),
            ("/p?q=1%20union%20select%20password%20from%20users", 100110),
            ("/a/<script>alert(1)</script>", 100210),
            ("/p?_CONF[path]=https://evil.example/x", 100401),
        ] {
            assert!(ids(uri).contains(&id), "{uri}: {:?}", ids(uri));
        }
        // (100900, no Host header: these test views have none.)
        let benign = e.run(
            &view("/?page=2&q=blue+shoes&sort=-created_at&id=5f3a"),
            &[100900],
        );
        assert!(benign.is_empty(), "{benign:?}");
    }

    #[test]
    fn a_null_byte_is_found_after_decoding() {
        let e = shipped(1);
        for uri in ["/p?a=x%00y", "/p%00.php"] {
            let ids: Vec<u32> = e.run(&view(uri), &[]).iter().map(|h| h.id).collect();
            assert!(ids.contains(&100905), "{uri}: {ids:?}");
        }
        assert!(e
            .run(&view("/p?a=x%20y"), &[])
            .iter()
            .all(|h| h.id != 100905));
    }

    #[test]
    fn a_value_seen_with_a_rule_excluded_is_still_inspected_later() {
        let e = engine(
            r#"
[[rule]]
id = 21
msg = "contains"
targets = ["args"]
operator = "contains"
value = "evil"
[[rule]]
id = 22
msg = "regex"
targets = ["args"]
operator = "regex"
value = "worse"
"#,
        );
        let v = view("/p?a=evil%20worse");
        assert!(
            e.run(&v, &[21, 22]).is_empty(),
            "both excluded on this route"
        );
        let ids: Vec<u32> = e.run(&v, &[]).iter().map(|h| h.id).collect();
        assert_eq!(ids, [21, 22], "elsewhere both still fire");
        let clean = view("/p?a=fine");
        assert!(e.run(&clean, &[]).is_empty());
        assert!(
            e.run(&clean, &[]).is_empty(),
            "remembered clean, still clean"
        );
    }

    /// The fast run (summaries skip steps, chains share results, clean
    /// values are remembered) finds exactly what applying every chain in
    /// full to every value finds, on every request
    /// of the shared corpus (where it sits next to the repository, as in
    /// CI) and on built-in ones with every kind of encoding.
    #[test]
    fn the_transform_memo_never_changes_a_verdict() {
        let fast = shipped(4);
        let full = shipped(4).unmemoized();
        let requests = corpus();
        let views: Vec<RequestView> = requests.iter().map(CorpusRequest::view).collect();
        let mut fired = 0;
        // Three times over: a value is remembered clean at its second
        // sighting, so the third pass answers from the cache what it can.
        for pass in 0..3 {
            for v in &views {
                let a = fast.run(v, &[]);
                assert_eq!(
                    a,
                    full.run(v, &[]),
                    "pass {pass}: {}",
                    String::from_utf8_lossy(v.uri)
                );
                fired += usize::from(!a.is_empty());
            }
        }
        assert!(
            fired >= 4,
            "{fired} of {} requests fired rules",
            views.len()
        );
    }
}
