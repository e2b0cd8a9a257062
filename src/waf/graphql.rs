//! GraphQL documents as the WAF sees them: the free text of a GraphQL
//! request is in its string literals; everything else is GraphQL syntax
//! (names, `$variables`, `{ }` selections, `...` spreads) whose tokens
//! cannot carry an injection: a name is `[_A-Za-z][_0-9A-Za-z]*`, a number
//! is digits. Rules written for free-form parameters misread that syntax
//! (`{ id name }` looks like a shell command to CRS 932100), so a value
//! that lexes as a GraphQL document is inspected as its string literals.
//! A value that does not lex as GraphQL is inspected whole, as before.
//!
//! The lexer follows the GraphQL specification (October 2021), section 2.1.

/// The decoded string literals of `doc` when it lexes as a GraphQL
/// executable document; `None` when it is not GraphQL.
///
/// Beyond the tokens, the shape is checked where it matters for a WAF: the
/// executable punctuators only (no `|` or `&`, which belong to schema
/// definitions and to shells), `$` only before a variable name, brackets
/// balanced, and outside any braces only definition headers (`query`,
/// `mutation`, `subscription`, `fragment`, their names, `on`, variable
/// definitions and directives), each followed by its selection set.
pub fn string_values(doc: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut strings = Vec::new();
    let mut i = 0;
    let mut first = true;
    // Open `{`, `(` and `[`, innermost last.
    let mut open: Vec<u8> = Vec::new();
    // At top level: a definition header is waiting for its `{`.
    let mut header = false;
    while i < doc.len() {
        let b = doc[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            b'#' => {
                while i < doc.len() && doc[i] != b'\n' && doc[i] != b'\r' {
                    i += 1;
                }
            }
            b'{' | b'(' | b'[' => {
                if first && b != b'{' {
                    return None;
                }
                if b == b'{' && open.is_empty() {
                    header = false;
                }
                first = false;
                open.push(b);
                i += 1;
            }
            b'}' | b')' | b']' => {
                let opener = match b {
                    b'}' => b'{',
                    b')' => b'(',
                    _ => b'[',
                };
                if open.pop() != Some(opener) {
                    return None;
                }
                i += 1;
            }
            b'$' => {
                if !doc
                    .get(i + 1)
                    .is_some_and(|c| *c == b'_' || c.is_ascii_alphabetic())
                {
                    return None;
                }
                i += 1;
            }
            b'!' | b':' | b'=' | b'@' => {
                // Outside braces only a header's directives (`@name`).
                if first || (open.is_empty() && (b != b'@' || !header)) {
                    return None;
                }
                i += 1;
            }
            b'.' => {
                if !doc[i..].starts_with(b"...") || open.is_empty() {
                    return None;
                }
                i += 3;
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                let start = i;
                while i < doc.len() && (doc[i] == b'_' || doc[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                let keyword = matches!(
                    &doc[start..i],
                    b"query" | b"mutation" | b"subscription" | b"fragment"
                );
                if open.is_empty() {
                    // Outside braces: a keyword opens a header; other
                    // names only inside one (operation and type names).
                    if keyword && !header {
                        header = true;
                    } else if !header {
                        return None;
                    }
                }
                first = false;
            }
            b'-' | b'0'..=b'9' => {
                if open.is_empty() {
                    return None;
                }
                i += 1;
                while i < doc.len()
                    && (doc[i].is_ascii_digit()
                        || matches!(doc[i], b'.' | b'e' | b'E' | b'+' | b'-'))
                {
                    i += 1;
                }
                // A number runs straight into a name or a string: not GraphQL.
                if doc
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_' || *c == b'"')
                {
                    return None;
                }
            }
            b'"' => {
                if open.is_empty() {
                    return None;
                }
                let (s, next) = if doc[i..].starts_with(b"\"\"\"") {
                    block_string(doc, i + 3)?
                } else {
                    string(doc, i + 1)?
                };
                strings.push(s);
                i = next;
            }
            _ => return None,
        }
    }
    (!first && open.is_empty() && !header).then_some(strings)
}

/// A `"..."` string starting after its quote: (contents, index after it).
fn string(doc: &[u8], mut i: usize) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    while i < doc.len() {
        match doc[i] {
            b'"' => return Some((out, i + 1)),
            b'\n' | b'\r' => return None,
            b'\\' => {
                let e = *doc.get(i + 1)?;
                match e {
                    b'"' | b'\\' | b'/' => out.push(e),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'u' => {
                        let hex = std::str::from_utf8(doc.get(i + 2..i + 6)?).ok()?;
                        let c = u32::from_str_radix(hex, 16).ok()?;
                        let c = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i += 4;
                    }
                    _ => return None,
                }
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

/// A `"""..."""` block string starting after its quotes.
fn block_string(doc: &[u8], mut i: usize) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    while i < doc.len() {
        if doc[i..].starts_with(b"\\\"\"\"") {
            out.extend_from_slice(b"\"\"\"");
            i += 4;
        } else if doc[i..].starts_with(b"\"\"\"") {
            return Some((out, i + 3));
        } else {
            out.push(doc[i]);
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(doc: &str) -> Option<Vec<String>> {
        string_values(doc.as_bytes()).map(|v| {
            v.into_iter()
                .map(|s| String::from_utf8(s).unwrap())
                .collect()
        })
    }

    #[test]
    fn documents_yield_their_strings() {
        assert_eq!(
            strings("query Search($term: String!) { search(term: $term, first: 10) { ... on Product { id name } } }"),
            Some(vec![])
        );
        assert_eq!(
            strings(r#"{ user(name: "O'Brien \"x\"", n: -1.5e3) { id } } # note"#),
            Some(vec![r#"O'Brien "x""#.to_string()])
        );
        assert_eq!(
            strings("mutation { a(b: \"\"\"multi\nline \\\"\"\" q\"\"\") }"),
            Some(vec!["multi\nline \"\"\" q".to_string()])
        );
        assert_eq!(
            strings(r#"{ a(s: "\u0027 or 1=1") }"#),
            Some(vec!["' or 1=1".to_string()])
        );
    }

    #[test]
    fn anything_else_is_not_graphql() {
        for v in [
            "",
            "hello world",
            "select * from users",
            "1 union select 1",
            "{ a } ; cat /etc/passwd",
            "{ a(s: \"open) }",
            "query { a } `id`",
            "query { a } <script>",
            "' or 1=1 --",
            "{ a } %27",
            "{ a } \\",
            "query $(id)",
            "query { a } | id",
            "query { a } & id",
            "query { a }\nid",
            "query { a",
            "query { a ) }",
            "mutation union select password from users",
        ] {
            assert_eq!(strings(v), None, "{v:?}");
        }
    }
}
