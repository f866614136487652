//! The one binary encoding used on disk and on the wire: bincode 2 (serde), with a decode limit
//! so that damaged or hostile bytes get an error instead of a huge allocation.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest value any decode will allocate for: 1 GiB.
pub const DECODE_LIMIT: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Bytes that are not a valid encoding of the expected type.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("cannot encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("{0} unexpected trailing bytes after the value")]
    Trailing(usize),
}

/// Encodes a value. Fails only for types serde cannot describe to bincode (a bug, not input).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes exactly one value from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Decodes exactly one value from `bytes`, borrowing its strings from them; trailing bytes are
/// an error.
pub fn decode_borrowed<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::borrow_decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Encodes into a writer (snapshots).
pub fn encode_into<T: Serialize, W: std::io::Write>(
    value: &T,
    w: &mut W,
) -> Result<usize, CodecError> {
    Ok(bincode::serde::encode_into_std_write(value, w, config())?)
}

/// Decodes one value from a reader (snapshots).
pub fn decode_from<T: DeserializeOwned, R: std::io::Read>(r: &mut R) -> Result<T, CodecError> {
    Ok(bincode::serde::decode_from_std_read(r, config())?)
}
