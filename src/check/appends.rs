//! The append-set check: a workload appends unique elements to a key and reads the key at the
//! end; every acknowledged element must be there exactly once, nothing else may be, and
//! elements must keep real-time order. It needs no search, so it still catches lost and
//! duplicated writes when the linearizability search runs out of time.
//!
//! Each append's value is one element: its decimal id followed by `,` (see [`element`]).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::history::{self, Bytes, Call, HistoryError, Operation, Outcome};

/// The value a workload appends to add element `id`: its decimal id followed by `,`.
pub fn element(id: u64) -> Vec<u8> {
    format!("{id},").into_bytes()
}

/// Something in the final read that no append explains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phantom {
    /// An element no operation appended.
    NeverAppended {
        /// The element's id.
        element: u64,
    },
    /// An element whose append was invoked only after the read returned.
    AppendedAfterRead {
        /// The element's id.
        element: u64,
    },
    /// Bytes that are not a well-formed element (an element is written exactly as
    /// [`element`] writes it).
    Garbage {
        /// Where they start in the read value.
        offset: usize,
        /// The bytes, up to and including the next `,` (or to the end).
        bytes: Vec<u8>,
    },
}

/// An element found more than once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    /// The element's id.
    pub element: u64,
    /// How many times it was found.
    pub count: usize,
}

/// Two elements found in the wrong order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderViolation {
    /// The element whose append was acknowledged before `second`'s was invoked...
    pub first: u64,
    /// ...yet which the read shows after this one.
    pub second: u64,
}

/// What the append-set check found on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendReport {
    /// The key checked.
    pub key: Vec<u8>,
    /// How many well-formed elements the final read held, repeats included.
    pub read: usize,
    /// How many appends were acknowledged.
    pub acknowledged: usize,
    /// How many appends had an unknown outcome.
    pub unknown: usize,
    /// How many of those the read holds: how often a timed-out append still lands.
    pub unknown_present: usize,
    /// Acknowledged elements missing from the read, by id. Only appends acknowledged before
    /// the read was invoked count; one concurrent with the read may be missing.
    pub lost: Vec<u64>,
    /// Elements found more than once, by id.
    pub duplicated: Vec<Duplicate>,
    /// What the read holds that no append explains, in read order.
    pub phantom: Vec<Phantom>,
    /// Elements found before one that was acknowledged before they were even invoked, in read
    /// order; one violation (with the earliest such element) per misplaced element.
    pub order: Vec<OrderViolation>,
}

impl AppendReport {
    /// True iff nothing was lost, duplicated, invented or reordered.
    pub fn is_ok(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.phantom.is_empty()
            && self.order.is_empty()
    }
}

/// Why the append-set check could not judge a key's operations (a workload or recorder bug,
/// not a store bug).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendError {
    /// The operations cannot have been recorded.
    History(HistoryError),
    /// Operation `index` is on another key than operation 0.
    MixedKeys {
        /// Its position in the operations.
        index: usize,
    },
    /// Operation `index` is neither an append nor a read.
    UnexpectedCall {
        /// Its position in the operations.
        index: usize,
    },
    /// Operation `index` appends something other than one element.
    MalformedAppend {
        /// Its position in the operations.
        index: usize,
    },
    /// The workload appended this element more than once, so its presence proves nothing.
    RepeatedElement {
        /// The element's id.
        element: u64,
    },
    /// No read completed.
    NoFinalRead,
}

impl From<HistoryError> for AppendError {
    fn from(error: HistoryError) -> AppendError {
        AppendError::History(error)
    }
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::History(error) => write!(f, "{error}"),
            AppendError::MixedKeys { index } => {
                write!(f, "operation {index} is on another key than operation 0")
            }
            AppendError::UnexpectedCall { index } => {
                write!(f, "operation {index} is neither an append nor a read")
            }
            AppendError::MalformedAppend { index } => {
                write!(f, "operation {index} does not append exactly one element")
            }
            AppendError::RepeatedElement { element } => {
                write!(f, "element {element} was appended more than once")
            }
            AppendError::NoFinalRead => f.write_str("no read of the key completed"),
        }
    }
}

impl std::error::Error for AppendError {}

/// One append, as far as the check cares.
struct Appended {
    /// When it was invoked: it cannot have landed earlier.
    invoke: u64,
    /// When it was acknowledged, if it was: it landed by then.
    complete: Option<u64>,
}

