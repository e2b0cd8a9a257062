//! SecLang's surface syntax: configuration files made of directives
//! (`SecRule VARIABLES "OPERATOR" "ACTIONS"`), with `\` line continuations,
//! `#` comments and double-quoted arguments; inside them, the action list
//! (`id:1,phase:2,msg:'...',setvar:'tx.x=+5'`) and the variable list
//! (`ARGS|!ARGS:foo|REQUEST_HEADERS:/^x-/|&TX:y`).
//!
//! Everything here is text to structure; meaning is given in `compile`.
//! Each directive keeps the file and the line it starts on, for errors.

use std::sync::Arc;

/// One directive as written.
#[derive(Debug, Clone)]
pub struct Directive {
    pub file: Arc<str>,
    /// The line the directive starts on (1-based).
    pub line: usize,
    pub name: String,
    pub args: Vec<String>,
}

impl Directive {
    /// `file:line`, for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// Splits a file into directives. A problem is `file:line: message`.
pub fn directives(file: &str, text: &str) -> Result<Vec<Directive>, String> {
    let file: Arc<str> = Arc::from(file);
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start = 0;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if logical.is_empty() {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            start = n + 1;
        }
        // A backslash at the end of a line continues the directive.
        match line.strip_suffix('\\') {
            Some(head) => {
                logical.push_str(head);
                continue;
            }
            None => logical.push_str(line),
        }
        let args = split_args(&logical).map_err(|e| format!("{file}:{start}: {e}"))?;
        logical.clear();
        let mut args = args.into_iter();
        if let Some(name) = args.next() {
            out.push(Directive {
                file: file.clone(),
                line: start,
                name,
                args: args.collect(),
            });
        }
    }
    if !logical.trim().is_empty() {
        return Err(format!(
            "{file}:{start}: the file ends inside a directive (a line ends with \\)"
        ));
    }
    Ok(out)
}

/// Splits a directive line on whitespace; `"..."` (and `'...'`) group, and
/// `\"` inside double quotes is a quote. Other backslashes stay as written:
/// regexes need them.
fn split_args(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut arg = String::new();
        if c == '"' || c == '\'' {
            let quote = c;
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&quote) {
                    arg.push(quote);
                    chars.next();
                } else if c == quote {
                    closed = true;
                    break;
                } else {
                    arg.push(c);
                }
            }
            if !closed {
                return Err(format!("unterminated {quote} quote"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    Ok(args)
}

/// One action: `name` or `name:value` (quotes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub name: String,
    pub value: Option<String>,
}

/// Splits an action list on commas outside single quotes.
pub fn actions(text: &str) -> Result<Vec<Action>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut chars = text.chars().peekable();
    let flush = |cur: &mut String, out: &mut Vec<Action>| -> Result<(), String> {
        let item = std::mem::take(cur);
        let item = item.trim();
        if item.is_empty() {
            return Ok(());
        }
        let (name, value) = match item.split_once(':') {
            Some((n, v)) => {
                let v = v.trim();
                let v = v
                    .strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
                    .unwrap_or(v);
                (n.trim(), Some(v.replace("\\'", "'")))
            }
            None => (item, None),
        };
        if name.is_empty() {
            return Err(format!("action {item:?} has no name"));
        }
        out.push(Action {
            name: name.to_ascii_lowercase(),
            value,
        });
        Ok(())
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_quote && chars.peek() == Some(&'\'') => {
                cur.push('\\');
                cur.push('\'');
                chars.next();
            }
            '\'' => {
                in_quote = !in_quote;
                cur.push(c);
            }
            ',' if !in_quote => flush(&mut cur, &mut out)?,
            c => cur.push(c),
        }
    }
    if in_quote {
        return Err(format!("unterminated ' quote in actions {text:?}"));
    }
    flush(&mut cur, &mut out)?;
    Ok(out)
}

