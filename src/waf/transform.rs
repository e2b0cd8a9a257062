//! Transformations applied to a target's value before a rule's operator
//! sees it (SecLang's `t:` actions): decoding that attackers use to hide a
//! payload, and normalizations that make one pattern cover many spellings.
//! Each is a pure function of bytes; a rule applies its chain in order.

use std::borrow::Cow;

/// One transformation, by its rule-file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transform {
    /// `%XX` and IIS-style `%uXXXX`, and `+` as a space.
    UrlDecode,
    /// `&lt;`, `&#60;`, `&#x3c;` and the common named entities.
    HtmlEntityDecode,
    Lowercase,
    RemoveNulls,
    /// Runs of whitespace become one space.
    CompressWhitespace,
    RemoveWhitespace,
    /// Resolves `.`/`..` segments and runs of `/` (and `\` as `/`).
    NormalizePath,
    /// Decodes the value as base64 when it is base64 (else keeps it).
    Base64Decode,
    /// `\xHH`, `\uHHHH`, `\OOO` and the one-letter escapes of JavaScript.
    JsDecode,
    /// CSS escapes `\HH..` (1-6 hex digits).
    CssDecode,
    /// Like ModSecurity's `cmdLine`: deletes `\ " ' ^`, turns `,` and `;`
    /// into spaces, compresses whitespace, lowercases, and removes spaces
    /// before `/` and `(`.
    CmdLine,
    /// Like `NormalizePath` but a backslash is an ordinary byte (SecLang's
    /// `normalizePath`; `normalizePathWin` is `NormalizePath`).
    NormalizePathPosix,
    /// Non-ASCII UTF-8 characters become `%uHHHH` (SecLang's `utf8toUnicode`).
    Utf8ToUnicode,
    /// C comments `/* ... */` become one space; an unterminated one runs to
    /// the end (SecLang's `replaceComments`).
    ReplaceComments,
    /// Each byte as two lower-case hex digits.
    HexEncode,
    /// The value's length in bytes, as decimal text.
    Length,
    /// The SHA-1 digest's 20 raw bytes.
    Sha1,
    /// ANSI C escapes: `\n`, `\t`, ..., `\xHH`, `\OOO` (SecLang's
    /// `escapeSeqDecode`).
    EscapeSeqDecode,
    /// Leading and trailing whitespace removed.
    Trim,
    TrimLeft,
    TrimRight,
    /// `0x414243` hex literals as their bytes (SecLang's `sqlHexDecode`).
    SqlHexDecode,
    /// The whole value as hex digits, decoded (SecLang's `hexDecode`).
    HexDecode,
    /// `/* */`, `--` and `#` comments removed (SecLang's `removeComments`).
    RemoveComments,
    /// The comment markers `/*`, `*/`, `--` and `#` removed.
    RemoveCommentsChar,
    Uppercase,
}

impl Transform {
    pub fn parse(name: &str) -> Option<Transform> {
        Some(match name {
            "url_decode" | "url_decode_uni" => Transform::UrlDecode,
            "html_entity_decode" => Transform::HtmlEntityDecode,
            "lowercase" => Transform::Lowercase,
            "remove_nulls" => Transform::RemoveNulls,
            "compress_whitespace" => Transform::CompressWhitespace,
            "remove_whitespace" => Transform::RemoveWhitespace,
            "normalize_path" => Transform::NormalizePath,
            "base64_decode" => Transform::Base64Decode,
            "js_decode" => Transform::JsDecode,
            "css_decode" => Transform::CssDecode,
            "cmdline" => Transform::CmdLine,
            "normalize_path_posix" => Transform::NormalizePathPosix,
            "utf8_to_unicode" => Transform::Utf8ToUnicode,
            "replace_comments" => Transform::ReplaceComments,
            "hex_encode" => Transform::HexEncode,
            "length" => Transform::Length,
            "sha1" => Transform::Sha1,
            "escape_seq_decode" => Transform::EscapeSeqDecode,
            "trim" => Transform::Trim,
            "trim_left" => Transform::TrimLeft,
            "trim_right" => Transform::TrimRight,
            "sql_hex_decode" => Transform::SqlHexDecode,
            "hex_decode" => Transform::HexDecode,
            "remove_comments" => Transform::RemoveComments,
            "remove_comments_char" => Transform::RemoveCommentsChar,
            "uppercase" => Transform::Uppercase,
            _ => return None,
        })
    }

