//! `--exclude` patterns, matched the way GNU tar matches them by default (`--wildcards
//! --wildcards-match-slash --no-anchored`):
//!
//! - `*` matches any run of characters, `/` included; `?` matches one character;
//! - `[...]` matches one character from a set of characters, ranges (`a-z`) and POSIX classes
//!   (`[:digit:]`, ASCII meaning as in the C locale); `[!...]` or `[^...]` negates it; a `]`
//!   right after the opening (or after the `!`/`^`) is literal; a `[` without a closing `]` is
//!   a literal `[`;
//! - `\` makes the next character literal;
//! - a pattern excludes a member when it matches its path relative to the snapshotted
//!   directory (`var/cache/apt`, no leading `./`) or any trailing run of its components
//!   (`cache/apt`, `apt`), so `*.log` or `cache` exclude at any depth;
//! - a pattern starting with `./` is matched against the member's name instead (`./var/cache`,
//!   as `tar -C DIR .` names it), so `./proc` excludes the top-level `proc` only. (GNU tar
//!   tries every pattern on the `./` name too, where `.*` matches every member; only these
//!   patterns are, so `.*` still means hidden files.)
//!
//! Paths and patterns are bytes: a valid UTF-8 sequence counts as one character, any other
//! byte as one character of its own, in a path and in a pattern alike (so a pattern given as
//! bytes finds a name that is not UTF-8: the byte matches itself, `*`, `?` and negated sets).

/// One compiled pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone)]
enum Token {
    Star,
    AnyChar,
    Literal(u32),
    Set { negated: bool, items: Vec<SetItem> },
}

#[derive(Debug, Clone)]
enum SetItem {
    Char(u32),
    Range(u32, u32),
    Class(Class),
}

#[derive(Debug, Clone, Copy)]
enum Class {
    Alnum,
    Alpha,
    Blank,
    Cntrl,
    Digit,
    Graph,
    Lower,
    Print,
    Punct,
    Space,
    Upper,
    Xdigit,
}

/// Bytes that are not part of a valid UTF-8 sequence become "characters" above the Unicode
/// range, so no pattern character (a Rust `char`) can equal them.
const RAW_BYTE_BASE: u32 = 0x11_0000;

/// The pattern characters with a meaning.
const STAR: u32 = '*' as u32;
const ANY: u32 = '?' as u32;
const ESCAPE: u32 = '\\' as u32;
const OPEN: u32 = '[' as u32;
const CLOSE: u32 = ']' as u32;
const COLON: u32 = ':' as u32;
const DASH: u32 = '-' as u32;

impl Pattern {
    pub(crate) fn new(pattern: &[u8]) -> Pattern {
        let mut chars = Vec::with_capacity(pattern.len());
        let mut at = 0;
        while at < pattern.len() {
            let (c, width) = next_char(&pattern[at..]);
            chars.push(c);
            at += width;
        }
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let (token, used) = match chars[i] {
                STAR => (Token::Star, 1),
                ANY => (Token::AnyChar, 1),
                ESCAPE if i + 1 < chars.len() => (Token::Literal(chars[i + 1]), 2),
                OPEN => match parse_set(&chars[i + 1..]) {
                    Some((set, used)) => (set, used + 1),
                    None => (Token::Literal(OPEN), 1),
                },
                c => (Token::Literal(c), 1),
            };
            // Runs of stars mean the same as one; collapsing them keeps matching linear.
            if !(matches!(token, Token::Star) && matches!(tokens.last(), Some(Token::Star))) {
                tokens.push(token);
            }
            i += used;
        }
        Pattern { tokens }
    }

    /// Whether the pattern matches all of `subject`.
    pub(crate) fn matches(&self, subject: &[u8]) -> bool {
        let toks = &self.tokens;
        let (mut p, mut i) = (0, 0);
        // After a mismatch, resume just after the last star, with it swallowing one more
        // character. Retrying only the last star is enough: `*` has no length limits, so an
        // earlier star could never do better.
        let mut retry: Option<(usize, usize)> = None;
        loop {
            if let Some(tok) = toks.get(p) {
                if let Token::Star = tok {
                    retry = Some((p + 1, i));
                    p += 1;
                    continue;
                }
                if i < subject.len() {
                    let (c, width) = next_char(&subject[i..]);
                    if tok.matches_char(c) {
                        p += 1;
                        i += width;
                        continue;
                    }
                }
            } else if i == subject.len() {
                return true;
            }
            match retry {
                Some((after_star, from)) if from < subject.len() => {
                    let from = from + next_char(&subject[from..]).1;
                    retry = Some((after_star, from));
                    p = after_star;
                    i = from;
                }
                _ => return false,
            }
        }
    }
}

