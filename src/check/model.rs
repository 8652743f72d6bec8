//! The sequential specification of one key of the store: what each call does to the key's value
//! and what it must return.
//!
//! Written independently of `kv::store` on purpose (FNV-1a included): an oracle that shared the
//! code under test could not catch that code's bugs.

use super::history::{Call, Outcome};

/// FNV-1a-32's starting value.
const FNV_OFFSET_BASIS: u32 = 2_166_136_261;
/// FNV-1a-32's multiplier.
const FNV_PRIME: u32 = 16_777_619;

/// FNV-1a-32 of `bytes`, the hash behind [`Call::PutHash`].
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    fnv_extend(FNV_OFFSET_BASIS, bytes)
}

/// Continues an FNV-1a-32 hash `hash` over `bytes`.
fn fnv_extend(hash: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The value a [`Call::PutHash`] of `value` stores over `previous` (an absent key hashes as
/// empty): the decimal FNV-1a-32 of `previous ++ value`.
pub fn put_hash(previous: Option<&[u8]>, value: &[u8]) -> Vec<u8> {
    let hash = fnv_extend(fnv1a32(previous.unwrap_or_default()), value);
    hash.to_string().into_bytes()
}

/// What a [`Call::Incr`] stores over `state` (`None`: absent, counted as 0): the integer plus
/// one, in decimal. `None` if `state` is not an integer as Redis writes one (an optional `-`,
/// then digits without leading zeros: `+1`, `01` and `-0` are not) or the sum overflows.
fn incremented(state: Option<&[u8]>) -> Option<Vec<u8>> {
    let old = match state {
        None => 0,
        Some(bytes) => {
            let text = std::str::from_utf8(bytes).ok()?;
            let old: i64 = text.parse().ok()?;
            (old.to_string() == text).then_some(old)?
        }
    };
    Some(old.checked_add(1)?.to_string().into_bytes())
}

/// How a call changes the key, once the model has accepted it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// The value stays as it was.
    Same,
    /// The key becomes absent.
    Absent,
    /// The key takes this value.
    Value(Vec<u8>),
}

/// Runs `call` on a key holding `state` (`None`: absent). Returns how the key changes, or `None`
/// if the call cannot have returned what `outcome` says it did (an unknown outcome fits
/// anything).
pub(crate) fn step(state: Option<&[u8]>, call: &Call, outcome: &Outcome) -> Option<Next> {
    let returned = |expected: Option<&[u8]>| match outcome {
        Outcome::Ok { value, .. } => value.as_deref() == expected,
        Outcome::Unknown => true,
    };
    match call {
        Call::Get { .. } => returned(state).then_some(Next::Same),
        Call::Put { value, .. } => returned(None).then(|| Next::Value(value.clone())),
        Call::Append { value, .. } => returned(None).then(|| {
            let mut next = state.unwrap_or_default().to_vec();
            next.extend_from_slice(value);
            Next::Value(next)
        }),
        Call::PutHash { value, .. } => returned(state).then(|| Next::Value(put_hash(state, value))),
        Call::Delete { .. } => returned(state).then_some(Next::Absent),
        Call::Incr { .. } => match incremented(state) {
            Some(next) => returned(Some(&next)).then_some(Next::Value(next)),
            // The call failed: only an unknown outcome fits, and it changed nothing.
            None => matches!(outcome, Outcome::Unknown).then_some(Next::Same),
        },
    }
}

/// True if `call` returned (as `outcome` says) and leaves the key as it was in every state where
/// it can run at all: a completed `Get`, or a completed `Delete` that found nothing. Such a call
/// can be linearized as soon as it fits the key's value; no other order does better.
pub(crate) fn read_only(call: &Call, outcome: &Outcome) -> bool {
    match (call, outcome) {
        (Call::Get { .. }, Outcome::Ok { .. }) => true,
        (Call::Delete { .. }, Outcome::Ok { value, .. }) => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_check_vector() {
        let mut value: Option<Vec<u8>> = None;
        let mut stored = Vec::new();
        for argument in ["0", "1", "2"] {
            let next = put_hash(value.as_deref(), argument.as_bytes());
            stored.push(String::from_utf8_lossy(&next).into_owned());
            value = Some(next);
        }
        assert_eq!(stored, ["890022063", "78513644", "3250269825"]);
        assert_eq!(fnv1a32(b""), FNV_OFFSET_BASIS);
        assert_eq!(put_hash(None, b"ab"), put_hash(Some(b"a"), b"b"));
    }

    #[test]
    fn steps_follow_the_specification() {
        let ok = |value: Option<&[u8]>| Outcome::Ok {
            at: 0,
            value: value.map(<[u8]>::to_vec),
        };
        let held: Option<&[u8]> = Some(b"ab");
        assert_eq!(step(held, &Call::get("k"), &ok(held)), Some(Next::Same));
        assert_eq!(step(held, &Call::get("k"), &ok(None)), None);
        assert_eq!(
            step(None, &Call::get("k"), &Outcome::Unknown),
            Some(Next::Same)
        );
        assert_eq!(
            step(held, &Call::put("k", "c"), &ok(None)),
            Some(Next::Value(b"c".to_vec()))
        );
        assert_eq!(step(held, &Call::put("k", "c"), &ok(Some(b"c"))), None);
        assert_eq!(
            step(held, &Call::append("k", "c"), &ok(None)),
            Some(Next::Value(b"abc".to_vec()))
        );
        assert_eq!(
            step(None, &Call::append("k", "c"), &Outcome::Unknown),
            Some(Next::Value(b"c".to_vec()))
        );
        assert_eq!(
            step(held, &Call::put_hash("k", "c"), &ok(held)),
            Some(Next::Value(put_hash(held, b"c")))
        );
        assert_eq!(step(held, &Call::put_hash("k", "c"), &ok(None)), None);
        assert_eq!(
            step(held, &Call::delete("k"), &ok(held)),
            Some(Next::Absent)
        );
        assert_eq!(step(held, &Call::delete("k"), &ok(None)), None);
        assert_eq!(
            step(None, &Call::delete("k"), &ok(None)),
            Some(Next::Absent)
        );
        let counted: Option<&[u8]> = Some(b"41");
        assert_eq!(
            step(counted, &Call::incr("k"), &ok(Some(b"42"))),
            Some(Next::Value(b"42".to_vec()))
        );
        assert_eq!(step(counted, &Call::incr("k"), &ok(Some(b"41"))), None);
        assert_eq!(step(counted, &Call::incr("k"), &ok(None)), None);
        assert_eq!(
            step(None, &Call::incr("k"), &ok(Some(b"1"))),
            Some(Next::Value(b"1".to_vec()))
        );
        assert_eq!(
            step(Some(b"-1"), &Call::incr("k"), &Outcome::Unknown),
            Some(Next::Value(b"0".to_vec()))
        );
        // Not an integer as Redis writes one, or at the top of the range: INCR fails and
        // changes nothing, so it cannot have returned.
        let max = i64::MAX.to_string();
        for held in [&b"ab"[..], b"+1", b"01", b"-0", b"", max.as_bytes()] {
            assert_eq!(step(Some(held), &Call::incr("k"), &ok(Some(b"2"))), None);
            assert_eq!(
                step(Some(held), &Call::incr("k"), &Outcome::Unknown),
                Some(Next::Same),
                "{held:?}"
            );
        }
    }

    #[test]
    fn read_only_calls_change_nothing_wherever_they_fit() {
        let ok = |value: Option<&[u8]>| Outcome::Ok {
            at: 0,
            value: value.map(<[u8]>::to_vec),
        };
        assert!(read_only(&Call::get("k"), &ok(Some(b"a"))));
        assert!(read_only(&Call::get("k"), &ok(None)));
        assert!(!read_only(&Call::get("k"), &Outcome::Unknown));
        assert!(read_only(&Call::delete("k"), &ok(None)));
        assert!(!read_only(&Call::delete("k"), &ok(Some(b"a"))));
        assert!(!read_only(&Call::delete("k"), &Outcome::Unknown));
        assert!(!read_only(&Call::put("k", "a"), &ok(None)));
        assert!(!read_only(&Call::append("k", ""), &ok(None)));
        assert!(!read_only(&Call::put_hash("k", ""), &ok(None)));
        assert!(!read_only(&Call::incr("k"), &ok(Some(b"1"))));
    }
}
