//! SecLang directives to a program: every rule's variables, operator,
//! transformations and actions resolved once, at load.
//!
//! Request-phase rules (phases 1 and 2) are kept in two ordered lists with
//! the markers between them, as ModSecurity runs them; response and logging
//! phases (3-5) are skipped, and so are the `RESPONSE-*.conf` files (the
//! gateway does not buffer responses for inspection). Operators compile
//! once: regexes through Rust's linear-time engine, and only patterns that
//! need PCRE-only features (look-around, backreferences, atomic groups)
//! through a backtracking engine with a step limit; phrase lists are
//! Aho-Corasick automata. What the front end does not support is reported
//! as a note with file, line and rule id, never dropped silently.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aho_corasick::AhoCorasick;
use prefix_trie::joint::JointPrefixSet;
use regex::bytes::Regex;

use super::parse::{self, Directive, Selector, VarSpec};
use crate::waf::engine::{compile_regex, parse_byte_range, parse_net};
use crate::waf::transform::Transform;

/// Where a variable's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Args,
    ArgsNames,
    ArgsGet,
    ArgsGetNames,
    ArgsPost,
    ArgsPostNames,
    ArgsCombinedSize,
    Cookies,
    CookiesNames,
    Headers,
    HeadersNames,
    Filename,
    Basename,
    Uri,
    UriRaw,
    Line,
    Method,
    Protocol,
    Body,
    BodyLength,
    QueryString,
    RemoteAddr,
    Files,
    FilesNames,
    FilesCombinedSize,
    Xml,
    MultipartPartHeaders,
    Tx,
    MatchedVar,
    MatchedVarName,
    MatchedVars,
    MatchedVarsNames,
    ReqbodyProcessor,
    ReqbodyError,
    ReqbodyErrorMsg,
    UniqueId,
    Duration,
    /// A collection the gateway does not keep (persistent `IP`, `GLOBAL`,
    /// `GEO`, `SESSION`, `USER`, `RESOURCE`): always empty.
    Empty,
}

impl Source {
    fn parse(name: &str) -> Option<(Source, &'static str)> {
        use Source::*;
        Some(match name {
            "ARGS" => (Args, "ARGS"),
            "ARGS_NAMES" => (ArgsNames, "ARGS_NAMES"),
            "ARGS_GET" => (ArgsGet, "ARGS_GET"),
            "ARGS_GET_NAMES" => (ArgsGetNames, "ARGS_GET_NAMES"),
            "ARGS_POST" => (ArgsPost, "ARGS_POST"),
            "ARGS_POST_NAMES" => (ArgsPostNames, "ARGS_POST_NAMES"),
            "ARGS_COMBINED_SIZE" => (ArgsCombinedSize, "ARGS_COMBINED_SIZE"),
            "REQUEST_COOKIES" => (Cookies, "REQUEST_COOKIES"),
            "REQUEST_COOKIES_NAMES" => (CookiesNames, "REQUEST_COOKIES_NAMES"),
            "REQUEST_HEADERS" => (Headers, "REQUEST_HEADERS"),
            "REQUEST_HEADERS_NAMES" => (HeadersNames, "REQUEST_HEADERS_NAMES"),
            "REQUEST_FILENAME" => (Filename, "REQUEST_FILENAME"),
            "REQUEST_BASENAME" => (Basename, "REQUEST_BASENAME"),
            "REQUEST_URI" => (Uri, "REQUEST_URI"),
            "REQUEST_URI_RAW" => (UriRaw, "REQUEST_URI_RAW"),
            "REQUEST_LINE" => (Line, "REQUEST_LINE"),
            "REQUEST_METHOD" => (Method, "REQUEST_METHOD"),
            "REQUEST_PROTOCOL" => (Protocol, "REQUEST_PROTOCOL"),
            "REQUEST_BODY" => (Body, "REQUEST_BODY"),
            "REQUEST_BODY_LENGTH" => (BodyLength, "REQUEST_BODY_LENGTH"),
            "QUERY_STRING" => (QueryString, "QUERY_STRING"),
            "REMOTE_ADDR" => (RemoteAddr, "REMOTE_ADDR"),
            "FILES" => (Files, "FILES"),
            "FILES_NAMES" => (FilesNames, "FILES_NAMES"),
            "FILES_COMBINED_SIZE" => (FilesCombinedSize, "FILES_COMBINED_SIZE"),
            "XML" => (Xml, "XML"),
            "TX" => (Tx, "TX"),
            "MATCHED_VAR" => (MatchedVar, "MATCHED_VAR"),
            "MATCHED_VAR_NAME" => (MatchedVarName, "MATCHED_VAR_NAME"),
            "MATCHED_VARS" => (MatchedVars, "MATCHED_VARS"),
            "MATCHED_VARS_NAMES" => (MatchedVarsNames, "MATCHED_VARS_NAMES"),
            "REQBODY_PROCESSOR" => (ReqbodyProcessor, "REQBODY_PROCESSOR"),
            "REQBODY_ERROR" => (ReqbodyError, "REQBODY_ERROR"),
            "REQBODY_ERROR_MSG" => (ReqbodyErrorMsg, "REQBODY_ERROR_MSG"),
            "UNIQUE_ID" => (UniqueId, "UNIQUE_ID"),
            "DURATION" => (Duration, "DURATION"),
            "IP" => (Empty, "IP"),
            "GLOBAL" => (Empty, "GLOBAL"),
            "GEO" => (Empty, "GEO"),
            "SESSION" => (Empty, "SESSION"),
            "USER" => (Empty, "USER"),
            "RESOURCE" => (Empty, "RESOURCE"),
            "MULTIPART_PART_HEADERS" => (MultipartPartHeaders, "MULTIPART_PART_HEADERS"),
            _ => return None,
        })
    }
}

/// A compiled selector.
#[derive(Debug, Clone)]
pub enum Sel {
    /// Lower-case key.
    Key(String),
    Regex(Regex),
}

impl Sel {
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Sel::Key(k) => key.eq_ignore_ascii_case(k),
            Sel::Regex(re) => re.is_match(key.as_bytes()),
        }
    }
}

