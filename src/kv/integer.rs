//! Integers as Redis reads them from a value or an argument: an optional `-`, then digits with
//! no leading zero, within an `i64`. Anything else — `+5`, `007`, `-0`, ` 5`, `5.0` — is not an
//! integer, so INCR and the commands taking a count refuse what Redis refuses.

/// The integer `text` spells, if it spells one the way Redis writes them.
pub fn parse_integer(text: &[u8]) -> Option<i64> {
    if text == b"0" {
        return Some(0);
    }
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if !matches!(digits.first(), Some(b'1'..=b'9')) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_integer;

    #[test]
    fn integers_are_read_as_redis_reads_them() {
        let accepted: [(&[u8], i64); 6] = [
            (b"0", 0),
            (b"7", 7),
            (b"-12", -12),
            (b"1000", 1000),
            (b"9223372036854775807", i64::MAX),
            (b"-9223372036854775808", i64::MIN),
        ];
        for (text, value) in accepted {
            assert_eq!(parse_integer(text), Some(value), "{text:?}");
        }
        let refused: [&[u8]; 13] = [
            b"",
            b"-",
            b"+5",
            b"007",
            b"-0",
            b"-07",
            b" 5",
            b"5 ",
            b"5.0",
            b"1e3",
            b"0x10",
            b"9223372036854775808",
            b"-9223372036854775809",
        ];
        for text in refused {
            assert_eq!(
                parse_integer(text),
                None,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