/// One entry of a variable list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarSpec {
    /// `!VAR:sel`: an exclusion from the rule's other variables.
    pub exclude: bool,
    /// `&VAR`: the number of values.
    pub count: bool,
    /// Upper-case collection or variable name.
    pub name: String,
    pub selector: Option<Selector>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A key, compared case-insensitively.
    Key(String),
    /// `/regex/`.
    Regex(String),
}

/// Splits `A|!B:x|C:/re|gex/` into variable specs (a `/.../` selector may
/// hold `|`).
pub fn variables(text: &str) -> Result<Vec<VarSpec>, String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b'|' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let mut exclude = false;
        let mut count = false;
        loop {
            match b.get(i) {
                Some(b'!') => exclude = true,
                Some(b'&') => count = true,
                _ => break,
            }
            i += 1;
        }
        let name_start = i;
        while i < b.len() && b[i] != b':' && b[i] != b'|' {
            i += 1;
        }
        let name = text[name_start..i].trim().to_ascii_uppercase();
        if name.is_empty() {
            return Err(format!("empty variable name in {text:?}"));
        }
        let mut selector = None;
        if b.get(i) == Some(&b':') {
            i += 1;
            // XML's selector is an XPath (`XML:/*`), not a regex.
            if b.get(i) == Some(&b'/') && name != "XML" {
                // A regex selector ends at the next unescaped `/`.
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'/' {
                    if b[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                if j >= b.len() {
                    return Err(format!("unterminated /regex/ selector in {text:?}"));
                }
                selector = Some(Selector::Regex(text[start..j].to_string()));
                i = j + 1;
            } else {
                let start = i;
                while i < b.len() && b[i] != b'|' {
                    i += 1;
                }
                let key = text[start..i].trim();
                let key = key
                    .strip_prefix('\'')
                    .and_then(|k| k.strip_suffix('\''))
                    .unwrap_or(key);
                selector = Some(Selector::Key(key.to_string()));
            }
        }
        out.push(VarSpec {
            exclude,
            count,
            name,
            selector,
        });
    }
    if out.is_empty() {
        return Err("no variables".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_quotes_and_comments() {
        let text = "# comment\nSecRule ARGS \"@rx a\\\"b\" \\\n    \"id:1,\\\n    msg:'it\\'s'\"\n\nSecMarker END\n";
        let d = directives("f.conf", text).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "SecRule");
        assert_eq!(d[0].line, 2);
        assert_eq!(d[0].args, ["ARGS", "@rx a\"b", "id:1,    msg:'it\\'s'"]);
        assert_eq!(d[1].line, 6);
        let a = actions(&d[0].args[2]).unwrap();
        assert_eq!(a[1].name, "msg");
        assert_eq!(a[1].value.as_deref(), Some("it's"));
    }

    #[test]
    fn actions_keep_commas_inside_quotes() {
        let a = actions("id:1,setvar:'tx.a=+%{tx.b}',msg:'a, b',t:none,t:lowercase,pass").unwrap();
        let names: Vec<&str> = a.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["id", "setvar", "msg", "t", "t", "pass"]);
        assert_eq!(a[1].value.as_deref(), Some("tx.a=+%{tx.b}"));
        assert_eq!(a[2].value.as_deref(), Some("a, b"));
        assert!(actions("msg:'open").is_err());
    }

    #[test]
    fn variable_lists() {
        let v = variables("REQUEST_COOKIES|!REQUEST_COOKIES:/__utm|x/|&TX:foo|ARGS:'a b'|XML:/*")
            .unwrap();
        assert_eq!(v.len(), 5);
        assert!(v[1].exclude);
        assert_eq!(v[1].selector, Some(Selector::Regex("__utm|x".into())));
        assert!(v[2].count);
        assert_eq!(v[2].selector, Some(Selector::Key("foo".into())));
        assert_eq!(v[3].selector, Some(Selector::Key("a b".into())));
        assert_eq!(v[4].name, "XML");
        assert!(variables("ARGS:/open").is_err());
    }
}
