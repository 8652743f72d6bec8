//! The versioned encodings of what the monitors keep and replicate: Raft log commands (a
//! [`Decision`]) and state-machine snapshots ([`Applied`]). Each is `[0xFF][version][bincode]`;
//! 0xFF can never start the unversioned bincode the first release wrote (no bincode varint
//! begins with it), so such data reads as version 0. A newer release adds a version here and
//! keeps reading every older one, which is what a rolling upgrade of the monitors needs.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::state_machine::Applied;
use crate::net::{decode, encode, DecodeError};
use crate::view::Decision;

/// Marks versioned data.
const MARK: u8 = 0xFF;

/// The version this build writes.
pub const VERSION: u8 = 1;

/// Data this build cannot read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Written by a newer release.
    #[error("format version {0} is newer than this build reads ({VERSION}); upgrade this monitor")]
    Newer(u8),
    /// Not a valid encoding of its version.
    #[error("format version {version}: {source}")]
    Decode {
        /// The version it claimed.
        version: u8,
        /// What the decoder found.
        source: DecodeError,
    },
}

fn write<T: Serialize>(value: &T) -> Vec<u8> {
    let body = encode(value);
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&[MARK, VERSION]);
    out.extend_from_slice(&body);
    out
}

fn read<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    let (version, body) = match bytes {
        [MARK, version, body @ ..] => (*version, body),
        legacy => (0, legacy),
    };
    if version > VERSION {
        return Err(FormatError::Newer(version));
    }
    // Versions 0 and 1 share one body encoding; a later version that changes it decodes its
    // older bodies here and converts them.
    decode(body).map_err(|source| FormatError::Decode { version, source })
}

/// A Raft log command.
pub fn encode_decision(decision: &Decision) -> Vec<u8> {
    write(decision)
}

/// A Raft log command, of any version this build knows.
pub fn decode_decision(bytes: &[u8]) -> Result<Decision, FormatError> {
    read(bytes)
}

/// A state-machine snapshot.
pub fn encode_snapshot(applied: &Applied) -> Vec<u8> {
    write(applied)
}

/// A state-machine snapshot, of any version this build knows.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Applied, FormatError> {
    read(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{Member, View};

    fn decision() -> Decision {
        Decision::Change {
            prev: View::default(),
            next: View {
                num: 1,
                primary: Some(Member {
                    id: "a".into(),
                    addr: "127.0.0.1:1".into(),
                    incarnation: 7,
                }),
                ..View::default()
            },
        }
    }

    #[test]
    fn unversioned_data_of_the_first_release_still_reads() {
        let legacy = encode(&decision());
        assert_ne!(legacy.first(), Some(&MARK));
        assert_eq!(decode_decision(&legacy).expect("legacy reads"), decision());
        let current = encode_decision(&decision());
        assert_eq!(current[..2], [MARK, VERSION]);
        assert_eq!(
            decode_decision(&current).expect("current reads"),
            decision()
        );
    }

    #[test]
    fn a_newer_version_is_refused_by_name_and_garbage_is_an_error() {
        let mut newer = encode_decision(&decision());
        newer[1] = VERSION + 1;
        let err = decode_decision(&newer).expect_err("newer");
        assert!(err.to_string().contains("newer"), "{err}");
        assert!(decode_decision(&[MARK, VERSION, 250, 1]).is_err());
        assert!(decode_snapshot(&[MARK]).is_err());
    }
}
