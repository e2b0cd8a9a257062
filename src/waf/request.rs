//! What the WAF looks at: a request broken into named targets (SecLang's
//! variables) — method, path, query, arguments and their names (from the
//! query and from a form, JSON or multipart body), headers, cookies, the raw
//! body, the client address. Built once per inspected request; every rule
//! reads the same view.
//!
//! The view borrows: from the request header (method, URI, header values),
//! from the routed path and from the body buffer the proxy read. A value is
//! copied only when parsing changes it (a percent-decoded argument, a JSON
//! string, a GraphQL literal). Building it costs a few vectors of pointers,
//! not two allocations per header.

use std::borrow::Cow;
use std::net::IpAddr;

use http::HeaderMap;

/// One named value: `(target name as logged, value)`.
pub type Field<'a> = (Cow<'a, str>, Cow<'a, [u8]>);

/// A request as the rules see it.
#[derive(Debug, Default)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The normalized path (as routed).
    pub path: &'a str,
    /// Path and query as the client sent them.
    pub uri: &'a [u8],
    pub query: &'a [u8],
    /// Query arguments, decoded: (name, value).
    pub query_args: Vec<Field<'a>>,
    /// Body arguments (form fields, JSON leaves, multipart fields).
    pub body_args: Vec<Field<'a>>,
    /// The distinct argument names as the client wrote them (query and body;
    /// for JSON the object keys, not the paths built from them).
    pub arg_names: Vec<Cow<'a, str>>,
    /// Multipart file names.
    pub files: Vec<Field<'a>>,
    /// Each header line of each multipart part, keyed by the part's name.
    pub part_headers: Vec<Field<'a>>,
    /// Headers, names lower-case.
    pub headers: Vec<Field<'a>>,
    pub cookies: Vec<Field<'a>>,
    /// The body as read (at most `max_body` bytes).
    pub body: &'a [u8],
    /// Whether the body could not be parsed as its Content-Type says.
    pub body_malformed: bool,
    pub client_ip: Option<IpAddr>,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub protocol: &'static str,
    /// How many Content-Length fields, and whether Transfer-Encoding is set.
    pub content_length_fields: usize,
    pub transfer_encoding: Option<&'a [u8]>,
}

/// The protocol as CRS's `REQUEST_PROTOCOL` names it.
pub fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// How a body is parsed, by its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Form,
    Json,
    Xml,
    Multipart,
}

impl BodyKind {
    pub fn of(content_type: &str) -> Option<BodyKind> {
        let ct = content_type.to_ascii_lowercase();
        if ct.starts_with("application/x-www-form-urlencoded") {
            Some(BodyKind::Form)
        } else if ct.starts_with("application/json") || ct.contains("+json") {
            Some(BodyKind::Json)
        } else if ct.contains("xml") {
            Some(BodyKind::Xml)
        } else if ct.starts_with("multipart/form-data") {
            Some(BodyKind::Multipart)
        } else {
            None
        }
    }
}

/// How deep a JSON body is walked, and how many leaves are kept.
const JSON_MAX_DEPTH: usize = 32;
const MAX_FIELDS: usize = 1024;

