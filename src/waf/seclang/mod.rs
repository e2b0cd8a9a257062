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

/// The setup used when `[waf] crs_setup` is not given, built in from
/// `conf/crs-api-defaults.conf` (what it sets, and why, is written there):
/// anomaly scoring, REST methods and the JSON content types allowed, 400 on
/// a body that does not parse, and three rules kept off JSON free text.
pub const API_DEFAULTS: &str = include_str!("../../../conf/crs-api-defaults.conf");

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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    /// A CRS folder holding `rules` as its one rule file, and `setup`.
    fn load(setup: &str, rules: &str) -> Result<Crs, Vec<String>> {
        let dir = std::env::temp_dir().join(format!(
            "frontdesk-seclang-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        std::fs::write(dir.join("rules/REQUEST-100-TEST.conf"), rules).unwrap();
        std::fs::write(dir.join("rules/words.data"), "# comment\nalpha\nBeta\n").unwrap();
        std::fs::write(dir.join("setup.conf"), setup).unwrap();
        let out = Crs::load(&CrsOptions {
            dir: dir.clone(),
            setup: Some(dir.join("setup.conf")),
            paranoia: 1,
            detection_paranoia: 1,
            anomaly_threshold: 5,
            exclude: vec![],
        });
        std::fs::remove_dir_all(&dir).ok();
        out
    }

    const SETUP: &str = "SecRuleEngine On\nSecDefaultAction \"phase:2,log,pass\"\n";

    static HOST_ONLY: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(|| {
        let mut h = HeaderMap::new();
        h.insert("host", "shop.example".parse().unwrap());
        h
    });

    fn get(uri: &str) -> RequestView<'_> {
        let path = uri.split('?').next().unwrap_or("/");
        RequestView::new("GET", path, uri.as_bytes(), &HOST_ONLY, None)
    }

    fn ids(v: &CrsVerdict) -> Vec<u32> {
        v.hits.iter().map(|h| h.id).collect()
    }

    #[test]
    fn skip_after_a_marker_that_follows_at_once_skips_nothing_else() {
        let crs = load(
            SETUP,
            r#"
SecAction "id:1,phase:2,pass,nolog,skipAfter:M1"
SecMarker M1
SecRule ARGS "@contains x" "id:2,phase:2,pass,msg:'after the marker'"
SecAction "id:3,phase:2,pass,nolog,skipAfter:M2"
SecRule ARGS "@contains x" "id:4,phase:2,pass,msg:'skipped'"
SecMarker M2
"#,
        )
        .unwrap();
        assert_eq!(ids(&crs.run(&get("/?a=x"), &[])), [2]);
    }

    #[test]
    fn every_link_of_a_matching_chain_runs_its_actions() {
        let crs = load(
            SETUP,
            r#"
SecRule ARGS:a "@rx ^(\w+)-(\d+)$" "id:10,phase:2,pass,capture,msg:'chain',setvar:'tx.first=%{tx.1}',chain"
    SecRule TX:2 "@eq 42" "setvar:'tx.score=+5',setvar:'tx.score=+2'"
SecRule TX:score "@eq 7" "id:11,phase:2,pass,msg:'score is %{tx.score} after %{tx.first}'"
SecRule TX:score "@eq 7" "id:12,phase:2,deny,status:418,msg:'teapot'"
"#,
        )
        .unwrap();
        let v = crs.run(&get("/?a=abc-42"), &[]);
        assert_eq!(ids(&v), [10, 11, 12]);
        assert_eq!(v.hits[1].msg, "score is 7 after abc");
        assert_eq!(v.deny, Some(418), "status: is honoured");
        // The chain's second link fails: its actions do not run.
        let v = crs.run(&get("/?a=abc-41"), &[]);
        assert!(ids(&v).is_empty());
        assert_eq!(v.deny, None);
    }

    #[test]
    fn macros_expand_for_any_collection() {
        let crs = load(
            SETUP,
            r#"
SecRule REQUEST_HEADERS:Host "@streq shop.example" "id:20,phase:1,pass,nolog,setvar:'tx.h=%{request_headers.host}'"
SecRule ARGS:q "@contains needle" "id:21,phase:2,pass,msg:'%{MATCHED_VAR_NAME}=%{MATCHED_VAR} on %{tx.h}'"
"#,
        )
        .unwrap();
        let v = crs.run(&get("/?q=a%20needle"), &[]);
        assert_eq!(v.hits[0].msg, "ARGS:q=a needle on shop.example");
    }

    #[test]
    fn normalize_path_win_turns_backslashes_into_slashes_first() {
        let crs = load(
            SETUP,
            r#"
SecRule ARGS "@streq /etc/passwd" "id:30,phase:2,pass,t:none,t:normalizePathWin,msg:'win'"
SecRule ARGS "@streq /etc/passwd" "id:31,phase:2,pass,t:none,t:normalizePath,msg:'posix'"
"#,
        )
        .unwrap();
        assert_eq!(ids(&crs.run(&get("/?f=\\etc\\x\\..\\passwd"), &[])), [30]);
        assert_eq!(ids(&crs.run(&get("/?f=/etc/x/../passwd"), &[])), [30, 31]);
    }

    #[test]
    fn ctl_removals_exclusions_counts_and_data_files() {
        let crs = load(
            SETUP,
            r#"
SecRule REQUEST_FILENAME "@beginsWith /admin" "id:40,phase:1,pass,nolog,ctl:ruleRemoveById=41,ctl:ruleRemoveTargetById=42;ARGS:note"
SecRule ARGS "@pmFromFile words.data" "id:41,phase:2,pass,msg:'words'"
SecRule ARGS|!ARGS:skip "@pm alpha" "id:42,phase:2,pass,msg:'phrase'"
SecRule &ARGS "@gt 2" "id:43,phase:2,pass,msg:'many'"
"#,
        )
        .unwrap();
        assert_eq!(ids(&crs.run(&get("/x?a=BETA"), &[])), [41]);
        assert_eq!(ids(&crs.run(&get("/x?skip=alpha"), &[])), [41]);
        assert_eq!(ids(&crs.run(&get("/x?note=alpha"), &[])), [41, 42]);
        assert_eq!(ids(&crs.run(&get("/admin?note=alpha&x=1&y=2"), &[])), [43]);
        // A route's exclusions are removals by id.
        assert_eq!(ids(&crs.run(&get("/x?a=alpha"), &[41])), [42]);
    }

    #[test]
    fn load_problems_name_file_line_and_rule() {
        let e = load(SETUP, "SecRule ARGS \"@rx (\" \"id:50,phase:2,pass\"\n").unwrap_err();
        assert!(
            e[0].contains("REQUEST-100-TEST.conf:1: rule 50: @rx does not compile"),
            "{e:?}"
        );
        let e = load(SETUP, "\n\nSecRule ARGS \"@rx a\" \"phase:2,pass\"\n").unwrap_err();
        assert!(
            e[0].contains("REQUEST-100-TEST.conf:3:") && e[0].contains("needs an id"),
            "{e:?}"
        );
        let e = load(SETUP, "SecRule ARGS \"@rx a\" \"id:1,chain\"\n").unwrap_err();
        assert!(e[0].contains("no rule follows"), "{e:?}");
        // Unsupported things are listed, not fatal.
        let crs = load(
            SETUP,
            "SecGeoLookupDb /x.dat\nSecRule ARGS \"@inspectFile /bin/x\" \"id:60,phase:2,pass,foo:bar\"\n",
        )
        .unwrap();
        let notes = crs.notes.unsupported.join("\n");
        assert!(
            notes.contains(":1: unsupported directive SecGeoLookupDb"),
            "{notes}"
        );
        assert!(
            notes.contains(":2: rule 60: unsupported operator @inspectfile"),
            "{notes}"
        );
        assert!(
            notes.contains(":2: rule 60: unsupported action foo"),
            "{notes}"
        );
    }
}