    /// Every transform (for tests that try them all).
    pub const ALL: [Transform; 26] = [
        Transform::UrlDecode,
        Transform::HtmlEntityDecode,
        Transform::Lowercase,
        Transform::RemoveNulls,
        Transform::CompressWhitespace,
        Transform::RemoveWhitespace,
        Transform::NormalizePath,
        Transform::Base64Decode,
        Transform::JsDecode,
        Transform::CssDecode,
        Transform::CmdLine,
        Transform::NormalizePathPosix,
        Transform::Utf8ToUnicode,
        Transform::ReplaceComments,
        Transform::HexEncode,
        Transform::Length,
        Transform::Sha1,
        Transform::EscapeSeqDecode,
        Transform::Trim,
        Transform::TrimLeft,
        Transform::TrimRight,
        Transform::SqlHexDecode,
        Transform::HexDecode,
        Transform::RemoveComments,
        Transform::RemoveCommentsChar,
        Transform::Uppercase,
    ];

    pub const NAMES: &'static str = "url_decode, url_decode_uni, html_entity_decode, lowercase, remove_nulls, compress_whitespace, remove_whitespace, normalize_path, base64_decode, js_decode, css_decode, cmdline, normalize_path_posix, utf8_to_unicode, replace_comments, hex_encode, length, sha1, escape_seq_decode, trim, trim_left, trim_right, sql_hex_decode, hex_decode, remove_comments, remove_comments_char, uppercase";

    pub fn apply<'a>(self, v: Cow<'a, [u8]>) -> Cow<'a, [u8]> {
        match self {
            Transform::UrlDecode => url_decode(v),
            Transform::HtmlEntityDecode => html_entity_decode(v),
            Transform::Lowercase => {
                if v.iter().any(u8::is_ascii_uppercase) {
                    Cow::Owned(v.to_ascii_lowercase())
                } else {
                    v
                }
            }
            Transform::RemoveNulls => {
                if v.contains(&0) {
                    Cow::Owned(v.iter().copied().filter(|b| *b != 0).collect())
                } else {
                    v
                }
            }
            Transform::CompressWhitespace => compress_whitespace(v),
            Transform::RemoveWhitespace => {
                if v.iter().any(u8::is_ascii_whitespace) {
                    Cow::Owned(
                        v.iter()
                            .copied()
                            .filter(|b| !b.is_ascii_whitespace())
                            .collect(),
                    )
                } else {
                    v
                }
            }
            Transform::NormalizePath => normalize_path(v),
            Transform::Base64Decode => base64_decode(v),
            Transform::JsDecode => js_decode(v),
            Transform::CssDecode => css_decode(v),
            Transform::CmdLine => cmdline(v),
            Transform::NormalizePathPosix => normalize_path_with(v, false),
            Transform::Utf8ToUnicode => utf8_to_unicode(v),
            Transform::ReplaceComments => replace_comments(v),
            Transform::HexEncode => Cow::Owned(hex::encode(&v[..]).into_bytes()),
            Transform::Length => Cow::Owned(v.len().to_string().into_bytes()),
            Transform::Sha1 => {
                use sha1::Digest;
                Cow::Owned(sha1::Sha1::digest(&v[..]).to_vec())
            }
            Transform::EscapeSeqDecode => escape_seq_decode(v),
            Transform::Trim => trimmed(v, true, true),
            Transform::TrimLeft => trimmed(v, true, false),
            Transform::TrimRight => trimmed(v, false, true),
            Transform::SqlHexDecode => sql_hex_decode(v),
            Transform::HexDecode => match hex::decode(v.trim_ascii()) {
                Ok(b) => Cow::Owned(b),
                Err(_) => v,
            },
            Transform::RemoveComments => remove_comments(v, false),
            Transform::RemoveCommentsChar => remove_comments(v, true),
            Transform::Uppercase => {
                if v.iter().any(u8::is_ascii_lowercase) {
                    Cow::Owned(v.to_ascii_uppercase())
                } else {
                    v
                }
            }
        }
    }
}