impl Token {
    fn matches_char(&self, c: u32) -> bool {
        match self {
            Token::Star | Token::AnyChar => true,
            Token::Literal(l) => *l == c,
            Token::Set { negated, items } => items.iter().any(|item| item.contains(c)) != *negated,
        }
    }
}

impl SetItem {
    fn contains(&self, c: u32) -> bool {
        match *self {
            SetItem::Char(x) => x == c,
            SetItem::Range(lo, hi) => (lo..=hi).contains(&c),
            SetItem::Class(class) => u8::try_from(c).is_ok_and(|b| class.contains(b)),
        }
    }
}

impl Class {
    fn from_name(name: &str) -> Option<Class> {
        Some(match name {
            "alnum" => Class::Alnum,
            "alpha" => Class::Alpha,
            "blank" => Class::Blank,
            "cntrl" => Class::Cntrl,
            "digit" => Class::Digit,
            "graph" => Class::Graph,
            "lower" => Class::Lower,
            "print" => Class::Print,
            "punct" => Class::Punct,
            "space" => Class::Space,
            "upper" => Class::Upper,
            "xdigit" => Class::Xdigit,
            _ => return None,
        })
    }

    fn contains(self, b: u8) -> bool {
        match self {
            Class::Alnum => b.is_ascii_alphanumeric(),
            Class::Alpha => b.is_ascii_alphabetic(),
            Class::Blank => b == b' ' || b == b'\t',
            Class::Cntrl => b.is_ascii_control(),
            Class::Digit => b.is_ascii_digit(),
            Class::Graph => b.is_ascii_graphic(),
            Class::Lower => b.is_ascii_lowercase(),
            Class::Print => b.is_ascii_graphic() || b == b' ',
            Class::Punct => b.is_ascii_punctuation(),
            // `is_ascii_whitespace` leaves out vertical tab, which C's isspace includes.
            Class::Space => b.is_ascii_whitespace() || b == 0x0b,
            Class::Upper => b.is_ascii_uppercase(),
            Class::Xdigit => b.is_ascii_hexdigit(),
        }
    }
}

/// Parse a bracket expression; `rest` starts just after the `[`. Returns the token and how
/// many characters of `rest` it used (through the closing `]`), or None when it is not closed.
fn parse_set(rest: &[u32]) -> Option<(Token, usize)> {
    let mut i = 0;
    let negated = matches!(rest.first(), Some(&c) if c == '!' as u32 || c == '^' as u32);
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let c = *rest.get(i)?;
        if c == CLOSE && !first {
            return Some((Token::Set { negated, items }, i + 1));
        }
        first = false;
        if c == OPEN && rest.get(i + 1) == Some(&COLON) {
            if let Some((class, used)) = parse_class(&rest[i + 2..]) {
                items.push(SetItem::Class(class));
                i += 2 + used;
                continue;
            }
        }
        let (lo, used) = set_char(&rest[i..])?;
        i += used;
        // `a-z` is a range unless the `-` is the last thing before `]`.
        if rest.get(i) == Some(&DASH) && rest.get(i + 1).is_some_and(|&c| c != CLOSE) {
            let (hi, used) = set_char(&rest[i + 1..])?;
            items.push(SetItem::Range(lo, hi));
            i += 1 + used;
        } else {
            items.push(SetItem::Char(lo));
        }
    }
}

/// `name:]` after a `[:` inside a set: the class and the characters used.
fn parse_class(rest: &[u32]) -> Option<(Class, usize)> {
    let end = rest.windows(2).position(|w| w == [COLON, CLOSE])?;
    let name: String = rest[..end]
        .iter()
        .map(|&c| char::from_u32(c))
        .collect::<Option<_>>()?;
    Class::from_name(&name).map(|class| (class, end + 2))
}

/// One (possibly backslash-escaped) character inside a set.
fn set_char(rest: &[u32]) -> Option<(u32, usize)> {
    match rest {
        [ESCAPE, c, ..] => Some((*c, 2)),
        [c, ..] => Some((*c, 1)),
        [] => None,
    }
}

