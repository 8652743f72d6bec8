//! What `KEYS` and `SCAN` need beyond the store's ordered scan: Redis's glob patterns, and the
//! table that turns SCAN's integer cursors into the key a scan resumes after.
//!
//! A cursor names the last key a page returned; the next page starts after it in key order, so
//! every key present for the whole scan is returned exactly once (Redis promises at least
//! once). Cursors live on the server that handed them out: a scan continued through another
//! server's port gets `ERR invalid cursor`, and is started again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Most cursors a server remembers; the oldest is forgotten first.
pub const MAX_CURSORS: usize = 65_536;
/// Most key bytes the cursors of a server hold together (keys can be large); the oldest
/// cursors are forgotten first.
pub const MAX_CURSOR_BYTES: usize = 64 << 20;

/// One element of a glob pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// `*`: any run of bytes.
    Star,
    /// `?`: any one byte.
    One,
    /// A byte that must be there (`\x` for a byte that is otherwise special).
    Byte(u8),
    /// `[...]`: one byte in (or with `^`, not in) the ranges.
    Class {
        /// `[^...]`.
        negated: bool,
        /// Inclusive byte ranges; a single byte is a range of one.
        ranges: Vec<(u8, u8)>,
    },
}

/// A Redis glob pattern (`*`, `?`, `[abc]`, `[^a-z]`, `\` to escape), as `KEYS` and `SCAN
/// MATCH` take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    /// The pattern, split up.
    tokens: Vec<Token>,
}

impl Glob {
    /// Read `pattern`. Every byte string is a pattern: an unclosed `[` runs to the end, as in
    /// Redis.
    pub fn new(pattern: &[u8]) -> Glob {
        let mut tokens = Vec::new();
        let mut at = 0;
        while let Some(&byte) = pattern.get(at) {
            at += 1;
            tokens.push(match byte {
                b'*' => Token::Star,
                b'?' => Token::One,
                b'\\' if at < pattern.len() => {
                    at += 1;
                    Token::Byte(pattern[at - 1])
                }
                b'[' => {
                    let negated = pattern.get(at) == Some(&b'^');
                    at += usize::from(negated);
                    let mut ranges = Vec::new();
                    while let Some(&first) = pattern.get(at) {
                        at += 1;
                        match first {
                            b']' => break,
                            b'\\' if at < pattern.len() => {
                                ranges.push((pattern[at], pattern[at]));
                                at += 1;
                            }
                            _ if pattern.get(at) == Some(&b'-')
                                && pattern.get(at + 1).is_some_and(|b| *b != b']') =>
                            {
                                let last = pattern[at + 1];
                                ranges.push((first.min(last), first.max(last)));
                                at += 2;
                            }
                            _ => ranges.push((first, first)),
                        }
                    }
                    Token::Class { negated, ranges }
                }
                other => Token::Byte(other),
            });
        }
        Glob { tokens }
    }

    /// The bytes every matching key starts with: the store scans only keys with this prefix.
    pub fn prefix(&self) -> Vec<u8> {
        self.tokens
            .iter()
            .map_while(|token| match token {
                Token::Byte(byte) => Some(*byte),
                _ => None,
            })
            .collect()
    }