/// Which kinds of byte a value holds that some transform acts on. One pass
/// over a value tells which transforms of a chain would leave it as it is
/// (most values of clean traffic: no `%`, no `&`, no backslash, no NUL), so the
/// engine skips them without each one scanning the value again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary(u16);

const HAS_PCT_PLUS: u16 = 1;
const HAS_AMP: u16 = 1 << 1;
const HAS_BACKSLASH: u16 = 1 << 2;
const HAS_UPPER: u16 = 1 << 3;
const HAS_NUL: u16 = 1 << 4;
const HAS_SPACE: u16 = 1 << 5;
const HAS_SLASH_DOT: u16 = 1 << 6;
/// A byte `cmdline` would change or drop (outside `a-z0-9-_.@:=+`).
const HAS_CMD: u16 = 1 << 7;
/// A byte outside ASCII.
const HAS_HIGH: u16 = 1 << 8;

const fn byte_flags(b: u8) -> u16 {
    let mut f = 0;
    if b == b'%' || b == b'+' {
        f |= HAS_PCT_PLUS;
    }
    if b == b'&' {
        f |= HAS_AMP;
    }
    if b == b'\\' {
        f |= HAS_BACKSLASH;
    }
    if b.is_ascii_uppercase() {
        f |= HAS_UPPER;
    }
    if b == 0 {
        f |= HAS_NUL;
    }
    if b.is_ascii_whitespace() {
        f |= HAS_SPACE;
    }
    if b == b'/' || b == b'.' {
        f |= HAS_SLASH_DOT;
    }
    let plain = b.is_ascii_lowercase()
        || b.is_ascii_digit()
        || matches!(b, b'-' | b'_' | b'.' | b'@' | b':' | b'=' | b'+');
    if !plain {
        f |= HAS_CMD;
    }
    if b >= 0x80 {
        f |= HAS_HIGH;
    }
    f
}

static FLAGS: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = byte_flags(i as u8);
        i += 1;
    }
    t
};

impl Summary {
    pub fn of(v: &[u8]) -> Summary {
        Summary(v.iter().fold(0, |acc, b| acc | FLAGS[usize::from(*b)]))
    }
}

impl Transform {
    /// Whether the transform certainly leaves a value with this summary
    /// unchanged (`false` means it may change it: apply it to find out).
    pub fn leaves_unchanged(self, s: Summary) -> bool {
        self.reacts_to().is_some_and(|needs| s.0 & needs == 0)
    }

    /// The summary bits without which the transform changes nothing;
    /// `None` when it may change any value.
    fn reacts_to(self) -> Option<u16> {
        Some(match self {
            Transform::UrlDecode => HAS_PCT_PLUS,
            Transform::HtmlEntityDecode => HAS_AMP,
            Transform::Lowercase => HAS_UPPER,
            Transform::RemoveNulls => HAS_NUL,
            Transform::CompressWhitespace | Transform::RemoveWhitespace => HAS_SPACE,
            Transform::NormalizePath => HAS_BACKSLASH | HAS_SLASH_DOT,
            Transform::NormalizePathPosix | Transform::ReplaceComments => HAS_SLASH_DOT,
            Transform::Utf8ToUnicode => HAS_HIGH,
            Transform::JsDecode | Transform::CssDecode => HAS_BACKSLASH,
            Transform::CmdLine => HAS_CMD,
            Transform::EscapeSeqDecode => HAS_BACKSLASH,
            Transform::Trim | Transform::TrimLeft | Transform::TrimRight => HAS_SPACE,
            Transform::Base64Decode
            | Transform::SqlHexDecode
            | Transform::HexDecode
            | Transform::RemoveComments
            | Transform::RemoveCommentsChar
            | Transform::Uppercase
            | Transform::HexEncode
            | Transform::Length
            | Transform::Sha1 => return None,
        })
    }
}