/// One variable of a rule.
#[derive(Debug, Clone)]
pub struct Var {
    pub count: bool,
    pub source: Source,
    /// As written (upper case), for names in hits.
    pub label: &'static str,
    pub selector: Option<Sel>,
}

/// `!VAR:sel`: values of `source` whose key matches are left out.
#[derive(Debug, Clone)]
pub struct Exclusion {
    pub source: Source,
    pub selector: Option<Sel>,
}

impl Exclusion {
    pub fn covers(&self, source: Source, key: Option<&str>) -> bool {
        self.source == source
            && match (&self.selector, key) {
                (None, _) => true,
                (Some(s), Some(k)) => s.matches(k),
                (Some(_), None) => false,
            }
    }
}

/// Text with `%{COLLECTION.key}` macros, expanded per request.
#[derive(Debug, Clone)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone)]
pub enum Part {
    Lit(String),
    /// `%{source.key}` (key lower case; `None` for a scalar).
    Macro(Source, Option<String>, &'static str),
    /// `%{RULE.id}`, `%{RULE.msg}`, ...: filled from the running rule.
    RuleField(String),
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let inner = &rest[start + 2..start + len];
            let (coll, key) = match inner.split_once('.') {
                Some((c, k)) => (c, Some(k.to_ascii_lowercase())),
                None => (inner, None),
            };
            let coll = coll.to_ascii_uppercase();
            if coll == "RULE" {
                parts.push(Part::RuleField(key.unwrap_or_default()));
            } else {
                match Source::parse(&coll) {
                    Some((s, label)) => parts.push(Part::Macro(s, key, label)),
                    None => {
                        return Err(format!("unknown collection {coll:?} in macro %{{{inner}}}"))
                    }
                }
            }
            rest = &rest[start + len + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The text when it has no macros.
    pub fn literal(&self) -> Option<String> {
        match self.parts.as_slice() {
            [] => Some(String::new()),
            [Part::Lit(s)] => Some(s.clone()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum NumCmp {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

/// A regex: Rust's linear-time engine, or the bounded backtracking one for
/// patterns that need it.
#[derive(Debug)]
pub enum Rx {
    Linear(Regex),
    Backtracking(Box<fancy_regex::Regex>),
}

/// Step limit of the backtracking fallback: a pattern that would run
/// longer on some input counts as not matching (and is logged).
const BACKTRACK_LIMIT: usize = 100_000;

impl Rx {
    /// The regex, and (when it needed the fallback) why the linear engine
    /// refused it.
    pub fn compile(pattern: &str) -> Result<(Rx, Option<String>), String> {
        let translated = translate_pcre(pattern);
        match compile_regex(&format!("(?s){translated}")) {
            Ok(re) => Ok((Rx::Linear(re), None)),
            Err(linear) => fancy_regex::RegexBuilder::new(&format!("(?s){translated}"))
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
                .map(|re| (Rx::Backtracking(Box::new(re)), Some(linear.clone())))
                .map_err(|e| format!("{linear}; and as a backtracking regex: {e}")),
        }
    }
}

/// PCRE spellings Rust's regex syntax writes differently, for patterns
/// that mean the same in both:
/// * `\Z` is `\z` (values are one line);
/// * `\<` and `\>` are literal `<` and `>` (word boundaries in Rust);
/// * a `{` that does not start a counted repetition is a literal `{`;
/// * in a class, a leading `]` and any `[` not opening `[:name:]` are
///   literals, and `&&`, `~~`, `--` are not class operators;
/// * a non-ASCII character stands for its UTF-8 bytes, as in PCRE without
///   UTF mode (in a class, each byte on its own).
fn translate_pcre(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut in_class = false;
    let counted = |at: usize| -> bool {
        // `{n}`, `{n,}` or `{n,m}` starting at `at`.
        let mut j = at + 1;
        let digits = |j: &mut usize| {
            let s = *j;
            while chars.get(*j).is_some_and(char::is_ascii_digit) {
                *j += 1;
            }
            *j > s
        };
        if !digits(&mut j) {
            return false;
        }
        if chars.get(j) == Some(&',') {
            j += 1;
            digits(&mut j);
        }
        chars.get(j) == Some(&'}')
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                match chars.get(i + 1) {
                    Some('Z') if !in_class => out.push_str("\\z"),
                    Some('<') => out.push('<'),
                    Some('>') => out.push('>'),
                    Some(n) if !n.is_ascii() => push_bytes(&mut out, *n),
                    Some(n) => {
                        out.push('\\');
                        out.push(*n);
                    }
                    None => out.push_str("\\\\"),
                }
                i += 2;
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i + 1) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
            }
            '[' => {
                if chars.get(i + 1) == Some(&':') {
                    // `[:alpha:]` stays, through its closing `]`.
                    match chars[i..].iter().position(|c| *c == ']') {
                        Some(end) => {
                            out.extend(&chars[i..=i + end]);
                            i += end + 1;
                            continue;
                        }
                        None => out.push_str("\\["),
                    }
                } else {
                    out.push_str("\\[");
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '&' | '~' | '-' if in_class => {
                if chars.get(i + 1) == Some(&c) {
                    out.push('\\');
                }
                out.push(c);
            }
            '{' if !in_class && !counted(i) => out.push_str("\\{"),
            c if !c.is_ascii() => push_bytes(&mut out, c),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// A character as `\xHH` escapes of its UTF-8 bytes.
fn push_bytes(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("\\x{b:02x}"));
    }
}

#[derive(Debug)]
pub enum Operator {
    Rx(Rx),
    /// `@rx` with a macro: compiled per expanded pattern, remembered.
    RxMacro(Template, Mutex<BTreeMap<String, Arc<Rx>>>),
    Pm(Box<AhoCorasick>),
    Contains(Template),
    ContainsWord(Template),
    BeginsWith(Template),
    EndsWith(Template),
    Streq(Template),
    Within(Template),
    StrMatch(Template),
    Num(NumCmp, Template),
    ValidateByteRange(Box<[bool; 256]>),
    ValidateUrlEncoding,
    ValidateUtf8,
    IpMatch(Box<JointPrefixSet<ipnet::IpNet>>),
    DetectSqli,
    DetectXss,
    Unconditional,
    NoMatch,
}

impl Operator {
    /// Whether the result depends on the value alone (no macros, no
    /// captures' side effects that matter for a non-match): such results
    /// may be remembered across requests.
    pub fn pure(&self) -> bool {
        matches!(
            self,
            Operator::Rx(_)
                | Operator::Pm(_)
                | Operator::DetectSqli
                | Operator::DetectXss
                | Operator::ValidateByteRange(_)
                | Operator::ValidateUrlEncoding
                | Operator::ValidateUtf8
        )
    }
}

/// `setvar` / `expirevar` targets.
#[derive(Debug, Clone)]
pub enum SetVar {
    /// `tx.name=value`, `tx.name=+n`, `tx.name=-n`.
    Set {
        key: Template,
        op: SetOp,
        value: Template,
    },
    /// `!tx.name`.
    Delete(Template),
}

#[derive(Debug, Clone, Copy)]
pub enum SetOp {
    Assign,
    Add,
    Sub,
}

/// `ctl:` actions that change the rest of the request's evaluation.
#[derive(Debug, Clone)]
pub enum Ctl {
    RemoveById(Vec<(u32, u32)>),
    RemoveByTag(String),
    RemoveTargetById(Vec<(u32, u32)>, Vec<Exclusion>),
    RemoveTargetByTag(String, Vec<Exclusion>),
    /// `ruleEngine=Off` / `DetectionOnly` / `On`.
    Engine(EngineState),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineState {
    On,
    DetectionOnly,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruptive {
    /// Only flow and scoring actions (`pass`, or `block` under a passing
    /// default action).
    Pass,
    Deny(u16),
    /// `allow`: stop inspecting the request.
    Allow,
}

/// One link of a rule (the rule itself, then each `chain`ed rule).
#[derive(Debug)]
pub struct Link {
    /// `SecAction`: matches without looking at anything.
    pub always: bool,
    /// Links that read the same request variables (nothing that changes
    /// during a run) share a slot: their value list is built once.
    pub values_slot: Option<usize>,
    /// The regex is also in this one of [`Program::sets`].
    pub set: Option<usize>,
    /// The link's number in the program (for the clean-value cache).
    pub gid: u32,
    pub vars: Vec<Var>,
    pub exclusions: Vec<Exclusion>,
    pub op: Operator,
    pub negate: bool,
    pub transforms: Vec<Transform>,
    pub multi_match: bool,
    pub capture: bool,
    pub setvars: Vec<SetVar>,
    pub ctls: Vec<Ctl>,
}

/// A rule with its chain.
#[derive(Debug)]
pub struct Rule {
    pub id: u32,
    pub file: Arc<str>,
    pub line: usize,
    /// 1 or 2 for the rules that run (3-5 are kept only to chain onto).
    pub phase: u8,
    pub links: Vec<Link>,
    pub msg: Option<Template>,
    pub tags: Vec<String>,
    /// Anomaly score of the severity (CRS's defaults), for the audit log.
    pub severity_score: u32,
    pub log: bool,
    pub disruptive: Disruptive,
    pub skip: usize,
    pub skip_after: Option<String>,
}

/// One step of a phase.
#[derive(Debug)]
pub enum Step {
    Rule(usize),
    Marker(String),
}

/// The compiled rule set.
#[derive(Debug, Default)]
pub struct Program {
    pub rules: Vec<Rule>,
    /// Phases 1 and 2, in order.
    pub phases: [Vec<Step>; 2],
    /// For each phase, marker name to the step after it.
    pub markers: [BTreeMap<String, usize>; 2],
    pub engine: Option<EngineState>,
    /// Patterns that run on the backtracking fallback: `file:line: rule id`.
    pub backtracking: Vec<String>,
    /// How many value slots links share (see [`Link::values_slot`]).
    pub value_slots: usize,
    /// Names this program in the clean-value cache.
    pub id: u64,
    /// The linear regexes of all links with the same transformations, as
    /// one set each: a value is scanned once per set, and a rule whose
    /// pattern is not among the set's matches is rejected without running.
    pub sets: Vec<regex::bytes::RegexSet>,
}

/// What loading reports besides errors.
#[derive(Debug, Default)]
pub struct Notes {
    /// Not supported: ignored, with file, line and rule id.
    pub unsupported: Vec<String>,
    /// Accepted but without effect in the gateway (stated once each).
    pub ignored: Vec<String>,
}

/// Directives that configure ModSecurity itself, where the gateway has its
/// own setting (body limits, audit logging): accepted, without effect.
const ENGINE_SETTINGS: &[&str] = &[
    "SecRequestBodyAccess",
    "SecRequestBodyLimit",
    "SecRequestBodyNoFilesLimit",
    "SecRequestBodyInMemoryLimit",
    "SecRequestBodyLimitAction",
    "SecRequestBodyJsonDepthLimit",
    "SecResponseBodyAccess",
    "SecResponseBodyMimeType",
    "SecResponseBodyLimit",
    "SecResponseBodyLimitAction",
    "SecAuditEngine",
    "SecAuditLog",
    "SecAuditLogParts",
    "SecAuditLogType",
    "SecAuditLogFormat",
    "SecAuditLogRelevantStatus",
    "SecAuditLogStorageDir",
    "SecDebugLog",
    "SecDebugLogLevel",
    "SecTmpDir",
    "SecDataDir",
    "SecUploadDir",
    "SecArgumentSeparator",
    "SecCookieFormat",
    "SecUnicodeMapFile",
    "SecStatusEngine",
    "SecPcreMatchLimit",
    "SecPcreMatchLimitRecursion",
    "SecCollectionTimeout",
    "SecComponentSignature",
    "SecServerSignature",
    "SecTmpSaveUploadedFiles",
    "SecUploadKeepFiles",
];

/// `SecRuleUpdateTargetById`: these id ranges leave out these targets.
type TargetUpdate = (Vec<(u32, u32)>, Vec<Exclusion>);

/// Builds the program from directives (in load order).
pub struct Compiler {
    pub program: Program,
    pub notes: Notes,
    pub errors: Vec<String>,
    /// `SecDefaultAction` per phase: whether `block` denies, and with what.
    default_block: [Option<u16>; 2],
    /// The rule being chained onto (index), while its last link said `chain`.
    open_chain: Option<usize>,
    removed_ids: Vec<(u32, u32)>,
    removed_tags: Vec<String>,
    target_updates: Vec<TargetUpdate>,
    ids: HashSet<u32>,
    ignored_seen: HashSet<String>,
    /// Variable list (as written) to its value slot.
    slots: BTreeMap<String, usize>,
}

fn bad(d: &Directive, id: Option<u32>, msg: impl std::fmt::Display) -> String {
    match id {
        Some(id) => format!("{}: rule {id}: {msg}", d.at()),
        None => format!("{}: {} {msg}", d.at(), d.name),
    }
}

/// Size limit of one regex set's compiled program.
const SET_SIZE_LIMIT: usize = 64 << 20;

impl Compiler {
    /// Groups the linear regexes by transformation chain into sets. Rules
    /// tagged above `max_paranoia` never run, so they stay out.
    fn build_sets(&mut self, max_paranoia: u8) {
        let mut groups: BTreeMap<Vec<Transform>, Vec<(usize, usize)>> = BTreeMap::new();
        let scheduled = self
            .program
            .phases
            .iter()
            .flatten()
            .filter_map(|s| match s {
                Step::Rule(ri) => Some(*ri),
                Step::Marker(_) => None,
            });
        for ri in scheduled {
            let r = &self.program.rules[ri];
            let level = r
                .tags
                .iter()
                .find_map(|t| t.strip_prefix("paranoia-level/")?.parse::<u8>().ok())
                .unwrap_or(1);
            if level > max_paranoia {
                continue;
            }
            for (li, l) in r.links.iter().enumerate() {
                // Negated patterns (protocol checks) match ordinary values:
                // in a set they would only make it say "maybe" more often.
                if let (Operator::Rx(Rx::Linear(_)), false, false) =
                    (&l.op, l.multi_match, l.negate)
                {
                    groups
                        .entry(l.transforms.clone())
                        .or_default()
                        .push((ri, li));
                }
            }
        }
        for (_, members) in groups {
            if members.len() < 2 {
                continue;
            }
            let patterns: Vec<String> = members
                .iter()
                .map(|(ri, li)| match &self.program.rules[*ri].links[*li].op {
                    Operator::Rx(Rx::Linear(re)) => re.as_str().to_string(),
                    _ => unreachable!("grouped above"),
                })
                .collect();
            let set = regex::bytes::RegexSetBuilder::new(&patterns)
                .unicode(false)
                .size_limit(SET_SIZE_LIMIT)
                .build();
            let Ok(set) = set else {
                // Too big as one: the rules run one by one.
                continue;
            };
            let si = self.program.sets.len();
            self.program.sets.push(set);
            for (ri, li) in members {
                self.program.rules[ri].links[li].set = Some(si);
            }
        }
    }

    pub fn new() -> Compiler {
        Compiler {
            program: Program::default(),
            notes: Notes::default(),
            errors: Vec::new(),
            default_block: [None, None],
            open_chain: None,
            removed_ids: Vec::new(),
            removed_tags: Vec::new(),
            target_updates: Vec::new(),
            ids: HashSet::new(),
            ignored_seen: HashSet::new(),
            slots: BTreeMap::new(),
        }
    }

    /// Notes `what` the first time `key` comes up.
    fn ignore_once(&mut self, key: &str, what: String) {
        if self.ignored_seen.insert(key.to_string()) {
            self.notes.ignored.push(what);
        }
    }

    /// Adds one directive. `base` is the folder data files are read from.
    pub fn add(&mut self, d: &Directive, base: &Path) {
        match d.name.as_str() {
            "SecRule" => {
                if d.args.len() < 2 || d.args.len() > 3 {
                    self.errors
                        .push(bad(d, None, "needs VARIABLES \"OPERATOR\" [\"ACTIONS\"]"));
                    return;
                }
                let actions = d.args.get(2).map(String::as_str).unwrap_or("");
                self.rule(d, Some((&d.args[0], &d.args[1])), actions, base);
            }
            "SecAction" => {
                if d.args.len() != 1 {
                    self.errors
                        .push(bad(d, None, "needs one \"ACTIONS\" argument"));
                    return;
                }
                self.rule(d, None, &d.args[0], base);
            }
            "SecMarker" => match d.args.first() {
                Some(name) => {
                    // Positions are resolved in `finish`, after removals.
                    for steps in &mut self.program.phases {
                        steps.push(Step::Marker(name.clone()));
                    }
                }
                None => self.errors.push(bad(d, None, "needs a name")),
            },
            "SecDefaultAction" => match d.args.first().map(|a| parse::actions(a)) {
                Some(Ok(actions)) => {
                    let phase = actions
                        .iter()
                        .find(|a| a.name == "phase")
                        .and_then(|a| a.value.as_deref())
                        .map_or(Some(2), phase_number);
                    let deny = actions.iter().any(|a| a.name == "deny" || a.name == "drop");
                    let status = actions
                        .iter()
                        .find(|a| a.name == "status")
                        .and_then(|a| a.value.as_deref()?.parse().ok())
                        .unwrap_or(403);
                    if let Some(p @ 1..=2) = phase {
                        self.default_block[usize::from(p - 1)] = deny.then_some(status);
                    }
                }
                Some(Err(e)) => self.errors.push(bad(d, None, e)),
                None => self.errors.push(bad(d, None, "needs actions")),
            },
            "SecRuleEngine" => {
                self.program.engine = match d.args.first().map(String::as_str) {
                    Some("On") => Some(EngineState::On),
                    Some("DetectionOnly") => Some(EngineState::DetectionOnly),
                    Some("Off") => Some(EngineState::Off),
                    _ => {
                        self.errors
                            .push(bad(d, None, "must be On, DetectionOnly or Off"));
                        return;
                    }
                }
            }
            "SecRuleRemoveById" => {
                for a in &d.args {
                    match id_ranges(a) {
                        Some(r) => self.removed_ids.extend(r),
                        None => {
                            self.errors
                                .push(bad(d, None, format!("{a:?} is not an id or a range")))
                        }
                    }
                }
            }
            "SecRuleRemoveByTag" => self.removed_tags.extend(d.args.iter().cloned()),
            "SecRuleUpdateTargetById" => {
                let (Some(ids), Some(vars)) = (d.args.first(), d.args.get(1)) else {
                    self.errors.push(bad(d, None, "needs ID and TARGETS"));
                    return;
                };
                match (id_ranges(ids), exclusions_of(vars)) {
                    (Some(ranges), Ok(ex)) if d.args.len() == 2 => {
                        self.target_updates.push((ranges, ex));
                    }
                    (_, Err(e)) => self.errors.push(bad(d, None, e)),
                    _ => self.notes.unsupported.push(bad(
                        d,
                        None,
                        "only removing targets (`!VAR`) is supported; ignored",
                    )),
                }
            }
            "Include" | "IncludeOptional" => {
                // Resolved by the loader before directives get here.
            }
            name if ENGINE_SETTINGS.contains(&name) => {
                self.ignore_once(
                    name,
                    format!(
                    "{name}: a ModSecurity engine setting; the gateway's own [waf] settings apply"
                ),
                );
            }
            other => self.notes.unsupported.push(format!(
                "{}: unsupported directive {other} (ignored)",
                d.at()
            )),
        }
    }

    fn rule(
        &mut self,
        d: &Directive,
        rule: Option<(&String, &String)>,
        actions: &str,
        base: &Path,
    ) {
        let actions = match parse::actions(actions) {
            Ok(a) => a,
            Err(e) => {
                self.errors.push(bad(d, None, e));
                return;
            }
        };
        let chained_onto = self.open_chain.take();
        let id = actions
            .iter()
            .find(|a| a.name == "id")
            .and_then(|a| a.value.as_deref());
        let id = match (id, chained_onto) {
            (_, Some(parent)) => self.program.rules[parent].id,
            (Some(v), None) => match v.trim().parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    self.errors
                        .push(bad(d, None, format!("id {v:?} is not a positive number")));
                    return;
                }
            },
            (None, None) => {
                self.errors.push(bad(d, None, "a rule needs an id"));
                return;
            }
        };
        if chained_onto.is_none() && !self.ids.insert(id) {
            self.errors
                .push(bad(d, Some(id), "the id is already used by another rule"));
            return;
        }
        let mut link = Link {
            always: rule.is_none(),
            values_slot: None,
            set: None,
            gid: 0,
            vars: Vec::new(),
            exclusions: Vec::new(),
            op: Operator::Unconditional,
            negate: false,
            transforms: Vec::new(),
            multi_match: false,
            capture: false,
            setvars: Vec::new(),
            ctls: Vec::new(),
        };
        if let Some((vars, op)) = rule {
            match parse::variables(vars) {
                Ok(specs) => {
                    for spec in specs {
                        match var_of(&spec) {
                            Ok(v) if spec.exclude => link.exclusions.push(Exclusion {
                                source: v.source,
                                selector: v.selector,
                            }),
                            Ok(v) => link.vars.push(v),
                            Err(e) => self.notes.unsupported.push(bad(
                                d,
                                Some(id),
                                format!("{e}; the variable is left out"),
                            )),
                        }
                    }
                }
                Err(e) => {
                    self.errors.push(bad(d, Some(id), e));
                    return;
                }
            }
            let per_request = link.vars.iter().all(|v| {
                !matches!(
                    v.source,
                    Source::Tx
                        | Source::MatchedVar
                        | Source::MatchedVarName
                        | Source::MatchedVars
                        | Source::MatchedVarsNames
                        | Source::UniqueId
                        | Source::Duration
                )
            });
            if per_request && !link.vars.is_empty() {
                let next = self.slots.len();
                link.values_slot = Some(*self.slots.entry(vars.to_string()).or_insert(next));
            }
            match self.operator(op, base, d, id) {
                Ok((o, negate)) => {
                    link.op = o;
                    link.negate = negate;
                }
                Err(Some(e)) => {
                    self.errors.push(bad(d, Some(id), e));
                    return;
                }
                Err(None) => {
                    // Unsupported (already noted): the rule never matches.
                    link.op = Operator::NoMatch;
                }
            }
        }
        let mut phase = None;
        let mut msg = None;
        let mut tags = Vec::new();
        let mut severity = None;
        let mut log = true;
        let mut disruptive = None;
        let mut status = None;
        let mut chain = false;
        let mut skip = 0;
        let mut skip_after = None;
        for a in &actions {
            let v = a.value.as_deref().unwrap_or("");
            let r: Result<(), String> = (|| {
                match a.name.as_str() {
                    "id"
                    | "rev"
                    | "ver"
                    | "maturity"
                    | "accuracy"
                    | "auditlog"
                    | "noauditlog"
                    | "sanitisematched"
                    | "sanitisearg"
                    | "sanitisematchedbytes"
                    | "log" => {}
                    "phase" => phase = Some(phase_number(v).ok_or(format!("phase {v:?}"))?),
                    "msg" => msg = Some(Template::parse(v)?),
                    // The audit line carries the matched variable and value.
                    "logdata" => {}
                    "tag" => tags.push(v.to_string()),
                    "severity" => {
                        severity = Some(severity_score(v).ok_or(format!("severity {v:?}"))?)
                    }
                    "nolog" => log = false,
                    "pass" => disruptive = Some(Disruptive::Pass),
                    "block" => disruptive = Some(Disruptive::Deny(0)),
                    "deny" | "drop" => disruptive = Some(Disruptive::Deny(403)),
                    "allow" => disruptive = Some(Disruptive::Allow),
                    "status" => {
                        status = Some(
                            v.trim()
                                .parse::<u16>()
                                .map_err(|_| format!("status {v:?}"))?,
                        )
                    }
                    "chain" => chain = true,
                    "capture" => link.capture = true,
                    "multimatch" => link.multi_match = true,
                    "skip" => skip = v.trim().parse().map_err(|_| format!("skip {v:?}"))?,
                    "skipafter" => skip_after = Some(v.to_string()),
                    "t" => {
                        if v.eq_ignore_ascii_case("none") {
                            link.transforms.clear();
                        } else {
                            match seclang_transform(v) {
                                Some(t) => link.transforms.push(t),
                                None => return Err(format!("unsupported transformation t:{v}")),
                            }
                        }
                    }
                    "setvar" => {
                        if let Some(s) = setvar(v)? {
                            link.setvars.push(s);
                        } else {
                            self.ignore_once("setvar", format!(
                                "setvar on persistent collections (ip., global., session.): not kept by the gateway; such rules have no lasting effect (first at {})",
                                d.at()
                            ));
                        }
                    }
                    "ctl" => {
                        if let Some(c) = ctl(v)? {
                            link.ctls.push(c);
                        }
                    }
                    "initcol" | "setuid" | "setsid" | "expirevar" | "deprecatevar" => {
                        self.ignore_once("collections", format!(
                            "{}: persistent collections (IP, GLOBAL, SESSION) are not kept by the gateway: they read empty, so rules that count across requests (CRS 910 IP reputation, 912 DoS) never fire (first at {})",
                            a.name,
                            d.at()
                        ));
                    }
                    other => return Err(format!("unsupported action {other}")),
                }
                Ok(())
            })();
            if let Err(e) = r {
                self.notes
                    .unsupported
                    .push(bad(d, Some(id), format!("{e} (ignored)")));
            }
        }
        let phase = match chained_onto {
            Some(parent) => self.program.rules[parent].phase,
            None => phase.unwrap_or(2),
        };
        if chain {
            self.open_chain = Some(match chained_onto {
                Some(p) => p,
                None => self.program.rules.len(),
            });
        }
        if let Some(parent) = chained_onto {
            self.program.rules[parent].links.push(link);
            return;
        }
        let pidx = match phase {
            1 | 2 => Some(usize::from(phase - 1)),
            _ => None,
        };
        let disruptive = match disruptive {
            Some(Disruptive::Deny(0)) => match pidx.and_then(|p| self.default_block[p]) {
                Some(s) => Disruptive::Deny(status.unwrap_or(s)),
                None => Disruptive::Pass,
            },
            Some(Disruptive::Deny(s)) => Disruptive::Deny(status.unwrap_or(s)),
            Some(other) => other,
            None => Disruptive::Pass,
        };
        let index = self.program.rules.len();
        self.program.rules.push(Rule {
            id,
            file: d.file.clone(),
            line: d.line,
            phase,
            links: vec![link],
            msg,
            tags,
            severity_score: severity.unwrap_or(0),
            log,
            disruptive,
            skip,
            skip_after,
        });
        if let Some(p) = pidx {
            self.program.phases[p].push(Step::Rule(index));
        }
    }

    /// The operator `@name param` (or `!@name`, or a bare regex).
    /// `Err(None)`: unsupported, noted.
    fn operator(
        &mut self,
        text: &str,
        base: &Path,
        d: &Directive,
        id: u32,
    ) -> Result<(Operator, bool), Option<String>> {
        let (negate, text) = match text.strip_prefix('!') {
            Some(t) => (true, t),
            None => (false, text),
        };
        let (name, param) = match text.strip_prefix('@') {
            Some(t) => match t.split_once(char::is_whitespace) {
                Some((n, p)) => (n, p.trim_start()),
                None => (t, ""),
            },
            None => ("rx", text),
        };
        let tpl = |p: &str| Template::parse(p).map_err(Some);
        let op = match name.to_ascii_lowercase().as_str() {
            "rx" => {
                let t = tpl(param)?;
                match t.literal() {
                    Some(p) => {
                        let (rx, backtracking) = Rx::compile(&p)
                            .map_err(|e| Some(format!("@rx does not compile: {e}")))?;
                        if let Some(why) = backtracking {
                            let why = why.lines().last().unwrap_or("").trim().to_string();
                            self.program
                                .backtracking
                                .push(format!("{}: rule {id}: {why}", d.at()));
                        }
                        Operator::Rx(rx)
                    }
                    None => Operator::RxMacro(t, Mutex::new(BTreeMap::new())),
                }
            }
            "pm" => phrases(param.split_whitespace().map(str::to_string).collect())?,
            "pmfromfile" | "pmf" => {
                let mut list = Vec::new();
                for f in param.split_whitespace() {
                    let path = resolve(base, f);
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        Some(format!("@pmFromFile cannot read {}: {e}", path.display()))
                    })?;
                    list.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_string),
                    );
                }
                phrases(list)?
            }
            "contains" => Operator::Contains(tpl(param)?),
            "containsword" => Operator::ContainsWord(tpl(param)?),
            "beginswith" => Operator::BeginsWith(tpl(param)?),
            "endswith" => Operator::EndsWith(tpl(param)?),
            "streq" => Operator::Streq(tpl(param)?),
            "within" => Operator::Within(tpl(param)?),
            "strmatch" => Operator::StrMatch(tpl(param)?),
            "eq" => Operator::Num(NumCmp::Eq, tpl(param)?),
            "ge" => Operator::Num(NumCmp::Ge, tpl(param)?),
            "gt" => Operator::Num(NumCmp::Gt, tpl(param)?),
            "le" => Operator::Num(NumCmp::Le, tpl(param)?),
            "lt" => Operator::Num(NumCmp::Lt, tpl(param)?),
            "validatebyterange" => Operator::ValidateByteRange(Box::new(
                parse_byte_range(param)
                    .ok_or_else(|| Some(format!("@validateByteRange {param:?}")))?,
            )),
            "validateurlencoding" => Operator::ValidateUrlEncoding,
            "validateutf8encoding" => Operator::ValidateUtf8,
            "ipmatch" | "ipmatchf" | "ipmatchfromfile" => {
                let entries: Vec<String> = if name.eq_ignore_ascii_case("ipmatch") {
                    param.split(',').map(|s| s.trim().to_string()).collect()
                } else {
                    let path = resolve(base, param.trim());
                    std::fs::read_to_string(&path)
                        .map_err(|e| Some(format!("@{name} cannot read {}: {e}", path.display())))?
                        .lines()
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .collect()
                };
                let mut set = JointPrefixSet::new();
                for e in entries {
                    match parse_net(&e) {
                        Some(n) => {
                            set.insert(n);
                        }
                        None => {
                            return Err(Some(format!("@{name}: {e:?} is not an address or CIDR")))
                        }
                    }
                }
                Operator::IpMatch(Box::new(set))
            }
            "detectsqli" => Operator::DetectSqli,
            "detectxss" => Operator::DetectXss,
            "unconditionalmatch" => Operator::Unconditional,
            "nomatch" => Operator::NoMatch,
            other => {
                self.notes.unsupported.push(bad(
                    d,
                    Some(id),
                    format!("unsupported operator @{other}: the rule never matches"),
                ));
                return Err(None);
            }
        };
        Ok((op, negate))
    }

    /// Applies load-time removals and target updates; the program is done.
    /// `max_paranoia`: the highest level whose rules will run.
    pub fn finish(mut self, max_paranoia: u8) -> (Program, Notes, Vec<String>) {
        if let Some(open) = self.open_chain {
            let r = &self.program.rules[open];
            self.errors.push(format!(
                "{}:{}: rule {}: the last rule says `chain` but no rule follows",
                r.file, r.line, r.id
            ));
        }
        // Removals apply to rules loaded before them too.
        let removed: Vec<bool> = self
            .program
            .rules
            .iter()
            .map(|r| {
                in_ranges(&self.removed_ids, r.id)
                    || r.tags.iter().any(|t| self.removed_tags.contains(t))
            })
            .collect();
        for steps in &mut self.program.phases {
            steps.retain(|s| !matches!(s, Step::Rule(i) if removed[*i]));
        }
        let mut slots = self.slots.len();
        for (ranges, ex) in std::mem::take(&mut self.target_updates) {
            for r in self
                .program
                .rules
                .iter_mut()
                .filter(|r| in_ranges(&ranges, r.id))
            {
                r.links[0].exclusions.extend(ex.iter().cloned());
                // Its values differ from the other rules' now.
                if r.links[0].values_slot.is_some() {
                    r.links[0].values_slot = Some(slots);
                    slots += 1;
                }
            }
        }
        self.program.value_slots = slots;
        self.build_sets(max_paranoia);
        let mut gid = 0;
        for r in &mut self.program.rules {
            for l in &mut r.links {
                l.gid = gid;
                gid += 1;
            }
        }
        self.program.id = crate::waf::engine::next_engine_id();
        // Marker positions after removal.
        for (p, steps) in self.program.phases.iter().enumerate() {
            self.program.markers[p] = steps
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match s {
                    Step::Marker(m) => Some((m.clone(), i + 1)),
                    Step::Rule(_) => None,
                })
                .collect();
        }
        (self.program, self.notes, self.errors)
    }
}

fn resolve(base: &Path, f: &str) -> PathBuf {
    let p = Path::new(f);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn phase_number(v: &str) -> Option<u8> {
    match v.trim() {
        "request" => Some(2),
        "response" => Some(4),
        "logging" => Some(5),
        n => n.parse().ok().filter(|n| (1..=5).contains(n)),
    }
}

fn severity_score(v: &str) -> Option<u32> {
    Some(match v.trim().to_ascii_uppercase().as_str() {
        "EMERGENCY" | "ALERT" | "CRITICAL" | "0" | "1" | "2" => 5,
        "ERROR" | "3" => 4,
        "WARNING" | "4" => 3,
        "NOTICE" | "5" => 2,
        "INFO" | "DEBUG" | "6" | "7" => 0,
        _ => return None,
    })
}

fn phrases(list: Vec<String>) -> Result<Operator, Option<String>> {
    if list.is_empty() {
        return Err(Some("the phrase list is empty".into()));
    }
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(&list)
        .map(|ac| Operator::Pm(Box::new(ac)))
        .map_err(|e| Some(format!("phrases: {e}")))
}

/// Whether `id` is in one of the inclusive `ranges`.
pub fn in_ranges(ranges: &[(u32, u32)], id: u32) -> bool {
    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&id))
}

fn id_ranges(s: &str) -> Option<Vec<(u32, u32)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let p = p.trim();
            match p.split_once('-') {
                Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
                None => p.parse().ok().map(|n| (n, n)),
            }
        })
        .collect()
}