impl<'a> RequestView<'a> {
    pub fn new(
        method: &'a str,
        path: &'a str,
        uri: &'a [u8],
        headers: &'a HeaderMap,
        client_ip: Option<IpAddr>,
    ) -> RequestView<'a> {
        let query = uri
            .iter()
            .position(|b| *b == b'?')
            .map_or(&b""[..], |i| &uri[i + 1..]);
        let mut query_args = parse_urlencoded(query);
        let mut arg_names: Vec<Cow<'a, str>> = Vec::with_capacity(query_args.len());
        for (k, _) in &query_args {
            if !arg_names.contains(k) {
                arg_names.push(k.clone());
            }
        }
        if path.contains("graphql") {
            graphql_strings(&mut query_args, "query");
        }
        let mut view = RequestView {
            method,
            path,
            uri,
            query,
            query_args,
            arg_names,
            client_ip,
            protocol: "HTTP/1.1",
            headers: Vec::with_capacity(headers.len().min(MAX_FIELDS)),
            ..RequestView::default()
        };
        for (name, value) in headers.iter().take(MAX_FIELDS) {
            view.headers.push((
                Cow::Borrowed(name.as_str()),
                Cow::Borrowed(value.as_bytes()),
            ));
        }
        view.content_length_fields = headers.get_all(http::header::CONTENT_LENGTH).iter().count();
        view.transfer_encoding = headers
            .get(http::header::TRANSFER_ENCODING)
            .map(|v| v.as_bytes());
        for cookie_header in headers.get_all(http::header::COOKIE) {
            for pair in cookie_header.as_bytes().split(|b| *b == b';') {
                let pair = pair.trim_ascii();
                if pair.is_empty() {
                    continue;
                }
                let (name, value) = match pair.iter().position(|b| *b == b'=') {
                    Some(i) => (&pair[..i], &pair[i + 1..]),
                    None => (pair, &b""[..]),
                };
                view.cookies.push((text(name), Cow::Borrowed(value)));
            }
        }
        view
    }

    /// Adds the body: parsed by Content-Type into arguments, and kept raw.
    /// The arguments borrow from `body` wherever parsing leaves them as
    /// they are.
    pub fn set_body(&mut self, content_type: Option<&[u8]>, body: &'a [u8]) {
        let original = content_type
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default();
        let mut keys = Vec::new();
        match BodyKind::of(&original) {
            Some(BodyKind::Form) => self.body_args = parse_urlencoded(body),
            Some(BodyKind::Json) => match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(v) => flatten_json(&v, String::from("json"), 0, &mut self.body_args, &mut keys),
                Err(_) => self.body_malformed = true,
            },
            Some(BodyKind::Xml) => xml_values(body, &mut self.body_args),
            // The boundary is case-sensitive: read it from the original.
            Some(BodyKind::Multipart) => match boundary(&original) {
                Some(b) => {
                    let out = Multipart {
                        args: &mut self.body_args,
                        files: &mut self.files,
                        headers: &mut self.part_headers,
                    };
                    if !parse_multipart(body, b.as_bytes(), out) {
                        self.body_malformed = true;
                    }
                }
                None => self.body_malformed = true,
            },
            None => {}
        }
        if keys.is_empty() {
            keys = self.body_args.iter().map(|(k, _)| k.clone()).collect();
        }
        // A GraphQL request's document is inspected as its strings.
        graphql_strings(&mut self.body_args, "json.query");
        for k in keys {
            if self.arg_names.len() < MAX_FIELDS && !self.arg_names.contains(&k) {
                self.arg_names.push(k);
            }
        }
        self.body = body;
    }

    /// The URI up to its `?` (as sent: not decoded, not normalized).
    pub fn uri_path(&self) -> &'a [u8] {
        let end = self
            .uri
            .iter()
            .position(|b| *b == b'?')
            .unwrap_or(self.uri.len());
        &self.uri[..end]
    }

    /// Every argument (query, then body).
    pub fn args(&self) -> impl Iterator<Item = &Field<'a>> {
        self.query_args.iter().chain(self.body_args.iter())
    }
}

/// Replaces the field `key`, when it holds a GraphQL document, by one
/// field per string literal of the document (see [`super::graphql`]).
fn graphql_strings(fields: &mut Vec<Field<'_>>, key: &str) {
    let Some(i) = fields.iter().position(|(k, _)| k == key) else {
        return;
    };
    let Some(strings) = super::graphql::string_values(&fields[i].1) else {
        return;
    };
    let name = fields[i].0.clone();
    fields.remove(i);
    for (n, s) in strings.into_iter().enumerate() {
        fields.insert(i + n, (name.clone(), Cow::Owned(s)));
    }
}

/// `a=1&b=x%20y` as its fields. Values keep the bytes the client encoded
/// (a `%C0%AE` stays those two bytes, not a replacement character: rules
/// that look for overlong or invalid UTF-8 must see it); names are text,
/// as they are logged. A name or value that decoding leaves as it is
/// borrows from `bytes`.
fn parse_urlencoded(bytes: &[u8]) -> Vec<Field<'_>> {
    bytes
        .split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .take(MAX_FIELDS)
        .map(|pair| {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let name = match form_decode(name) {
                Cow::Borrowed(n) => text(n),
                Cow::Owned(n) => Cow::Owned(
                    String::from_utf8(n)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                ),
            };
            (name, form_decode(value))
        })
        .collect()
}

