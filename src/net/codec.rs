//! The wire encoding: bincode 2 through serde, with a size limit so that a corrupt length
//! prefix cannot make a decoder allocate gigabytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest message any node accepts or decodes (a value limit of 8 MiB plus headroom, and
/// state transfers, which are bigger, are chunked below this).
pub const MAX_MESSAGE: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE>()
}

/// A body that is not a valid message of the expected type.
#[derive(Debug, Clone, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct DecodeError(pub String);

/// Encode a message. Encoding our own types into a Vec cannot fail short of running out of
/// memory, so no error is returned.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    match bincode::serde::encode_to_vec(value, config()) {
        Ok(bytes) => bytes,
        Err(err) => panic!("encoding a message into memory failed: {err}"),
    }
}

/// Decode a message, rejecting trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|err| DecodeError(err.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError(format!(
            "{} trailing bytes after the message",
            bytes.len() - used
        )));
    }
    Ok(value)
}