/// Checks the appends and the final read of one key. `key_ops` holds the key's appends (each
/// of one [`element`]) and its reads: the completed read invoked last is the final read, the
/// others are ignored. Any other call is an error.
pub fn check_appends(key_ops: &[Operation]) -> Result<AppendReport, AppendError> {
    history::validate(key_ops)?;
    let Some(first) = key_ops.first() else {
        return Err(AppendError::NoFinalRead);
    };
    let key = first.call.key();
    let mut appended: HashMap<u64, Appended> = HashMap::new();
    // (invoke, complete, value) of the final read so far.
    let mut read: Option<(u64, u64, &Option<Vec<u8>>)> = None;
    for (index, op) in key_ops.iter().enumerate() {
        if op.call.key() != key {
            return Err(AppendError::MixedKeys { index });
        }
        match (&op.call, &op.outcome) {
            (Call::Append { value, .. }, _) => {
                let [Token::Element(id)] = parse(value)[..] else {
                    return Err(AppendError::MalformedAppend { index });
                };
                let append = Appended {
                    invoke: op.invoke,
                    complete: op.complete(),
                };
                if appended.insert(id, append).is_some() {
                    return Err(AppendError::RepeatedElement { element: id });
                }
            }
            (Call::Get { .. }, Outcome::Ok { at, value }) => {
                if read.is_none_or(|(invoke, complete, _)| (op.invoke, *at) > (invoke, complete)) {
                    read = Some((op.invoke, *at, value));
                }
            }
            (Call::Get { .. }, Outcome::Unknown) => {}
            _ => return Err(AppendError::UnexpectedCall { index }),
        }
    }
    let Some((read_invoke, read_complete, value)) = read else {
        return Err(AppendError::NoFinalRead);
    };

    let mut counts: HashMap<u64, usize> = HashMap::new();
    let mut present = Vec::new();
    let mut phantom = Vec::new();
    let mut read_elements = 0;
    for token in parse(value.as_deref().unwrap_or_default()) {
        let id = match token {
            Token::Element(id) => id,
            Token::Garbage { offset, bytes } => {
                phantom.push(Phantom::Garbage { offset, bytes });
                continue;
            }
        };
        read_elements += 1;
        let count = counts.entry(id).or_default();
        *count += 1;
        if *count > 1 {
            continue;
        }
        match appended.get(&id) {
            None => phantom.push(Phantom::NeverAppended { element: id }),
            Some(append) if append.invoke > read_complete => {
                phantom.push(Phantom::AppendedAfterRead { element: id });
            }
            Some(append) => present.push((id, append)),
        }
    }

    let mut duplicated: Vec<Duplicate> = counts
        .iter()
        .filter(|&(_, &count)| count > 1)
        .map(|(&element, &count)| Duplicate { element, count })
        .collect();
    duplicated.sort_by_key(|duplicate| duplicate.element);
    let mut lost: Vec<u64> = appended
        .iter()
        .filter(|(id, append)| {
            append.complete.is_some_and(|done| done < read_invoke) && !counts.contains_key(id)
        })
        .map(|(&id, _)| id)
        .collect();
    lost.sort_unstable();

    // Walking the read backwards, remember the later element acknowledged earliest: if it was
    // acknowledged before this one was invoked, this one should have come after it.
    let mut order = Vec::new();
    let mut earliest_later: Option<(u64, u64)> = None;
    for &(id, append) in present.iter().rev() {
        if let Some((done, later)) = earliest_later {
            if done < append.invoke {
                order.push(OrderViolation {
                    first: later,
                    second: id,
                });
            }
        }
        if let Some(done) = append.complete {
            if earliest_later.is_none_or(|(earliest, _)| done < earliest) {
                earliest_later = Some((done, id));
            }
        }
    }
    order.reverse();

    let unknown = appended.values().filter(|a| a.complete.is_none()).count();
    let unknown_present = appended
        .iter()
        .filter(|(id, append)| append.complete.is_none() && counts.contains_key(id))
        .count();
    Ok(AppendReport {
        key: key.to_vec(),
        read: read_elements,
        acknowledged: appended.len() - unknown,
        unknown,
        unknown_present,
        lost,
        duplicated,
        phantom,
        order,
    })
}