/// One `application/x-www-form-urlencoded` component: `+` is a space,
/// then percent-decoding (an escape never spans a `+`, so each piece
/// between them decodes on its own). One copy, sized once.
fn form_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.iter().any(|b| matches!(b, b'+' | b'%')) {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, piece) in raw.split(|b| *b == b'+').enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend(percent_encoding::percent_decode(piece));
    }
    Cow::Owned(out)
}

/// Bytes as text for a name: borrowed when valid UTF-8 (checked by the
/// fast validator, not the lossy one), else with replacement characters.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    std::str::from_utf8(bytes).map_or_else(|_| String::from_utf8_lossy(bytes), Cow::Borrowed)
}

fn flatten_json(
    v: &serde_json::Value,
    path: String,
    depth: usize,
    out: &mut Vec<Field<'_>>,
    keys: &mut Vec<Cow<'_, str>>,
) {
    if out.len() >= MAX_FIELDS || depth > JSON_MAX_DEPTH {
        return;
    }
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                // The key itself is attacker input too: args_names sees it.
                if keys.len() < MAX_FIELDS && !keys.iter().any(|c| c == k) {
                    keys.push(Cow::Owned(k.clone()));
                }
                flatten_json(child, format!("{path}.{k}"), depth + 1, out, keys);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                flatten_json(child, format!("{path}[{i}]"), depth + 1, out, keys);
            }
        }
        serde_json::Value::String(s) => {
            out.push((Cow::Owned(path), Cow::Owned(s.clone().into_bytes())))
        }
        // Numbers, booleans and null cannot carry a payload; skip them.
        _ => {}
    }
}

/// Attribute values and text of an XML body, as arguments (`xml:NAME`
/// for an attribute, `xml` for text). Entities are left for the rules'
/// `html_entity_decode`.
fn xml_values<'a>(body: &'a [u8], out: &mut Vec<Field<'a>>) {
    let mut i = 0;
    while i < body.len() && out.len() < MAX_FIELDS {
        if body[i] == b'<' {
            let end = body[i..]
                .iter()
                .position(|b| *b == b'>')
                .map_or(body.len(), |e| i + e);
            let tag = &body[i + 1..end];
            // Attributes: name="value" or name='value'.
            let mut j = 0;
            while j < tag.len() {
                if tag[j] == b'=' {
                    let name_end = j;
                    let name_start = tag[..name_end]
                        .iter()
                        .rposition(|b| b.is_ascii_whitespace())
                        .map_or(0, |p| p + 1);
                    let mut k = j + 1;
                    while k < tag.len() && tag[k].is_ascii_whitespace() {
                        k += 1;
                    }
                    if let Some(&q) = tag.get(k).filter(|q| **q == b'"' || **q == b'\'') {
                        let vstart = k + 1;
                        let vend = tag[vstart..]
                            .iter()
                            .position(|b| *b == q)
                            .map_or(tag.len(), |e| vstart + e);
                        let name = String::from_utf8_lossy(&tag[name_start..name_end]);
                        out.push((
                            Cow::Owned(format!("xml:{}", name.trim())),
                            Cow::Borrowed(&tag[vstart..vend]),
                        ));
                        j = vend + 1;
                        continue;
                    }
                }
                j += 1;
            }
            i = end + 1;
        } else {
            let end = body[i..]
                .iter()
                .position(|b| *b == b'<')
                .map_or(body.len(), |e| i + e);
            let text = body[i..end].trim_ascii();
            if !text.is_empty() {
                out.push((Cow::Borrowed("xml"), Cow::Borrowed(text)));
            }
            i = end;
        }
    }
}

fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let p = p.trim();
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then_some(v)
            .map(|b| b.trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// A small multipart/form-data reader (RFC 7578): fields become arguments,
/// file names go to `files`, file contents are not inspected as text
/// arguments. Returns false when the framing is broken.
/// Where a multipart body's fields go.
struct Multipart<'o, 'a> {
    args: &'o mut Vec<Field<'a>>,
    files: &'o mut Vec<Field<'a>>,
    headers: &'o mut Vec<Field<'a>>,
}

fn parse_multipart<'a>(body: &'a [u8], boundary: &[u8], out: Multipart<'_, 'a>) -> bool {
    let Multipart {
        args,
        files,
        headers,
    } = out;
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let mut parts = split_on(body, &delim);
    // Before the first delimiter: preamble (ignored).
    if parts.next().is_none() {
        return false;
    }
    let mut saw_end = false;
    for part in parts {
        if part.starts_with(b"--") {
            saw_end = true;
            break;
        }
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(split) = find(part, b"\r\n\r\n") else {
            return false;
        };
        let (head, content) = (&part[..split], &part[split + 4..]);
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let head = String::from_utf8_lossy(head);
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .unwrap_or("");
        // Parameters split on `;` outside quotes: `name="a;b"` is one.
        let params = split_params(disposition);
        let param = |key: &str| {
            params.iter().find_map(|p| {
                let (k, v) = p.split_once('=')?;
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                (k.trim().eq_ignore_ascii_case(key)).then(|| v.to_string())
            })
        };
        let name = param("name").unwrap_or_default();
        for line in head.lines().filter(|l| !l.trim().is_empty()) {
            if headers.len() < MAX_FIELDS {
                headers.push((
                    Cow::Owned(name.clone()),
                    Cow::Owned(line.as_bytes().to_vec()),
                ));
            }
        }
        match param("filename") {
            Some(f) => files.push((Cow::Owned(name), Cow::Owned(f.into_bytes()))),
            None => {
                if args.len() < MAX_FIELDS {
                    args.push((Cow::Owned(name), Cow::Borrowed(content)));
                }
            }
        }
    }
    saw_end
}

/// `form-data; name="a;b"; filename=x` as its parameters.
fn split_params(header: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in header.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(header[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(header[start..].trim());
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split_on<'a, 'd>(
    hay: &'a [u8],
    delim: &'d [u8],
) -> impl Iterator<Item = &'a [u8]> + use<'a, 'd> {
    let mut rest = Some(hay);
    std::iter::from_fn(move || {
        let r = rest?;
        match find(r, delim) {
            Some(i) => {
                rest = Some(&r[i + delim.len()..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_cookies_and_bodies_become_fields() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; session=x%27".parse().unwrap());
        let field = |k: &'static str, v: &'static [u8]| (Cow::from(k), Cow::from(v));
        let mut v = RequestView::new("POST", "/p", b"/p?q=select%20x&b=2", &h, None);
        assert_eq!(v.query_args[0], field("q", b"select x"));
        assert_eq!(v.cookies[1], field("session", b"x%27"));
        // Values that parsing leaves as they are borrow from the request;
        // a decoded one is a copy.
        assert!(matches!(v.query_args[1].1, Cow::Borrowed(b"2")));
        assert!(matches!(v.query_args[0].1, Cow::Owned(_)));
        assert!(matches!(v.cookies[1].1, Cow::Borrowed(_)));
        assert!(matches!(
            v.headers[0],
            (Cow::Borrowed("cookie"), Cow::Borrowed(_))
        ));
        v.set_body(
            Some(b"application/json"),
            br#"{"user": {"name": "bob", "tags": ["a", "<b>"]}, "n": 3}"#,
        );
        let names: Vec<&str> = v.body_args.iter().map(|(k, _)| &**k).collect();
        assert_eq!(
            names,
            ["json.user.name", "json.user.tags[0]", "json.user.tags[1]"]
        );
        v.set_body(Some(b"application/json"), b"{not json");
        assert!(v.body_malformed);

        let none = HeaderMap::new();
        let mut x = RequestView::new("POST", "/x", b"/x", &none, None);
        x.set_body(
            Some(b"application/xml"),
            br#"<?xml version="1.0"?><root><a probe='../x' n="2">text &lt;b&gt;</a></root>"#,
        );
        let vals: Vec<(&str, &[u8])> = x.body_args.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            vals,
            [
                ("xml:version", &b"1.0"[..]),
                ("xml:probe", b"../x"),
                ("xml:n", b"2"),
                ("xml", b"text &lt;b&gt;")
            ]
        );

        let mut m = RequestView::new("POST", "/u", b"/u", &none, None);
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"../../x.php\"\r\nContent-Type: text/plain\r\n\r\n<?php ?>\r\n--XyZ--\r\n";
        m.set_body(Some(b"multipart/form-data; boundary=XyZ"), body);
        assert!(!m.body_malformed);
        assert_eq!(m.body_args, vec![field("title", b"hello")]);
        assert_eq!(m.files, vec![field("f", b"../../x.php")]);
    }
}