fn var_of(spec: &VarSpec) -> Result<Var, String> {
    let (source, label) =
        Source::parse(&spec.name).ok_or_else(|| format!("unsupported variable {}", spec.name))?;
    let selector = match &spec.selector {
        None => None,
        Some(Selector::Key(k)) => Some(Sel::Key(k.to_ascii_lowercase())),
        Some(Selector::Regex(r)) => Some(Sel::Regex(
            compile_regex(&format!("(?i){}", translate_pcre(r)))
                .map_err(|e| format!("selector /{r}/: {e}"))?,
        )),
    };
    Ok(Var {
        count: spec.count,
        source,
        label,
        selector,
    })
}

/// `ARGS:foo|REQUEST_HEADERS:x` as exclusions (for ctl and updates; a
/// leading `!` is optional).
fn exclusions_of(text: &str) -> Result<Vec<Exclusion>, String> {
    parse::variables(text)?
        .iter()
        .map(|s| {
            var_of(s).map(|v| Exclusion {
                source: v.source,
                selector: v.selector,
            })
        })
        .collect()
}

fn setvar(v: &str) -> Result<Option<SetVar>, String> {
    let (delete, v) = match v.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, v),
    };
    let (name, value) = match v.split_once('=') {
        Some((n, val)) => (n.trim(), Some(val)),
        None => (v.trim(), None),
    };
    let Some((coll, key)) = name.split_once('.') else {
        return Err(format!("setvar {v:?}: expected COLLECTION.name"));
    };
    if !coll.eq_ignore_ascii_case("tx") {
        return Ok(None);
    }
    let key = Template::parse(&key.to_ascii_lowercase())?;
    if delete {
        return Ok(Some(SetVar::Delete(key)));
    }
    let value = value.unwrap_or("1");
    let (op, value) = if let Some(r) = value.strip_prefix('+') {
        (SetOp::Add, r)
    } else if let Some(r) = value.strip_prefix('-') {
        (SetOp::Sub, r)
    } else {
        (SetOp::Assign, value)
    };
    Ok(Some(SetVar::Set {
        key,
        op,
        value: Template::parse(value)?,
    }))
}