    /// Whether `key` matches. Linear backtracking on the last `*` only, so O(pattern × key)
    /// whatever the pattern.
    pub fn matches(&self, key: &[u8]) -> bool {
        let (mut t, mut k) = (0, 0);
        // Where to go on after the last `*` seen: the token after it, and the key byte it
        // would swallow next.
        let mut star: Option<(usize, usize)> = None;
        while k < key.len() {
            match self.tokens.get(t) {
                Some(Token::Star) => {
                    star = Some((t + 1, k));
                    t += 1;
                }
                Some(token) if token.accepts(key[k]) => {
                    t += 1;
                    k += 1;
                }
                _ => match star {
                    Some((after, swallowed)) => {
                        t = after;
                        k = swallowed + 1;
                        star = Some((after, swallowed + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[t..].iter().all(|token| *token == Token::Star)
    }
}

impl Token {
    /// Whether this one-byte token accepts `byte` (never for `*`).
    fn accepts(&self, byte: u8) -> bool {
        match self {
            Token::Star => false,
            Token::One => true,
            Token::Byte(b) => *b == byte,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&byte)) != *negated
            }
        }
    }
}

/// SCAN cursors handed out by one server: cursor → the last key of the page it followed.
#[derive(Default)]
pub struct Cursors {
    /// The table.
    inner: Mutex<Table>,
}

/// What [`Cursors`] guards.
#[derive(Default)]
struct Table {
    /// Cursor → the key its scan resumes after.
    keys: HashMap<u64, Vec<u8>>,
    /// Cursors in the order they were made, to forget the oldest.
    order: VecDeque<u64>,
    /// Bytes of the keys held.
    bytes: usize,
}

impl Cursors {
    /// A new cursor that resumes after `key`: a positive integer below 2^63, as clients
    /// expect (redis-cli reads it as an unsigned 64-bit number, redis-py as an int).
    pub fn after(&self, key: Vec<u8>) -> u64 {
        let cursor = rand::random::<u64>() >> 1 | 1;
        let mut table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while table.keys.len() >= MAX_CURSORS || table.bytes + key.len() > MAX_CURSOR_BYTES {
            let Some(oldest) = table.order.pop_front() else {
                break;
            };
            if let Some(gone) = table.keys.remove(&oldest) {
                table.bytes -= gone.len();
            }
        }
        table.bytes += key.len();
        table.keys.insert(cursor, key);
        table.order.push_back(cursor);
        cursor
    }

    /// The key `cursor` resumes after, if this server handed it out and still remembers it.
    pub fn resume(&self, cursor: u64) -> Option<Vec<u8>> {
        let table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        table.keys.get(&cursor).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, key: &str) -> bool {
        Glob::new(pattern.as_bytes()).matches(key.as_bytes())
    }

    #[test]
    fn globs_match_as_in_redis() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("user:*", "user:1", true),
            ("user:*", "user", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("h[a-b]llo", "hcllo", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "xxaxxcxxbxx", false),
            ("a*", "ba", false),
            ("[abc", "b", true),
            ("**", "x", true),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(matches(pattern, key), expected, "{pattern:?} on {key:?}");
        }
    }

    #[test]
    fn a_pathological_pattern_is_still_fast() {
        let key = "a".repeat(10_000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!matches(&pattern, &key));
    }

    #[test]
    fn the_literal_prefix_stops_at_the_first_wildcard() {
        let prefix = |p: &str| String::from_utf8(Glob::new(p.as_bytes()).prefix()).unwrap();
        assert_eq!(prefix("user:*:name"), "user:");
        assert_eq!(prefix("a\\*b*"), "a*b");
        assert_eq!(prefix("[ab]c"), "");
        assert_eq!(prefix("exact"), "exact");
    }

    #[test]
    fn cursors_resume_after_their_key_and_the_oldest_is_forgotten() {
        let cursors = Cursors::default();
        let first = cursors.after(b"k1".to_vec());
        assert!(first > 0 && first < 1 << 63);
        assert_eq!(cursors.resume(first), Some(b"k1".to_vec()));
        assert_eq!(cursors.resume(first ^ 2), None);
        for i in 0..MAX_CURSORS {
            cursors.after(i.to_string().into_bytes());
        }
        assert_eq!(cursors.resume(first), None);
        let big = cursors.after(vec![b'k'; MAX_CURSOR_BYTES / 2]);
        let bigger = cursors.after(vec![b'k'; MAX_CURSOR_BYTES / 2 + 1]);
        assert_eq!(
            cursors.resume(big),
            None,
            "over the byte bound: the oldest goes"
        );
        assert!(cursors.resume(bigger).is_some());
    }
}