/// What a whole chain reacts to: a value whose summary has none of these
/// bits passes every step unchanged (no step changes it, so each sees the
/// same summary). `None` when some step may change any value.
#[derive(Debug, Clone, Copy)]
pub struct ChainReacts(Option<u16>);

impl ChainReacts {
    pub fn of(chain: &[Transform]) -> ChainReacts {
        ChainReacts(
            chain
                .iter()
                .try_fold(0, |acc, t| t.reacts_to().map(|r| acc | r)),
        )
    }

    /// Whether the chain certainly leaves a value with this summary as it is.
    pub fn leaves_unchanged(self, s: Summary) -> bool {
        self.0.is_some_and(|needs| s.0 & needs == 0)
    }
}

/// Applies a chain in order.
pub fn apply_all<'a>(chain: &[Transform], v: &'a [u8]) -> Cow<'a, [u8]> {
    chain.iter().fold(Cow::Borrowed(v), |acc, t| t.apply(acc))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_char(out: &mut Vec<u8>, c: u32) {
    match char::from_u32(c) {
        Some(ch) => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
        None => out.push(b'?'),
    }
}

fn url_decode(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if !v.iter().any(|b| *b == b'%' || *b == b'+') {
        return v;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 6 <= v.len() && (v[i + 1] == b'u' || v[i + 1] == b'U') => {
                let digits = (hex(v[i + 2]), hex(v[i + 3]), hex(v[i + 4]), hex(v[i + 5]));
                if let (Some(a), Some(b), Some(c), Some(d)) = digits {
                    let cp = (u32::from(a) << 12)
                        | (u32::from(b) << 8)
                        | (u32::from(c) << 4)
                        | u32::from(d);
                    // Full-width ASCII (U+FF01..FF5E) maps to ASCII, as IIS does.
                    let cp = if (0xff01..=0xff5e).contains(&cp) {
                        cp - 0xfee0
                    } else {
                        cp
                    };
                    push_char(&mut out, cp);
                    i += 6;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            b'%' => {
                match (
                    v.get(i + 1).and_then(|b| hex(*b)),
                    v.get(i + 2).and_then(|b| hex(*b)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

const NAMED_ENTITIES: &[(&[u8], u8)] = &[
    (b"lt", b'<'),
    (b"gt", b'>'),
    (b"amp", b'&'),
    (b"quot", b'"'),
    (b"apos", b'\''),
    (b"nbsp", b' '),
    (b"colon", b':'),
    (b"sol", b'/'),
    (b"lpar", b'('),
    (b"rpar", b')'),
    (b"tab", b'\t'),
    (b"newline", b'\n'),
];

/// The entity at `v[i]` (an `&`): the code point it stands for and how
/// many bytes it takes, or `None` when no entity starts there.
fn entity_at(v: &[u8], i: usize) -> Option<(u32, usize)> {
    let rest = &v[i + 1..];
    // Numeric: &#60; &#x3c; (the ';' is optional, as browsers accept).
    let (cp, len) = if rest.first() == Some(&b'#') {
        let (radix, start) = match rest.get(1) {
            Some(b'x') | Some(b'X') => (16, 2),
            _ => (10, 1),
        };
        let digits = rest[start..]
            .iter()
            .take_while(|b| {
                if radix == 16 {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .take(8)
            .count();
        if digits == 0 {
            return None;
        }
        let text = std::str::from_utf8(&rest[start..start + digits]).ok()?;
        (u32::from_str_radix(text, radix).ok()?, 1 + start + digits)
    } else {
        // Most `&`s separate query arguments: a first letter that starts
        // no entity's name settles it without comparing names.
        let first = rest.first()?.to_ascii_lowercase();
        let (name, ch) = NAMED_ENTITIES.iter().find(|(n, _)| {
            n[0] == first && rest.len() >= n.len() && rest[..n.len()].eq_ignore_ascii_case(n)
        })?;
        (u32::from(*ch), 1 + name.len())
    };
    let len = if v.get(i + len) == Some(&b';') {
        len + 1
    } else {
        len
    };
    Some((cp, len))
}

fn html_entity_decode(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    // Only `&` separators (a query string): the value as it is.
    let Some((first, (cp, len))) = (0..v.len())
        .filter(|&i| v[i] == b'&')
        .find_map(|i| entity_at(&v, i).map(|e| (i, e)))
    else {
        return v;
    };
    let mut out = Vec::with_capacity(v.len());
    out.extend_from_slice(&v[..first]);
    push_char(&mut out, cp);
    let mut i = first + len;
    while i < v.len() {
        if v[i] == b'&' {
            if let Some((cp, len)) = entity_at(&v, i) {
                push_char(&mut out, cp);
                i += len;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn compress_whitespace(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    let needs = v
        .windows(2)
        .any(|w| w[0].is_ascii_whitespace() && w[1].is_ascii_whitespace())
        || v.iter().any(|b| b.is_ascii_whitespace() && *b != b' ');
    if !needs {
        return v;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut in_space = false;
    for &b in v.iter() {
        if b.is_ascii_whitespace() || b == 0x0b {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(b);
            in_space = false;
        }
    }
    Cow::Owned(out)
}

fn normalize_path(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    normalize_path_with(v, true)
}

/// Resolves `.` and `..` segments and runs of `/`; with `backslash`, a `\\`
/// is a separator too.
fn normalize_path_with(v: Cow<'_, [u8]>, backslash: bool) -> Cow<'_, [u8]> {
    let needs = (backslash && v.contains(&b'\\'))
        || v.windows(2).any(|w| w == b"//" || w == b"/.")
        || v.starts_with(b"./")
        || v.starts_with(b"../");
    if !needs {
        return v;
    }
    let text: Vec<u8> = v
        .iter()
        .map(|b| if backslash && *b == b'\\' { b'/' } else { *b })
        .collect();
    let absolute = text.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in text.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if parts.last().is_some_and(|p| *p != b"..") {
                    parts.pop();
                } else if !absolute {
                    // A relative path that climbs stays visible.
                    parts.push(seg);
                }
            }
            s => parts.push(s),
        }
    }
    let mut out = Vec::with_capacity(text.len());
    if absolute {
        out.push(b'/');
    }
    out.extend_from_slice(&parts.join(&b'/'));
    if text.ends_with(b"/") && !out.ends_with(b"/") {
        out.push(b'/');
    }
    Cow::Owned(out)
}

fn utf8_to_unicode(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if v.is_ascii() {
        return v;
    }
    let mut out = Vec::with_capacity(v.len() * 2);
    for chunk in v.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_ascii() {
                out.push(c as u8);
            } else {
                // Characters past the BMP keep their low 16 bits, as
                // ModSecurity does.
                out.extend_from_slice(format!("%u{:04x}", u32::from(c) & 0xffff).as_bytes());
            }
        }
        out.extend_from_slice(chunk.invalid());
    }
    Cow::Owned(out)
}

fn trimmed(v: Cow<'_, [u8]>, left: bool, right: bool) -> Cow<'_, [u8]> {
    let mut t: &[u8] = &v;
    if left {
        t = t.trim_ascii_start();
    }
    if right {
        t = t.trim_ascii_end();
    }
    if t.len() == v.len() {
        v
    } else {
        Cow::Owned(t.to_vec())
    }
}

fn escape_seq_decode(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if !v.contains(&b'\\') {
        return v;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' || i + 1 >= v.len() {
            out.push(v[i]);
            i += 1;
            continue;
        }
        let n = v[i + 1];
        let simple = match n {
            b'a' => Some(7),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' | b'?' | b'\'' | b'"' => Some(n),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
        } else if n == b'x' && v.len() > i + 3 && hex(v[i + 2]).is_some() && hex(v[i + 3]).is_some()
        {
            out.push(hex(v[i + 2]).unwrap_or(0) << 4 | hex(v[i + 3]).unwrap_or(0));
            i += 4;
        } else if (b'0'..=b'7').contains(&n) {
            let mut c: u32 = 0;
            let mut j = i + 1;
            while j < v.len() && j < i + 4 && (b'0'..=b'7').contains(&v[j]) {
                c = c * 8 + u32::from(v[j] - b'0');
                j += 1;
            }
            out.push((c & 0xff) as u8);
            i = j;
        } else {
            // An unknown escape keeps the character, without the backslash.
            out.push(n);
            i += 2;
        }
    }
    Cow::Owned(out)
}

fn sql_hex_decode(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    let lower = v.to_ascii_lowercase();
    if !lower.windows(2).any(|w| w == b"0x") {
        return v;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if lower[i..].starts_with(b"0x") {
            let digits = v[i + 2..].iter().take_while(|b| hex(**b).is_some()).count() & !1;
            if digits >= 2 {
                for pair in v[i + 2..i + 2 + digits].chunks(2) {
                    out.push(hex(pair[0]).unwrap_or(0) << 4 | hex(pair[1]).unwrap_or(0));
                }
                i += 2 + digits;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// `removeComments` (`chars_only`: `removeCommentsChar`).
fn remove_comments(v: Cow<'_, [u8]>, chars_only: bool) -> Cow<'_, [u8]> {
    if !v.iter().any(|b| matches!(b, b'/' | b'*' | b'-' | b'#')) {
        return v;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let rest = &v[i..];
        if chars_only {
            if rest.starts_with(b"/*") || rest.starts_with(b"*/") || rest.starts_with(b"--") {
                i += 2;
            } else if rest[0] == b'#' {
                i += 1;
            } else {
                out.push(rest[0]);
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            i = match rest[2..].windows(2).position(|w| w == b"*/") {
                Some(end) => i + 2 + end + 2,
                None => v.len(),
            };
        } else if rest.starts_with(b"--") || rest[0] == b'#' {
            // To the end of the line.
            i = v[i..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(v.len(), |n| i + n);
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn replace_comments(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if !v.windows(2).any(|w| w == b"/*") {
        return v;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i..].starts_with(b"/*") {
            match v[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(end) => i += 2 + end + 2,
                None => i = v.len(),
            }
            out.push(b' ');
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn base64_decode(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    use base64::Engine;
    let trimmed = v.trim_ascii();
    if trimmed.len() < 8 {
        return v;
    }
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
    ] {
        if let Ok(decoded) = engine.decode(trimmed) {
            return Cow::Owned(decoded);
        }
    }
    v
}

fn js_decode(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if !v.contains(&b'\\') {
        return v;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' || i + 1 >= v.len() {
            out.push(v[i]);
            i += 1;
            continue;
        }
        let n = v[i + 1];
        let hex_at = |from: usize, count: usize| -> Option<u32> {
            let s = v.get(from..from + count)?;
            s.iter()
                .try_fold(0u32, |acc, b| Some(acc << 4 | u32::from(hex(*b)?)))
        };
        match n {
            b'x' => match hex_at(i + 2, 2) {
                Some(c) => {
                    push_char(&mut out, c);
                    i += 4;
                }
                None => {
                    out.push(b'x');
                    i += 2;
                }
            },
            b'u' => match hex_at(i + 2, 4) {
                Some(c) => {
                    push_char(&mut out, c);
                    i += 6;
                }
                None => {
                    out.push(b'u');
                    i += 2;
                }
            },
            b'0'..=b'7' => {
                let digits: Vec<u8> = v[i + 1..]
                    .iter()
                    .take(3)
                    .take_while(|b| (b'0'..=b'7').contains(b))
                    .copied()
                    .collect();
                let c = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                push_char(&mut out, c);
                i += 1 + digits.len();
            }
            b'n' => {
                out.push(b'\n');
                i += 2;
            }
            b'r' => {
                out.push(b'\r');
                i += 2;
            }
            b't' => {
                out.push(b'\t');
                i += 2;
            }
            other => {
                out.push(other);
                i += 2;
            }
        }
    }
    Cow::Owned(out)
}

fn css_decode(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if !v.contains(&b'\\') {
        return v;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' || i + 1 >= v.len() {
            out.push(v[i]);
            i += 1;
            continue;
        }
        let digits: Vec<u8> = v[i + 1..]
            .iter()
            .take(6)
            .take_while(|b| b.is_ascii_hexdigit())
            .copied()
            .collect();
        if digits.is_empty() {
            out.push(v[i + 1]);
            i += 2;
        } else {
            let c = digits
                .iter()
                .fold(0u32, |acc, d| acc << 4 | u32::from(hex(*d).unwrap_or(0)));
            push_char(&mut out, c);
            i += 1 + digits.len();
            // One whitespace after a hex escape belongs to it.
            if v.get(i).is_some_and(u8::is_ascii_whitespace) {
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// Whether [`cmdline`] changes the value: a byte it drops, turns into a
/// space or lowercases, a space after a space, or a space before `/` or
/// `(` (which it drops).
fn cmdline_changes(v: &[u8]) -> bool {
    let mut after_space = false;
    v.iter().any(|&b| {
        let changes = match b {
            b'\\' | b'"' | b'\'' | b'^' | b',' | b';' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => true,
            b' ' | b'/' | b'(' => after_space,
            b => b.is_ascii_uppercase(),
        };
        after_space = b == b' ';
        changes
    })
}

fn cmdline(v: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    // Nothing to undo: keep the value as it is (most values, and URLs).
    if !cmdline_changes(&v) {
        return v;
    }
    Cow::Owned(cmdline_always(&v))
}

/// [`cmdline`]'s work, done whether or not it changes anything.
fn cmdline_always(v: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(v.len());
    let mut in_space = false;
    for &b in v {
        match b {
            b'\\' | b'"' | b'\'' | b'^' => continue,
            b',' | b';' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                if !in_space {
                    out.push(b' ');
                }
                in_space = true;
            }
            b'/' | b'(' => {
                if in_space {
                    out.pop();
                }
                out.push(b);
                in_space = false;
            }
            other => {
                out.push(other.to_ascii_lowercase());
                in_space = false;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The precheck says "changes" exactly when the transform's work
    /// gives other bytes: every string of up to five bytes over the bytes
    /// the transform treats specially.
    #[test]
    fn cmdline_keeps_exactly_the_values_it_would_not_change() {
        let alphabet = b"aZ1 /(,;\\\"'^\t-";
        let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
        let mut checked = 0;
        while let Some(v) = stack.pop() {
            assert_eq!(
                cmdline_changes(&v),
                cmdline_always(&v) != v,
                "{:?}",
                String::from_utf8_lossy(&v)
            );
            checked += 1;
            if v.len() < 5 {
                for &b in alphabet {
                    let mut w = v.clone();
                    w.push(b);
                    stack.push(w);
                }
            }
        }
        assert!(checked > 100_000);
    }

    #[test]
    fn html_entity_decode_keeps_a_query_string_as_it_is() {
        let q = b"/?a=1&b=2&amp=3";
        assert!(matches!(
            html_entity_decode(Cow::Borrowed(&q[..9])),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            html_entity_decode(Cow::Borrowed(q)).as_ref(),
            b"/?a=1&b=2&=3"
        );
    }

    fn t(x: Transform, s: &str) -> String {
        String::from_utf8_lossy(&x.apply(Cow::Borrowed(s.as_bytes()))).into_owned()
    }

    #[test]
    fn seclang_transforms() {
        assert_eq!(t(Transform::EscapeSeqDecode, r"a\nb\x41\101\q"), "a\nbAAq");
        assert_eq!(
            t(Transform::SqlHexDecode, "select 0x414243, 0xZ"),
            "select ABC, 0xZ"
        );
        assert_eq!(t(Transform::HexDecode, "414243"), "ABC");
        assert_eq!(t(Transform::HexDecode, "41zz"), "41zz");
        assert_eq!(t(Transform::Trim, "  a b \t"), "a b");
        assert_eq!(t(Transform::TrimLeft, "  a "), "a ");
        assert_eq!(t(Transform::TrimRight, "  a "), "  a");
        assert_eq!(
            t(Transform::RemoveComments, "1/*x*/OR 1 -- rest\n2"),
            "1OR 1 \n2"
        );
        assert_eq!(t(Transform::RemoveCommentsChar, "1/*x*/OR#1--"), "1xOR1");
        assert_eq!(t(Transform::ReplaceComments, "1/*x*/OR/*y"), "1 OR ");
        assert_eq!(t(Transform::Utf8ToUnicode, "a\u{e9}"), "a%u00e9");
        assert_eq!(
            t(Transform::NormalizePathPosix, "/a/./b/../c\\d"),
            "/a/c\\d"
        );
        assert_eq!(t(Transform::Length, "abcd"), "4");
        assert_eq!(t(Transform::Uppercase, "aB"), "AB");
    }

    #[test]
    fn decoders() {
        assert_eq!(t(Transform::UrlDecode, "%27%20or%201=1+--"), "' or 1=1 --");
        assert_eq!(t(Transform::UrlDecode, "%u003cscript%uff1e"), "<script>");
        assert_eq!(t(Transform::UrlDecode, "100%"), "100%");
        assert_eq!(t(Transform::UrlDecode, "%zz"), "%zz");
        assert_eq!(
            t(
                Transform::HtmlEntityDecode,
                "&lt;img src=x onerror=&#97;&#x6c;ert(1)&gt;"
            ),
            "<img src=x onerror=alert(1)>"
        );
        assert_eq!(
            t(Transform::HtmlEntityDecode, "fish & chips"),
            "fish & chips"
        );
        assert_eq!(t(Transform::JsDecode, "\\x3cscript\\u003e"), "<script>");
        assert_eq!(t(Transform::CssDecode, "\\6a avascript"), "javascript");
        assert_eq!(t(Transform::Base64Decode, "PHNjcmlwdD4="), "<script>");
        assert_eq!(t(Transform::Base64Decode, "hello world!"), "hello world!");
    }

    #[test]
    fn normalizers() {
        assert_eq!(
            t(Transform::NormalizePath, "/a/./b/../../../etc/passwd"),
            "/etc/passwd"
        );
        assert_eq!(
            t(Transform::NormalizePath, "..\\..\\windows\\win.ini"),
            "../../windows/win.ini"
        );
        assert_eq!(
            t(Transform::CmdLine, "C^A\"T /e'tc/pa\\sswd; ID"),
            "cat/etc/passwd id"
        );
        assert_eq!(t(Transform::CompressWhitespace, "a \t\n b"), "a b");
        assert_eq!(t(Transform::RemoveNulls, "a\0b"), "ab");
        assert_eq!(t(Transform::Lowercase, "SeLeCt"), "select");
        let chain = [Transform::UrlDecode, Transform::Lowercase];
        assert_eq!(apply_all(&chain, b"%53ELECT").as_ref(), b"select");
    }

    #[test]
    fn a_step_the_summary_skips_would_change_nothing() {
        let mut values: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for a in 0..=255u8 {
            for b in [b'a', b'/', b'.', b' ', b'\\', b'%', b'&', b'A', 0, b'\t'] {
                values.push(vec![a, b]);
                values.push(vec![b, a, b]);
            }
        }
        for v in [
            "blue shoes",
            "/api/v1/orders",
            "a//b/./c",
            "../x",
            "Mozilla/5.0 (X11)",
            "x  y",
            "a\\x41",
            "&lt;b&gt;",
            "sort=-created_at",
            "aGVsbG8gd29ybGQ=",
        ] {
            values.push(v.as_bytes().to_vec());
        }
        for v in &values {
            let s = Summary::of(v);
            for t in Transform::ALL {
                if t.leaves_unchanged(s) {
                    assert_eq!(
                        t.apply(Cow::Borrowed(v)).as_ref(),
                        v.as_slice(),
                        "{t:?} on {v:?}"
                    );
                }
            }
        }
    }
}
