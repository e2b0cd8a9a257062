//! The rule model and rule files (`rules/*.toml`).
//!
//! A rule is SecLang's `SecRule` in TOML: *targets* (variables: `args`,
//! `header:user-agent`, `cookies`, ...), a chain of *transforms* (`t:`),
//! one *operator* (`@rx`, `@pm`, `@detectSQLi`, ...) with its argument, an
//! optional `negate` (`!@op`), a *severity* that feeds the inbound anomaly
//! score, a *paranoia* level and *tags*. The phase follows from the
//! targets (anything that reads the body runs once the body is read). The
//! Core Rule Set's rules map onto this shape one to one, and per-route
//! exclusions (`waf_exclude`) are `ctl:ruleRemoveById`.
//!
//! ```toml
//! [[rule]]
//! id = 100300
//! msg = "Path traversal"
//! severity = "critical"          # critical | error | warning | notice
//! paranoia = 1
//! tags = ["attack-lfi"]
//! targets = ["path", "args"]
//! transforms = ["url_decode", "normalize_path"]
//! operator = "regex"
//! value = '(?:^|/)\.\.(?:/|$)'
//! ```
//!
//! Problems are reported as `file:line: rule ID: message`.

use std::path::Path;

use serde::Deserialize;

/// One `[[rule]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: u32,
    pub msg: String,
    #[serde(default = "default_severity")]
    pub severity: String,
    #[serde(default = "default_paranoia")]
    pub paranoia: u8,
    #[serde(default)]
    pub tags: Vec<String>,
    pub targets: Vec<String>,
    #[serde(default)]
    pub transforms: Vec<String>,
    pub operator: String,
    /// The operator's argument (a regex, a string, a number, a byte range).
    pub value: Option<String>,
    /// A list argument (`phrases`, `ip_match`).
    pub values: Option<Vec<String>>,
    /// Match when the operator does *not* match.
    #[serde(default)]
    pub negate: bool,
}

fn default_severity() -> String {
    "critical".to_string()
}
fn default_paranoia() -> u8 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<toml::Spanned<toml::Value>>,
}

/// A rule with where it came from.
#[derive(Debug, Clone)]
pub struct LocatedRule {
    pub spec: RuleSpec,
    pub file: String,
    pub line: usize,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses one rule file; problems are `file:line: rule ID: message`.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<LocatedRule>, Vec<String>> {
    let file = path.display().to_string();
    let parsed: RuleFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            return Err(vec![format!("{file}:{line}: {}", e.message().trim())]);
        }
    };
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    for item in parsed.rule {
        let line = line_of(text, item.span().start);
        let value = item.into_inner();
        let id = value
            .get("id")
            .and_then(|v| v.as_integer())
            .map_or_else(|| "?".to_string(), |i| i.to_string());
        match value.try_into::<RuleSpec>() {
            Ok(spec) => rules.push(LocatedRule {
                spec,
                file: file.clone(),
                line,
            }),
            Err(e) => problems.push(format!("{file}:{line}: rule {id}: {}", e.message().trim())),
        }
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

/// The anomaly score a severity adds (CRS's defaults).
pub fn severity_score(s: &str) -> Option<u32> {
    Some(match s {
        "critical" => 5,
        "error" => 4,
        "warning" => 3,
        "notice" => 2,
        _ => return None,
    })
}
