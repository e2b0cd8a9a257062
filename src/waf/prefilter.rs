//! Bytes a pattern cannot match without.
//!
//! Most values of API traffic are plain: page numbers, ids, slugs, sort
//! keys. Nearly every attack pattern needs some byte such values lack (a
//! quote, a bracket, a space, a slash). From a pattern's syntax tree we
//! compute a set of bytes of which every match holds at least one; a value
//! (as the group's chain leaves it) holding none of a group's bytes cannot
//! match any regex of the group, and the group's set is not run on it.
//! Exact by construction: the set is derived from the pattern's structure
//! (a concatenation needs what any one part needs, an alternation what
//! each branch needs), never guessed; where the structure guarantees
//! nothing (a pattern that can match the empty string), there is no set
//! and the regexes always run.

use regex_syntax::hir::{Class, Hir, HirKind};

/// A set of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    pub fn of(v: &[u8]) -> ByteSet {
        let mut s = ByteSet::default();
        for &b in v {
            s.insert(b);
        }
        s
    }

    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    pub fn union(self, o: ByteSet) -> ByteSet {
        let mut s = self;
        for (a, b) in s.0.iter_mut().zip(o.0) {
            *a |= b;
        }
        s
    }

    pub fn intersects(&self, o: &ByteSet) -> bool {
        self.0.iter().zip(o.0).any(|(a, b)| a & b != 0)
    }

    /// How likely ordinary values are to hold one of these bytes (the
    /// smaller, the better the set rejects): letters and digits are in
    /// most values, URL punctuation in many, the rest in few.
    fn commonness(&self) -> u32 {
        (0..=255u8)
            .filter(|b| self.contains(*b))
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => 16,
                b' ' | b'-' | b'_' | b'.' | b'/' | b'=' | b'&' | b'?' | b':' | b'+' | b',' => 6,
                _ => 1,
            })
            .sum()
    }
}

/// The bytes every match of `pattern` (the engine's syntax: bytes, no
/// Unicode) holds at least one of; `None` when the pattern guarantees none
/// (or does not parse, which the regex compiler reports).
pub fn needed_bytes(pattern: &str) -> Option<ByteSet> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    needed(&hir)
}

fn needed(hir: &Hir) -> Option<ByteSet> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => None,
        // Any one byte of a literal is needed: the least common says most.
        HirKind::Literal(lit) => lit
            .0
            .iter()
            .map(|b| ByteSet::of(&[*b]))
            .min_by_key(ByteSet::commonness),
        HirKind::Class(Class::Bytes(c)) => {
            let mut s = ByteSet::default();
            for r in c.ranges() {
                for b in r.start()..=r.end() {
                    s.insert(b);
                }
            }
            Some(s)
        }
        // Not produced without Unicode mode; nothing is assumed of it.
        HirKind::Class(Class::Unicode(_)) => None,
        HirKind::Repetition(r) if r.min == 0 => None,
        HirKind::Repetition(r) => needed(&r.sub),
        HirKind::Capture(c) => needed(&c.sub),
        HirKind::Concat(parts) => parts
            .iter()
            .filter_map(needed)
            .min_by_key(ByteSet::commonness),
        HirKind::Alternation(branches) => branches
            .iter()
            .map(needed)
            .try_fold(ByteSet::default(), |acc, s| s.map(|s| acc.union(s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenations_need_their_rarest_part_and_alternations_every_branch() {
        let s = needed_bytes(r"union\s+select").unwrap();
        assert!(s.contains(b' ') && s.contains(b'\t'), "the \\s is rarest");
        assert!(!s.contains(b'u'));
        let s = needed_bytes(r"(?:<script|javascript:)").unwrap();
        assert!(s.contains(b'<') && s.contains(b':'));
        assert_eq!(needed_bytes(r"a*"), None, "matches the empty string");
        assert_eq!(
            needed_bytes(r"\bfoo\b|x?"),
            None,
            "one branch needs nothing"
        );
        let s = needed_bytes(r"(?i)select").unwrap();
        assert!(s.contains(b'S') || s.contains(b'E') || s.contains(b'L'));
    }

    /// Whatever the value: when it holds none of the needed bytes, the
    /// pattern does not match it. Every shipped pattern, on values built
    /// from its own literal bytes and a few others.
    #[test]
    fn a_value_without_the_needed_bytes_never_matches() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
        let mut patterns = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_none_or(|x| x != "toml") {
                continue;
            }
            let doc: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            for r in doc
                .get("rule")
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
            {
                if r["operator"].as_str() == Some("regex") {
                    patterns.push(r["value"].as_str().unwrap().to_string());
                }
            }
        }
        assert!(patterns.len() > 40);
        let mut checked = 0;
        for p in &patterns {
            let re = regex::bytes::RegexBuilder::new(p)
                .unicode(false)
                .build()
                .unwrap();
            let Some(need) = needed_bytes(p) else {
                continue;
            };
            // Values from the pattern's own text, each with the needed
            // bytes taken out, and a few fixed ones.
            let mut values: Vec<Vec<u8>> = vec![
                b"0a1b2c3d4e5f".to_vec(),
                b"-created_at".to_vec(),
                b"blue shoes".to_vec(),
            ];
            let text = p.as_bytes();
            for w in 1..=text.len().min(40) {
                for start in (0..text.len()).step_by(3) {
                    let end = (start + w).min(text.len());
                    values.push(text[start..end].to_vec());
                }
            }
            for v in values {
                let v: Vec<u8> = v.into_iter().filter(|b| !need.contains(*b)).collect();
                assert!(
                    !re.is_match(&v),
                    "{p} matched {:?}",
                    String::from_utf8_lossy(&v)
                );
                checked += 1;
            }
        }
        assert!(checked > 1000, "{checked}");
    }
}
