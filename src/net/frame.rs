//! The framed wire format of persistent connections: after a four-byte preamble, a connection
//! carries calls one way and answers the other, each a length-prefixed frame with an id, so
//! many calls can be in flight on one connection and their answers can come back in any order.
//!
//! ```text
//! preamble  b"VKF1"                                      (client → server, once)
//! call      [len u32][id u64][path len u8][path][body]   (client → server)
//! answer    [len u32][id u64][status u16][body]          (server → client)
//! ```
//!
//! Integers are little-endian; `len` counts the bytes after itself. The first call of a
//! connection is [`HELLO`], whose body is the `Authorization` header value an HTTP request would
//! carry (empty without a secret); the server answers it 200, or 401 and closes. A body is what
//! the same RPC carries over HTTP (bincode), and a status is the HTTP status it would have had.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::MAX_MESSAGE;

/// The first bytes a framed connection sends: no HTTP request starts with them.
pub const MAGIC: [u8; 4] = *b"VKF1";
/// The path of a connection's first call, which proves the cluster secret.
pub const HELLO: &str = "/frames/hello";
/// Most bytes in one frame after its length: a message of [`MAX_MESSAGE`] and its header.
pub const MAX_FRAME: usize = MAX_MESSAGE + 512;

/// Bytes of the length prefix.
const LEN: usize = 4;
/// Bytes of a call's header after the length: id and path length.
const CALL_HEADER: usize = 8 + 1;
/// Bytes of an answer's header after the length: id and status.
const ANSWER_HEADER: usize = 8 + 2;

/// A frame that breaks the format: the connection cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is over [`MAX_FRAME`].
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The frame is shorter than its header says.
    #[error("a frame of {0} bytes is too short for its header")]
    Short(usize),
    /// A call's path is not UTF-8.
    #[error("a call's path is not UTF-8")]
    BadPath,
}

/// One call, as the server reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Chosen by the client; its answer carries it back.
    pub id: u64,
    /// The RPC, named as its HTTP path.
    pub path: String,
    /// The RPC's body.
    pub body: Bytes,
}

/// One answer, as the client reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The id of the call it answers.
    pub id: u64,
    /// The HTTP status the call would have had.
    pub status: u16,
    /// The reply body.
    pub body: Bytes,
}

/// Append a call to `out`. `path` is at most 255 bytes (ours are constants).
pub fn encode_call(out: &mut BytesMut, id: u64, path: &str, body: &[u8]) {
    out.reserve(LEN + CALL_HEADER + path.len() + body.len());
    encode_call_header(out, id, path, body.len());
    out.put_slice(body);
}

/// Append the header of a call whose body of `body_len` bytes follows on the wire (so a big
/// body is written from where it is, not copied behind its header).
pub fn encode_call_header(out: &mut BytesMut, id: u64, path: &str, body_len: usize) {
    let path = &path.as_bytes()[..path.len().min(u8::MAX as usize)];
    out.put_u32_le((CALL_HEADER + path.len() + body_len) as u32);
    out.put_u64_le(id);
    out.put_u8(path.len() as u8);
    out.put_slice(path);
}

/// Append an answer to `out`.
pub fn encode_answer(out: &mut BytesMut, id: u64, status: u16, body: &[u8]) {
    out.reserve(LEN + ANSWER_HEADER + body.len());
    out.put_u32_le((ANSWER_HEADER + body.len()) as u32);
    out.put_u64_le(id);
    out.put_u16_le(status);
    out.put_slice(body);
}

/// The next whole frame in `input` (taken out of it), its bytes after the length prefix, or
/// `None` if it has not all arrived yet. `input` grows to hold a frame that is on its way.
fn next_frame(input: &mut BytesMut, header: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(prefix) = input.get(..LEN) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len < header {
        return Err(FrameError::Short(len));
    }
    if input.len() < LEN + len {
        input.reserve(LEN + len - input.len());
        return Ok(None);
    }
    input.advance(LEN);
    Ok(Some(input.split_to(len).freeze()))
}

