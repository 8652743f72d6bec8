//! The versioned encodings of what the monitors keep and replicate: Raft log commands (a
//! [`Decision`]) and state-machine snapshots ([`Applied`]). Each is `[0xFF][version][bincode]`;
//! 0xFF can never start the unversioned bincode the first release wrote (no bincode varint
//! begins with it), so such data reads as version 0. A newer release adds a version here and
//! keeps reading every older one, which is what a rolling upgrade of the monitors needs.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::legacy::{AppliedV1, DecisionV1};
use super::state_machine::Applied;
use crate::net::{decode, encode, DecodeError};
use crate::view::Decision;

/// Marks versioned data.
const MARK: u8 = 0xFF;

/// The version this build writes. Version 2 added the cluster id, operator recoveries and the
/// view's `recovered` flag; versions 0 and 1 are read through `legacy.rs`.
pub const VERSION: u8 = 2;

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

/// Read `bytes` as the current `T`, or — versions 0 and 1, which share one body encoding — as
/// the older `Old`, converted.
fn read<T: DeserializeOwned, Old: DeserializeOwned + Into<T>>(
    bytes: &[u8],
) -> Result<T, FormatError> {
    let (version, body) = match bytes {
        [MARK, version, body @ ..] => (*version, body),
        legacy => (0, legacy),
    };
    let failed = |source| FormatError::Decode { version, source };
    match version {
        0 | 1 => decode::<Old>(body).map(Into::into).map_err(failed),
        VERSION => decode(body).map_err(failed),
        newer => Err(FormatError::Newer(newer)),
    }
}

/// A Raft log command.
pub fn encode_decision(decision: &Decision) -> Vec<u8> {
    write(decision)
}

/// A Raft log command, of any version this build knows.
pub fn decode_decision(bytes: &[u8]) -> Result<Decision, FormatError> {
    read::<Decision, DecisionV1>(bytes)
}

/// A state-machine snapshot.
pub fn encode_snapshot(applied: &Applied) -> Vec<u8> {
    write(applied)
}

/// A state-machine snapshot, of any version this build knows.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Applied, FormatError> {
    read::<Applied, AppliedV1>(bytes)
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

    /// The view and decision layouts versions 0 and 1 wrote, to make their bytes.
    #[derive(serde::Serialize)]
    struct OldView {
        num: u64,
        primary: Option<Member>,
        backup: Option<Member>,
        acked: bool,
        backup_ready: bool,
    }

    // Register and Forget are never built, but keep Change at its old variant index (2).
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum OldDecision {
        Register {
            id: String,
            info: crate::view::ServerInfo,
        },
        Forget {
            id: String,
        },
        Change {
            prev: OldView,
            next: OldView,
        },
    }

    fn old_decision() -> OldDecision {
        let view = decision();
        let Decision::Change { next, .. } = view else {
            unreachable!("decision() is a change")
        };
        OldDecision::Change {
            prev: OldView {
                num: 0,
                primary: None,
                backup: None,
                acked: false,
                backup_ready: false,
            },
            next: OldView {
                num: next.num,
                primary: next.primary,
                backup: next.backup,
                acked: next.acked,
                backup_ready: next.backup_ready,
            },
        }
    }

    #[test]
    fn data_of_versions_0_and_1_still_reads() {
        let legacy = encode(&old_decision());
        assert_ne!(legacy.first(), Some(&MARK));
        assert_eq!(
            decode_decision(&legacy).expect("version 0 reads"),
            decision()
        );
        let mut v1 = vec![MARK, 1];
        v1.extend_from_slice(&legacy);
        assert_eq!(decode_decision(&v1).expect("version 1 reads"), decision());
        let current = encode_decision(&decision());
        assert_eq!(current[..2], [MARK, VERSION]);
        assert_eq!(
            decode_decision(&current).expect("current reads"),
            decision()
        );
        let formed = Decision::Form { cluster: 9 };
        assert_eq!(
            decode_decision(&encode_decision(&formed)).ok(),
            Some(formed)
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