/// One piece of an append-set value.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    /// A well-formed element.
    Element(u64),
    /// Anything else, up to and including the next `,`.
    Garbage {
        /// Where it starts in the value.
        offset: usize,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

/// Splits `value` into elements and garbage.
fn parse(value: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut offset = 0;
    while offset < value.len() {
        let rest = &value[offset..];
        let (piece, length) = match rest.iter().position(|&byte| byte == b',') {
            Some(comma) => (&rest[..comma], comma + 1),
            None => (rest, rest.len()),
        };
        let id = (length > piece.len()).then(|| element_id(piece)).flatten();
        tokens.push(match id {
            Some(id) => Token::Element(id),
            None => Token::Garbage {
                offset,
                bytes: rest[..length].to_vec(),
            },
        });
        offset += length;
    }
    tokens
}

/// The id whose [`element`] is `digits` followed by `,`, if any (no sign, no leading zeros).
fn element_id(digits: &[u8]) -> Option<u64> {
    let id: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (id.to_string().as_bytes() == digits).then_some(id)
}

impl fmt::Display for AppendReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "appends to {}: {} ({} elements read; {} appends acknowledged, {} unknown of which {} \
             present)",
            Bytes(&self.key),
            if self.is_ok() { "ok" } else { "FAILED" },
            self.read,
            self.acknowledged,
            self.unknown,
            self.unknown_present,
        )?;
        if !self.lost.is_empty() {
            writeln!(f, "  lost: {}", list(self.lost.iter()))?;
        }
        if !self.duplicated.is_empty() {
            let shown = self
                .duplicated
                .iter()
                .map(|d| format!("{}×{}", d.element, d.count));
            writeln!(f, "  duplicated: {}", list(shown))?;
        }
        if !self.phantom.is_empty() {
            let shown = self.phantom.iter().map(|phantom| match phantom {
                Phantom::NeverAppended { element } => format!("{element} (never appended)"),
                Phantom::AppendedAfterRead { element } => {
                    format!("{element} (appended after the read)")
                }
                Phantom::Garbage { offset, bytes } => {
                    format!("{} at byte {offset}", Bytes(bytes))
                }
            });
            writeln!(f, "  phantom: {}", list(shown))?;
        }
        if !self.order.is_empty() {
            let shown = self
                .order
                .iter()
                .map(|violation| format!("{} before {}", violation.second, violation.first));
            writeln!(
                f,
                "  out of order (read first, though acknowledged second before it began): {}",
                list(shown)
            )?;
        }
        Ok(())
    }
}