fn ctl(v: &str) -> Result<Option<Ctl>, String> {
    let (name, value) = v
        .split_once('=')
        .ok_or_else(|| format!("ctl:{v}: expected name=value"))?;
    let value = value.trim();
    let by_target = |value: &str| -> Result<(String, Vec<Exclusion>), String> {
        let (what, targets) = value
            .split_once(';')
            .ok_or_else(|| format!("ctl:{name}={value}: expected WHAT;TARGET"))?;
        Ok((what.trim().to_string(), exclusions_of(targets)?))
    };
    Ok(Some(match name.trim().to_ascii_lowercase().as_str() {
        "ruleremovebyid" => Ctl::RemoveById(id_ranges(value).ok_or(format!("ctl:{v}: bad id"))?),
        "ruleremovebytag" => Ctl::RemoveByTag(value.to_string()),
        "ruleremovetargetbyid" => {
            let (ids, ex) = by_target(value)?;
            Ctl::RemoveTargetById(id_ranges(&ids).ok_or(format!("ctl:{v}: bad id"))?, ex)
        }
        "ruleremovetargetbytag" => {
            let (tag, ex) = by_target(value)?;
            Ctl::RemoveTargetByTag(tag, ex)
        }
        "ruleengine" => Ctl::Engine(match value.to_ascii_lowercase().as_str() {
            "on" => EngineState::On,
            "detectiononly" => EngineState::DetectionOnly,
            "off" => EngineState::Off,
            _ => return Err(format!("ctl:{v}: expected On, DetectionOnly or Off")),
        }),
        // The gateway picks the body parser from Content-Type, keeps the
        // body variable, and has its own body and audit settings.
        "requestbodyprocessor"
        | "forcerequestbodyvariable"
        | "requestbodyaccess"
        | "requestbodylimit"
        | "auditengine"
        | "auditlogparts"
        | "responsebodyaccess" => return Ok(None),
        other => return Err(format!("unsupported ctl:{other}")),
    }))
}

