//! Typed messages from a container's set-up process to the front end that started it
//! (the CLI's supervisor today, an OCI-runtime front end later): one JSON object per
//! line on a pipe. The set-up process is the container's own and may be the user's
//! code after a failed exec, so what arrives is untrusted: lines that do not parse are
//! dropped, never trusted, and no line can make the reader panic.

use super::probe::OverlayProbe;
use serde::{Deserialize, Serialize};

/// One message of the set-up process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "lowercase")]
pub enum Message {
    /// A set-up step finished at `ns` (CLOCK_MONOTONIC).
    Time { step: String, ns: u64 },
    /// The native overlay attempt's outcome, for the per-boot probe cache.
    Probe { probe: OverlayProbe },
    /// Something the user should know; the container still starts.
    Notice { text: String },
    /// Set-up failed: exit with `code` after printing `msg`.
    Error { code: i32, msg: String },
    /// A holder is in place and detached.
    Ready,
}

impl Message {
    /// The line to write (JSON and a newline; JSON strings never contain a raw newline).
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain enums cannot fail; an empty object is a safe fallback
        // (the reader drops it).
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        v.push(b'\n');
        v
    }

    /// Several messages as one buffer (written with one `write`).
    pub fn encode_all(msgs: &[Message]) -> Vec<u8> {
        msgs.iter().flat_map(Message::encode).collect()
    }
}

/// All well-formed messages in `bytes`, in order; malformed lines are dropped.
pub fn decode_all(bytes: &[u8]) -> Vec<Message> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

/// The first error message, if any.
pub fn first_error(msgs: &[Message]) -> Option<(i32, &str)> {
    msgs.iter().find_map(|m| match m {
        Message::Error { code, msg } => Some((*code, msg.as_str())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_garbage() {
        let msgs = vec![
            Message::Time {
                step: "fork".into(),
                ns: 10,
            },
            Message::Probe {
                probe: OverlayProbe::Native,
            },
            Message::Probe {
                probe: OverlayProbe::Unsupported("EINVAL: bad\nline".into()),
            },
            Message::Notice {
                text: "hello there".into(),
            },
            Message::Error {
                code: 127,
                msg: "exec x: not found".into(),
            },
            Message::Ready,
        ];
        let mut bytes = Message::encode_all(&msgs);
        bytes.extend_from_slice(b"garbage\n{\"m\":\"time\"}\n\xff\xfe\n{\"m\":\"ready\"");
        assert_eq!(decode_all(&bytes), msgs);
        assert_eq!(first_error(&msgs), Some((127, "exec x: not found")));
        assert_eq!(first_error(&msgs[..2]), None);
        assert!(decode_all(b"").is_empty());
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<String>(), any::<u64>()).prop_map(|(step, ns)| Message::Time { step, ns }),
            any::<String>().prop_map(|w| Message::Probe {
                probe: OverlayProbe::Unsupported(w)
            }),
            Just(Message::Probe {
                probe: OverlayProbe::Native
            }),
            any::<String>().prop_map(|text| Message::Notice { text }),
            (any::<i32>(), any::<String>()).prop_map(|(code, msg)| Message::Error { code, msg }),
            Just(Message::Ready),
        ]
    }

    proptest! {
        #[test]
        fn any_messages_round_trip(msgs in proptest::collection::vec(message(), 0..8)) {
            prop_assert_eq!(decode_all(&Message::encode_all(&msgs)), msgs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&bytes);
        }

        #[test]
        fn a_torn_tail_costs_only_itself(msgs in proptest::collection::vec(message(), 1..6), cut in 2usize..20) {
            let mut bytes = Message::encode_all(&msgs);
            let last = Message::Notice { text: "tail".into() }.encode();
            bytes.extend_from_slice(&last[..last.len().saturating_sub(cut).max(1)]);
            prop_assert_eq!(decode_all(&bytes), msgs);
        }
    }
}