/// The character at the start of `s` (non-empty) and its width in bytes.
fn next_char(s: &[u8]) -> (u32, usize) {
    let width = match s[0] {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    };
    if width > 0 && s.len() >= width {
        if let Some(c) = std::str::from_utf8(&s[..width])
            .ok()
            .and_then(|t| t.chars().next())
        {
            return (c as u32, width);
        }
    }
    (RAW_BYTE_BASE + s[0] as u32, 1)
}

/// A set of `--exclude` patterns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Excludes {
    patterns: Vec<Pattern>,
    /// Patterns starting with `./`, matched against the member's name (`./var/cache`).
    rooted: Vec<Pattern>,
}

impl Excludes {
    pub(crate) fn new<S: AsRef<[u8]>>(patterns: &[S]) -> Excludes {
        let (rooted, patterns): (Vec<&[u8]>, Vec<&[u8]>) = patterns
            .iter()
            .map(|p| p.as_ref())
            .partition(|p| p.starts_with(b"./"));
        Excludes {
            patterns: patterns.into_iter().map(Pattern::new).collect(),
            rooted: rooted.into_iter().map(Pattern::new).collect(),
        }
    }

    /// Whether the member at `rel` (its path relative to the snapshotted directory, without
    /// `./` or a trailing `/`) is excluded: some pattern matches the whole path or a trailing
    /// run of its components, or a pattern starting with `./` matches its member name `./rel`
    /// (as in `tar -C DIR --exclude=./proc .`, the way root filesystems are archived).
    pub(crate) fn excludes(&self, rel: &[u8]) -> bool {
        if !self.rooted.is_empty() {
            let name = [&b"./"[..], rel].concat();
            if self.rooted.iter().any(|p| p.matches(&name)) {
                return true;
            }
        }
        if self.patterns.is_empty() {
            return false;
        }
        let starts = std::iter::once(0).chain(
            rel.iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'/')
                .map(|(i, _)| i + 1),
        );
        starts
            .map(|s| &rel[s..])
            .any(|tail| self.patterns.iter().any(|p| p.matches(tail)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, subject: &[u8]) -> bool {
        Pattern::new(pattern.as_bytes()).matches(subject)
    }

    #[test]
    fn literals_and_stars() {
        assert!(m("abc", b"abc"));
        assert!(!m("abc", b"abcd"));
        assert!(!m("abc", b"ab"));
        assert!(m("", b""));
        assert!(!m("", b"a"));
        assert!(m("*", b""));
        assert!(m("*", b"any/thing"));
        assert!(m("a*c", b"abbbc"));
        assert!(m("a*c", b"ac"));
        assert!(!m("a*c", b"acb"));
        assert!(m("*.log", b"x.log"));
        assert!(m("*.log", b"dir/x.log"), "* matches / as in GNU tar");
        assert!(m("a**b", b"a/x/b"));
        assert!(m("*a*b*", b"xxaxxbxx"));
        assert!(!m("*a*b*", b"xxbxxaxx"));
        assert!(m("*ab", b"aab"), "backtracking past a partial match");
        assert!(m("var/cache/*", b"var/cache/apt/x"));
        assert!(!m("var/cache/*", b"var/cache"));
    }

    #[test]
    fn question_mark_is_one_character() {
        assert!(m("?", b"a"));
        assert!(m("?", b"/"));
        assert!(!m("?", b""));
        assert!(!m("?", b"ab"));
        assert!(m("?", "ü".as_bytes()), "one UTF-8 character");
        assert!(m("?", b"\xff"), "one invalid byte");
        assert!(!m("?", b"\xff\xfe"));
        assert!(m("a?c", b"a\nc"));
    }

    #[test]
    fn bracket_expressions() {
        assert!(m("[abc]", b"b"));
        assert!(!m("[abc]", b"d"));
        assert!(m("[a-c]x", b"bx"));
        assert!(!m("[a-c]x", b"dx"));
        assert!(m("[!a-c]", b"d"));
        assert!(m("[^a-c]", b"d"));
        assert!(!m("[!a-c]", b"a"));
        assert!(m("[]]", b"]"));
        assert!(m("[!]]", b"a"));
        assert!(!m("[!]]", b"]"));
        assert!(m("[a-]", b"-"));
        assert!(m("[[:digit:]]x", b"7x"));
        assert!(!m("[[:digit:]]", b"a"));
        assert!(m("[[:alpha:][:digit:]_]", b"_"));
        assert!(m("[[:space:]]", b"\x0b"));
        assert!(m("[\\]]", b"]"));
        assert!(m("[ä-ü]", "ö".as_bytes()));
        assert!(m("[!a]", b"\xff"), "invalid bytes match negated sets");
        assert!(!m("[a-z]", b"\xff"));
        assert!(m("[/]", b"/"));
        // Not closed: a literal `[`.
        assert!(m("[ab", b"[ab"));
        assert!(!m("[ab", b"a"));
        // An unknown class name is not a class: `[` `:` `f` `o` `o` `:` then a literal `]`.
        assert!(m("[[:foo:]]", b":]"));
    }

    #[test]
    fn backslash_escapes() {
        assert!(m("\\*", b"*"));
        assert!(!m("\\*", b"a"));
        assert!(m("a\\?", b"a?"));
        assert!(!m("a\\?", b"ab"));
        assert!(m("\\[a]", b"[a]"));
        assert!(m("a\\", b"a\\"), "a trailing backslash is literal");
    }

    #[test]
    fn non_utf8_subjects() {
        assert!(m("bad*", b"bad\xff\xfe"));
        assert!(m("*\u{fe}", b"\xc3\xbe"), "þ is U+00FE, one character");
        assert!(!m("*\u{fe}", b"\xfe"), "the lone byte 0xfe is not þ");
        assert!(!m("*x", b"\xffy"));
    }

    #[test]
    fn non_utf8_patterns_match_the_same_bytes() {
        let b = |pattern: &[u8], subject: &[u8]| Pattern::new(pattern).matches(subject);
        assert!(b(b"a\xffb", b"a\xffb"));
        assert!(!b(b"a\xffb", b"a\xfeb"));
        assert!(b(b"*\xff", b"name\xff"));
        assert!(b(b"[\xfe\xff]x", b"\xfex"));
        assert!(!b(b"[!\xfe]x", b"\xfex"));
        assert!(b(b"[\xf0-\xff]", b"\xf5"), "a range of raw bytes");
        assert!(b(b"\\\xff", b"\xff"), "an escaped raw byte");
        // A lone lead byte is a byte of its own, never the character it would begin.
        assert!(b(b"\xc3", b"\xc3"));
        assert!(!b(b"\xc3*", "é".as_bytes()));
        assert!(!b(b"\xff", b"\xff\xff"));
    }

    #[test]
    fn excludes_match_whole_path_or_trailing_components() {
        let ex = Excludes::new(&["proc", "var/cache/*", "*.log", "tmp?"]);
        assert!(ex.excludes(b"proc"));
        assert!(ex.excludes(b"a/b/proc"));
        assert!(!ex.excludes(b"proc2"));
        assert!(!ex.excludes(b"myproc"));
        assert!(ex.excludes(b"var/cache/apt"));
        assert!(ex.excludes(b"srv/var/cache/apt"));
        assert!(!ex.excludes(b"var/cache"));
        assert!(ex.excludes(b"x.log"));
        assert!(ex.excludes(b"deep/er/x.log"));
        assert!(ex.excludes(b"tmp1"));
        assert!(!ex.excludes(b"tmp"));
        assert!(!ex.excludes(b"var"));
        assert!(!Excludes::new::<&str>(&[]).excludes(b"anything"));
        let ex = Excludes::new(&["b/c"]);
        assert!(ex.excludes(b"a/b/c"));
        assert!(
            !ex.excludes(b"a/b/c/d"),
            "whole trailing components only, not a prefix"
        );
        assert!(!ex.excludes(b"ab/c"), "component boundaries only");
        // `./` patterns name members from the top, as `tar -C DIR .` names them.
        let ex = Excludes::new(&["./proc", "./var/cache/*", "./*.tmp"]);
        assert!(ex.excludes(b"proc") && ex.excludes(b"var/cache/apt"));
        assert!(
            ex.excludes(b"x.tmp") && ex.excludes(b"a/b.tmp"),
            "`*` matches `/`"
        );
        assert!(!ex.excludes(b"usr/proc") && !ex.excludes(b"srv/var/cache/apt"));
        assert!(!ex.excludes(b"proc2") && !ex.excludes(b"var/cache"));
    }

    #[test]
    fn matching_stays_fast_on_hostile_patterns() {
        let pattern = "*a*a*a*a*a*a*a*a*a*b";
        let subject = vec![b'a'; 10_000];
        let start = std::time::Instant::now();
        assert!(!m(pattern, &subject));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