/// SecLang's `t:` names.
fn seclang_transform(name: &str) -> Option<Transform> {
    Some(match name.to_ascii_lowercase().as_str() {
        "lowercase" => Transform::Lowercase,
        "urldecode" | "urldecodeuni" => Transform::UrlDecode,
        "htmlentitydecode" => Transform::HtmlEntityDecode,
        "jsdecode" => Transform::JsDecode,
        "cssdecode" => Transform::CssDecode,
        "cmdline" => Transform::CmdLine,
        "compresswhitespace" => Transform::CompressWhitespace,
        "removewhitespace" => Transform::RemoveWhitespace,
        "removenulls" => Transform::RemoveNulls,
        "normalisepath" | "normalizepath" => Transform::NormalizePathPosix,
        "normalisepathwin" | "normalizepathwin" => Transform::NormalizePath,
        "replacecomments" => Transform::ReplaceComments,
        "hexencode" => Transform::HexEncode,
        "length" => Transform::Length,
        "sha1" => Transform::Sha1,
        "utf8tounicode" => Transform::Utf8ToUnicode,
        "base64decode" | "base64decodeext" => Transform::Base64Decode,
        "escapeseqdecode" => Transform::EscapeSeqDecode,
        "trim" => Transform::Trim,
        "trimleft" => Transform::TrimLeft,
        "trimright" => Transform::TrimRight,
        "sqlhexdecode" => Transform::SqlHexDecode,
        "hexdecode" => Transform::HexDecode,
        "removecomments" => Transform::RemoveComments,
        "removecommentschar" => Transform::RemoveCommentsChar,
        "uppercase" => Transform::Uppercase,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcre_spellings() {
        assert_eq!(translate_pcre(r"a\Z"), r"a\z");
        assert_eq!(translate_pcre(r"[]a]"), r"[\]a]");
        assert_eq!(translate_pcre(r"[^]a]"), r"[^\]a]");
        assert_eq!(translate_pcre(r"[a[b]"), r"[a\[b]");
        assert_eq!(translate_pcre(r"[[:alpha:]]"), r"[[:alpha:]]");
        assert_eq!(translate_pcre(r"[&&]"), r"[\&&]");
        assert_eq!(translate_pcre(r"(?:{|x{2,3})"), r"(?:\{|x{2,3})");
        assert_eq!(translate_pcre(r"[\<\>]\<"), r"[<>]<");
        assert_eq!(translate_pcre("[´]"), r"[\xc2\xb4]");
        for p in [
            r"a\Z",
            r"[]a]",
            r"[a[b]",
            r"[&&x]",
            r"(?i)union\s+select",
            r"^\(\s*\)\s+{",
            "[^'´’]",
        ] {
            assert!(Rx::compile(p).is_ok(), "{p}");
        }
        let (_, backtracking) = Rx::compile(r"(a)\1").unwrap();
        assert!(backtracking.is_some(), "a backreference needs the fallback");
    }

    #[test]
    fn templates() {
        let t = Template::parse("x=%{tx.A}%{MATCHED_VAR}/%{rule.id}").unwrap();
        assert_eq!(t.parts.len(), 5);
        assert!(matches!(&t.parts[1], Part::Macro(Source::Tx, Some(k), _) if k == "a"));
        assert!(Template::parse("%{nope.x}").is_err());
        assert_eq!(
            Template::parse("plain").unwrap().literal().as_deref(),
            Some("plain")
        );
    }
}
