//! The OWASP Core Rule Set, in process: a SecLang front end that loads a
//! CRS folder (`rules/*.conf` and their `.data` files, unmodified) into a
//! program the gateway runs on the same [`RequestView`] as the native rules.
//!
//! Load order is ModSecurity's: the setup (the operator's `crs_setup` file,
//! or [`API_DEFAULTS`] when there is none), then the `[waf]` keys
//! (`paranoia`, `detection_paranoia`, `anomaly_threshold`, set as the TX
//! variables CRS 3 and CRS 4 read, so they win over the setup file), then
//! `rules/REQUEST-*.conf` in name order, then `crs_exclude` as
//! `SecRuleRemoveById`. `RESPONSE-*.conf` is not loaded: the gateway does
//! not hold responses back for inspection.
//!
//! Everything the front end does not support is listed in [`Notes`] with
//! file, line and rule id (`frontdesk check` prints them); errors (a regex
//! that compiles in neither engine, a malformed rule) stop the load.

mod compile;
mod parse;
mod run;

use std::path::{Path, PathBuf};

pub use compile::Notes;
use compile::{Compiler, Program};

use super::engine::Hit;
use super::request::RequestView;

/// The setup used when `[waf] crs_setup` is not given: anomaly scoring
/// (rules pass and score, CRS's blocking evaluation denies), and what an
/// API needs: REST methods and the JSON family of content types allowed.
/// A body that does not parse as its Content-Type says is refused with
/// 400 (ModSecurity's recommended rule 200002).
///
/// And, like CRS's own application exclusion packages (903.9xxx), three
/// rules do not read JSON body fields (`ARGS:json.*`), where API clients
/// put free text: 942190 and 942270 read prose such as `"union jack"` or
/// `Select 'Export' from the menu` as SQL, 932115 reads quoted speech as
/// Windows commands. JSON fields stay covered by libinjection (942100) and
/// every other SQL and command rule; query strings and forms by all three.
pub const API_DEFAULTS: &str = r#"
SecRuleEngine On
SecDefaultAction "phase:1,log,auditlog,pass"
SecDefaultAction "phase:2,log,auditlog,pass"
SecAction "id:900990,phase:1,nolog,pass,t:none,setvar:tx.crs_setup_version=334"
SecAction "id:900200,phase:1,nolog,pass,t:none,setvar:'tx.allowed_methods=GET HEAD POST PUT PATCH DELETE OPTIONS'"
SecAction "id:900220,phase:1,nolog,pass,t:none,setvar:'tx.allowed_request_content_type=|application/x-www-form-urlencoded| |multipart/form-data| |multipart/related| |text/xml| |application/xml| |application/soap+xml| |application/json| |application/cloudevents+json| |application/cloudevents-batch+json| |application/merge-patch+json| |application/json-patch+json| |application/problem+json| |application/vnd.api+json| |application/x-ndjson| |application/graphql| |text/plain|'"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body: %{reqbody_error_msg}',severity:2"
SecRuleUpdateTargetById 942190 "!ARGS:/^json\./"
SecRuleUpdateTargetById 942270 "!ARGS:/^json\./"
SecRuleUpdateTargetById 932115 "!ARGS:/^json\./"
"#;

/// `[waf]` keys for the Core Rule Set.
#[derive(Debug, Clone)]
pub struct CrsOptions {
    /// The CRS folder (holding `rules/`).
    pub dir: PathBuf,
    pub setup: Option<PathBuf>,
    pub paranoia: u8,
    pub detection_paranoia: u8,
    pub anomaly_threshold: u32,
    pub exclude: Vec<u32>,
}

/// A loaded Core Rule Set.
#[derive(Debug)]
pub struct Crs {
    program: Program,
    pub notes: Notes,
}

/// What a CRS run concluded.
pub struct CrsVerdict {
    pub hits: Vec<Hit>,
    pub deny: Option<u16>,
    pub score: u32,
}

/// How deep `Include` may nest.
const MAX_INCLUDE_DEPTH: usize = 8;

fn read_into(c: &mut Compiler, path: &Path, depth: usize) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    add_text(c, &path.display().to_string(), &text, base, depth)
}