/// The first few of `items`, comma-separated, with a count of the rest.
fn list<T: fmt::Display>(items: impl ExactSizeIterator<Item = T>) -> String {
    /// How many items a report line shows.
    const SHOWN: usize = 20;
    let total = items.len();
    let mut text = items
        .take(SHOWN)
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if total > SHOWN {
        text.push_str(&format!(" … and {} more", total - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An acknowledged append of element `id` over `[invoke, complete]`.
    fn acked(id: u64, invoke: u64, complete: u64) -> Operation {
        Operation::ok(id, Call::append("k", element(id)), invoke, complete, None)
    }

    /// An append of element `id` invoked at `invoke` whose outcome is unknown.
    fn unknown(id: u64, invoke: u64) -> Operation {
        Operation::unknown(id, Call::append("k", element(id)), invoke)
    }

    /// The final read over `[invoke, complete]` returning `value`.
    fn read(invoke: u64, complete: u64, value: &str) -> Operation {
        Operation::ok(99, Call::get("k"), invoke, complete, Some(value.into()))
    }

    /// The report on `ops`, printed.
    fn checked(ops: &[Operation]) -> AppendReport {
        let report = check_appends(ops).expect("well-formed operations");
        println!("{report}");
        report
    }

    #[test]
    fn element_round_trips() {
        assert_eq!(element(17), b"17,");
        assert_eq!(parse(&element(0)), [Token::Element(0)]);
        assert_eq!(parse(&element(u64::MAX)), [Token::Element(u64::MAX)]);
        assert_eq!(parse(b""), []);
        assert_eq!(
            parse(b"1,x,07,+2,,3"),
            [
                Token::Element(1),
                Token::Garbage {
                    offset: 2,
                    bytes: b"x,".to_vec()
                },
                Token::Garbage {
                    offset: 4,
                    bytes: b"07,".to_vec()
                },
                Token::Garbage {
                    offset: 7,
                    bytes: b"+2,".to_vec()
                },
                Token::Garbage {
                    offset: 10,
                    bytes: b",".to_vec()
                },
                Token::Garbage {
                    offset: 11,
                    bytes: b"3".to_vec()
                },
            ]
        );
    }

    #[test]
    fn all_present_in_order_is_ok() {
        let ops = [
            acked(1, 0, 10),
            acked(2, 5, 15),
            acked(3, 20, 30),
            read(40, 50, "2,1,3,"),
        ];
        let report = checked(&ops);
        assert!(report.is_ok());
        assert_eq!((report.read, report.acknowledged), (3, 3));
        // Nothing appended and an absent key is fine too.
        let empty = [Operation::ok(1, Call::get("k"), 0, 1, None)];
        assert!(checked(&empty).is_ok());
    }

    #[test]
    fn lost_append_is_reported() {
        let ops = [
            acked(1, 0, 10),
            acked(2, 5, 15),
            // Acknowledged while the read ran: may be missing.
            acked(3, 20, 45),
            read(40, 50, "1,"),
        ];
        let report = checked(&ops);
        assert_eq!(report.lost, [2]);
        assert!(!report.is_ok());
        let text = report.to_string();
        assert!(
            text.contains("FAILED") && text.contains("lost: 2\n"),
            "{text}"
        );
    }

    #[test]
    fn duplicated_element_is_reported() {
        let ops = [acked(1, 0, 10), unknown(2, 5), read(40, 50, "1,2,1,2,")];
        let report = checked(&ops);
        assert_eq!(
            report.duplicated,
            [
                Duplicate {
                    element: 1,
                    count: 2
                },
                Duplicate {
                    element: 2,
                    count: 2
                }
            ]
        );
        assert!(report.lost.is_empty() && report.phantom.is_empty() && report.order.is_empty());
    }

    #[test]
    fn phantom_elements_and_garbage_are_reported() {
        let ops = [
            acked(1, 0, 10),
            // Invoked after the read returned: cannot be in it.
            acked(2, 60, 70),
            read(40, 50, "1,7,2,oops,3"),
        ];
        let report = checked(&ops);
        assert_eq!(
            report.phantom,
            [
                Phantom::NeverAppended { element: 7 },
                Phantom::AppendedAfterRead { element: 2 },
                Phantom::Garbage {
                    offset: 6,
                    bytes: b"oops,".to_vec()
                },
                Phantom::Garbage {
                    offset: 11,
                    bytes: b"3".to_vec()
                },
            ]
        );
        assert!(report.lost.is_empty() && report.duplicated.is_empty());
    }

    #[test]
    fn real_time_order_violation_is_reported() {
        let ops = [
            acked(1, 0, 10),
            acked(2, 20, 30),
            // Concurrent with 2: either order is fine.
            acked(3, 25, 35),
            // Unknown outcome, but invoked after 1 was acknowledged: if it landed, it is after 1.
            unknown(4, 12),
            read(40, 50, "4,3,2,1,"),
        ];
        let report = checked(&ops);
        assert_eq!(
            report.order,
            [
                OrderViolation {
                    first: 1,
                    second: 4
                },
                OrderViolation {
                    first: 1,
                    second: 3
                },
                OrderViolation {
                    first: 1,
                    second: 2
                },
            ]
        );
        assert!(report.lost.is_empty() && report.duplicated.is_empty());
        let fine = [acked(1, 0, 10), acked(2, 20, 30), acked(3, 25, 35)];
        let mut ops = fine.to_vec();
        ops.push(read(40, 50, "1,3,2,"));
        assert!(checked(&ops).is_ok());
    }

    #[test]
    fn unknown_elements_may_be_present_once_or_absent() {
        let present = [acked(1, 0, 10), unknown(2, 5), read(40, 50, "2,1,")];
        let report = checked(&present);
        assert!(report.is_ok());
        assert_eq!((report.unknown, report.unknown_present), (1, 1));
        let absent = [acked(1, 0, 10), unknown(2, 5), read(40, 50, "1,")];
        let report = checked(&absent);
        assert!(report.is_ok());
        assert_eq!((report.unknown, report.unknown_present), (1, 0));
        let twice = [acked(1, 0, 10), unknown(2, 5), read(40, 50, "2,1,2,")];
        assert!(!checked(&twice).is_ok());
    }

    #[test]
    fn final_read_is_the_last_completed_read() {
        let ops = [
            read(1, 2, ""),
            acked(1, 3, 4),
            Operation::unknown(98, Call::get("k"), 60),
            read(40, 50, "1,"),
            read(5, 6, "garbage"),
        ];
        assert!(checked(&ops).is_ok());
    }

    #[test]
    fn unusable_operations_are_errors() {
        assert_eq!(check_appends(&[]), Err(AppendError::NoFinalRead));
        assert_eq!(
            check_appends(&[acked(1, 0, 1)]),
            Err(AppendError::NoFinalRead)
        );
        let other_key = Operation::ok(1, Call::get("other"), 0, 1, None);
        assert_eq!(
            check_appends(&[acked(1, 0, 1), other_key]),
            Err(AppendError::MixedKeys { index: 1 })
        );
        let put = Operation::ok(1, Call::put("k", "1,"), 0, 1, None);
        assert_eq!(
            check_appends(&[put]),
            Err(AppendError::UnexpectedCall { index: 0 })
        );
        let two = Operation::ok(1, Call::append("k", "1,2,"), 0, 1, None);
        assert_eq!(
            check_appends(&[two]),
            Err(AppendError::MalformedAppend { index: 0 })
        );
        assert_eq!(
            check_appends(&[acked(1, 0, 1), acked(1, 2, 3)]),
            Err(AppendError::RepeatedElement { element: 1 })
        );
        assert!(matches!(
            check_appends(&[acked(1, 5, 4)]),
            Err(AppendError::History(_))
        ));
    }
}