/// The next whole call in `input`, if it has arrived.
pub fn decode_call(input: &mut BytesMut) -> Result<Option<Call>, FrameError> {
    let Some(mut frame) = next_frame(input, CALL_HEADER)? else {
        return Ok(None);
    };
    let len = frame.len();
    let id = frame.get_u64_le();
    let path_len = frame.get_u8() as usize;
    if frame.len() < path_len {
        return Err(FrameError::Short(len));
    }
    let path = frame.split_to(path_len);
    let path = std::str::from_utf8(&path).map_err(|_| FrameError::BadPath)?;
    Ok(Some(Call {
        id,
        path: path.to_string(),
        body: frame,
    }))
}

/// The next whole answer in `input`, if it has arrived.
pub fn decode_answer(input: &mut BytesMut) -> Result<Option<Answer>, FrameError> {
    let Some(mut frame) = next_frame(input, ANSWER_HEADER)? else {
        return Ok(None);
    };
    let id = frame.get_u64_le();
    let status = frame.get_u16_le();
    Ok(Some(Answer {
        id,
        status,
        body: frame,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_answers_come_back_as_they_went_even_a_byte_at_a_time() {
        let mut wire = BytesMut::new();
        encode_call(&mut wire, 7, "/kv/request", b"body");
        encode_call(&mut wire, u64::MAX, "/p", b"");
        let mut input = BytesMut::new();
        let mut calls = Vec::new();
        for byte in wire {
            input.put_u8(byte);
            while let Some(call) = decode_call(&mut input).expect("a valid frame") {
                calls.push(call);
            }
        }
        assert_eq!(
            calls,
            vec![
                Call {
                    id: 7,
                    path: "/kv/request".into(),
                    body: Bytes::from_static(b"body"),
                },
                Call {
                    id: u64::MAX,
                    path: "/p".into(),
                    body: Bytes::new(),
                },
            ]
        );
        assert!(input.is_empty());

        let mut wire = BytesMut::new();
        encode_answer(&mut wire, 3, 200, b"reply");
        encode_answer(&mut wire, 4, 401, b"");
        let first = decode_answer(&mut wire).expect("valid");
        let second = decode_answer(&mut wire).expect("valid");
        assert_eq!(
            (first, second),
            (
                Some(Answer {
                    id: 3,
                    status: 200,
                    body: Bytes::from_static(b"reply"),
                }),
                Some(Answer {
                    id: 4,
                    status: 401,
                    body: Bytes::new(),
                })
            )
        );
        assert_eq!(decode_answer(&mut wire), Ok(None));
    }

    #[test]
    fn frames_that_break_the_format_are_refused_by_name() {
        let mut huge = BytesMut::new();
        huge.put_u32_le(MAX_FRAME as u32 + 1);
        assert_eq!(
            decode_call(&mut huge),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        let mut short = BytesMut::new();
        short.put_u32_le(3);
        short.put_slice(b"abc");
        assert_eq!(decode_answer(&mut short), Err(FrameError::Short(3)));
        // A path longer than what follows it.
        let mut cut = BytesMut::new();
        cut.put_u32_le(10);
        cut.put_u64_le(1);
        cut.put_u8(200);
        cut.put_u8(b'/');
        assert_eq!(decode_call(&mut cut), Err(FrameError::Short(10)));
        let mut bad = BytesMut::new();
        bad.put_u32_le(11);
        bad.put_u64_le(1);
        bad.put_u8(2);
        bad.put_slice(&[0xff, 0xfe]);
        assert_eq!(decode_call(&mut bad), Err(FrameError::BadPath));
    }

    #[test]
    fn a_frame_on_its_way_waits_and_reserves_room_for_itself() {
        let mut wire = BytesMut::new();
        encode_answer(&mut wire, 1, 200, &[7u8; 10_000]);
        let mut input = BytesMut::from(&wire[..100]);
        assert_eq!(decode_answer(&mut input), Ok(None));
        assert!(input.capacity() >= wire.len());
        input.extend_from_slice(&wire[100..]);
        let answer = decode_answer(&mut input).expect("valid").expect("whole");
        assert_eq!(answer.body.len(), 10_000);
    }
}