fn add_text(
    c: &mut Compiler,
    name: &str,
    text: &str,
    base: &Path,
    depth: usize,
) -> Result<(), String> {
    for d in parse::directives(name, text)? {
        if d.name == "Include" || d.name == "IncludeOptional" {
            let Some(pattern) = d.args.first() else {
                return Err(format!("{}: {} needs a path", d.at(), d.name));
            };
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(format!(
                    "{}: includes nest deeper than {MAX_INCLUDE_DEPTH}",
                    d.at()
                ));
            }
            let full = base.join(pattern);
            let mut paths: Vec<PathBuf> = glob::glob(&full.to_string_lossy())
                .map_err(|e| format!("{}: {pattern:?}: {e}", d.at()))?
                .filter_map(Result::ok)
                .collect();
            paths.sort();
            if paths.is_empty() && d.name == "Include" {
                return Err(format!("{}: Include {pattern:?} matches no file", d.at()));
            }
            for p in paths {
                read_into(c, &p, depth + 1)?;
            }
            continue;
        }
        c.add(&d, base);
    }
    Ok(())
}

impl Crs {
    /// Loads the rule set; errors name the file and line.
    pub fn load(opts: &CrsOptions) -> Result<Crs, Vec<String>> {
        let mut c = Compiler::new();
        let rules_dir = opts.dir.join("rules");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&rules_dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.ends_with(".conf") && !name.starts_with("RESPONSE-")
                })
                .collect(),
            Err(e) => {
                return Err(vec![format!(
                    "cannot read {}: {e} (crs must be a Core Rule Set folder holding rules/*.conf, e.g. /usr/share/modsecurity-crs)",
                    rules_dir.display()
                )])
            }
        };
        files.sort();
        if files.is_empty() {
            return Err(vec![format!(
                "{} holds no REQUEST-*.conf rule files",
                rules_dir.display()
            )]);
        }
        let mut fatal = Vec::new();
        let setup = match &opts.setup {
            Some(p) => read_into(&mut c, p, 0),
            None => add_text(&mut c, "<api defaults>", API_DEFAULTS, &opts.dir, 0),
        };
        fatal.extend(setup.err());
        let keys = format!(
            "SecAction \"id:8999001,phase:1,nolog,pass,t:none,\
             setvar:tx.paranoia_level={p},setvar:tx.blocking_paranoia_level={p},\
             setvar:tx.executing_paranoia_level={d},setvar:tx.detection_paranoia_level={d},\
             setvar:tx.inbound_anomaly_score_threshold={t}\"\n",
            p = opts.paranoia,
            d = opts.detection_paranoia.max(opts.paranoia),
            t = opts.anomaly_threshold,
        );
        fatal.extend(add_text(&mut c, "<[waf] keys>", &keys, &opts.dir, 0).err());
        for f in &files {
            fatal.extend(read_into(&mut c, f, 0).err());
        }
        if !opts.exclude.is_empty() {
            let ids: Vec<String> = opts.exclude.iter().map(u32::to_string).collect();
            let text = format!("SecRuleRemoveById {}\n", ids.join(" "));
            fatal.extend(add_text(&mut c, "<waf.crs_exclude>", &text, &opts.dir, 0).err());
        }
        let (program, notes, errors) = c.finish(opts.detection_paranoia.max(opts.paranoia));
        fatal.extend(errors);
        if !fatal.is_empty() {
            return Err(fatal);
        }
        for b in &program.backtracking {
            log::debug!("{b}: @rx needs PCRE features; runs on the bounded backtracking engine");
        }
        Ok(Crs { program, notes })
    }

    /// Rules loaded for phases 1 and 2.
    pub fn rule_count(&self) -> usize {
        self.program
            .phases
            .iter()
            .flatten()
            .filter(|s| matches!(s, compile::Step::Rule(_)))
            .count()
    }

    /// Rules whose regex runs on the backtracking fallback (`file:line: rule id`).
    pub fn backtracking(&self) -> &[String] {
        &self.program.backtracking
    }

    pub fn run(&self, req: &RequestView, excluded: &[u32]) -> CrsVerdict {
        let out = run::run(&self.program, req, excluded);
        CrsVerdict {
            hits: out.hits,
            deny: out.deny,
            score: out.score,
        }
    }
}
