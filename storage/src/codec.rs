//! Value encoding: serde + bincode 2, one configuration for every family.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value for storage. Encoding our own types cannot fail short of
/// a bug, which is reported as corruption of that family.
pub(crate) fn encode<T: Serialize>(family: &'static str, value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| Error::Corrupt {
        family,
        reason: e.to_string(),
    })
}

/// Decodes a stored value; garbage is a typed [`Error::Corrupt`], never a panic.
pub(crate) fn decode<T: DeserializeOwned>(family: &'static str, bytes: &[u8]) -> Result<T> {
    let (value, _) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| Error::Corrupt {
            family,
            reason: e.to_string(),
        })?;
    Ok(value)
}
