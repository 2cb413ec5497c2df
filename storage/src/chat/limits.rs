//! Input rules of the chat layer, explicit and configurable.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Size and shape limits on user input. Every operation checks the fields it
/// takes before it writes anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Longest user name, in characters. Default 32. Names are letters,
    /// digits, `_`, `.` and `-`, at least 3 characters.
    pub max_user_name_chars: usize,
    /// Shortest accepted password, in characters. Default 8.
    pub min_password_chars: usize,
    /// Longest accepted password, in bytes (bounds hashing work). Default 1024.
    pub max_password_bytes: usize,
    /// Longest group name, in characters. Default 100.
    pub max_group_name_chars: usize,
    /// Longest group description, in characters. Default 1000.
    pub max_description_chars: usize,
    /// Longest message body, in bytes of UTF-8. Default 4096.
    pub max_message_bytes: usize,
    /// Longest client message id, in bytes. Default 64.
    pub max_client_msg_id_bytes: usize,
    /// Most members a group may have. Default 10 000.
    pub max_group_members: usize,
    /// Largest page a listing returns. Default 200.
    pub max_page_size: usize,
    /// Longest push endpoint URL, in bytes. Default 2048.
    pub max_push_endpoint_bytes: usize,
    /// Most push subscriptions per user. Default 10.
    pub max_push_subscriptions: usize,
    /// Most devices (delivery cursors) kept per user; the least recently
    /// connected one is forgotten beyond it. Default 32.
    pub max_devices: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_user_name_chars: 32,
            min_password_chars: 8,
            max_password_bytes: 1024,
            max_group_name_chars: 100,
            max_description_chars: 1000,
            max_message_bytes: 4096,
            max_client_msg_id_bytes: 64,
            max_group_members: 10_000,
            max_page_size: 200,
            max_push_endpoint_bytes: 2048,
            max_push_subscriptions: 10,
            max_devices: 32,
        }
    }
}

/// FoundationDB's largest value, in bytes: no record may exceed it.
pub const MAX_VALUE_BYTES: usize = 100_000;
/// FoundationDB's largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 10_000;
/// Room for a record's fixed fields and encoding around its variable ones.
const RECORD_OVERHEAD_BYTES: usize = 512;

impl Limits {
    /// Refuses limits under which a record could exceed FoundationDB's value
    /// or key size (checked at [`super::ChatStore::open`]): every field a
    /// client fills is bounded by these limits, so with limits that pass,
    /// an oversized value or key cannot be built. A character is counted as
    /// its largest UTF-8 encoding, 4 bytes.
    pub fn check_store_bounds(&self) -> Result<()> {
        let values = [
            (
                "max_message_bytes + max_client_msg_id_bytes (a message)",
                self.max_message_bytes + self.max_client_msg_id_bytes,
            ),
            (
                "max_group_name_chars + max_description_chars (a group)",
                4 * (self.max_group_name_chars + self.max_description_chars),
            ),
            (
                "max_push_endpoint_bytes (a push subscription)",
                self.max_push_endpoint_bytes,
            ),
            ("max_user_name_chars (a user)", 4 * self.max_user_name_chars),
        ];
        for (what, bytes) in values {
            if bytes.saturating_add(RECORD_OVERHEAD_BYTES) > MAX_VALUE_BYTES {
                return Err(Error::invalid(
                    "limits",
                    format!("{what}: {bytes} bytes would not fit a {MAX_VALUE_BYTES}-byte value"),
                ));
            }
        }
        // The longest variable parts of keys: names (user index) and client
        // message ids (dedup index).
        let key = (4 * self.max_user_name_chars).max(self.max_client_msg_id_bytes);
        if key.saturating_add(RECORD_OVERHEAD_BYTES) > MAX_KEY_BYTES {
            return Err(Error::invalid(
                "limits",
                format!("a {key}-byte name or client message id would not fit a {MAX_KEY_BYTES}-byte key"),
            ));
        }
        Ok(())
    }

    pub(crate) fn user_name(&self, name: &str) -> Result<()> {
        let chars = name.chars().count();
        if chars < 3 || chars > self.max_user_name_chars {
            return Err(Error::invalid(
                "name",
                format!("must be 3 to {} characters", self.max_user_name_chars),
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
            || name.chars().any(super::names::is_deceptive)
        {
            return Err(Error::invalid(
                "name",
                "only letters, digits, '_', '.' and '-' are allowed",
            ));
        }
        Ok(())
    }

    pub(crate) fn password(&self, password: &str) -> Result<()> {
        if password.chars().count() < self.min_password_chars {
            return Err(Error::invalid(
                "password",
                format!("must be at least {} characters", self.min_password_chars),
            ));
        }
        if password.len() > self.max_password_bytes {
            return Err(Error::invalid(
                "password",
                format!("must be at most {} bytes", self.max_password_bytes),
            ));
        }
        Ok(())
    }

    pub(crate) fn phone(&self, phone: &str) -> Result<()> {
        let digits = phone.strip_prefix('+').unwrap_or(phone);
        if digits.len() < 4 || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::invalid(
                "phone",
                "must be 4 to 20 digits, optionally after a '+'",
            ));
        }
        Ok(())
    }

    /// A group name: free text on one line, without characters that make
    /// it display as something else (bidi overrides, zero-width).
    pub(crate) fn group_name(&self, name: &str) -> Result<()> {
        text("name", name, 1, self.max_group_name_chars)?;
        if name.chars().any(super::names::is_deceptive) {
            return Err(Error::invalid(
                "name",
                "must not contain line breaks, control, bidirectional-override or invisible characters",
            ));
        }
        Ok(())
    }

    pub(crate) fn description(&self, description: &str) -> Result<()> {
        text("description", description, 0, self.max_description_chars)
    }

    pub(crate) fn message(&self, body: &str, client_msg_id: &str) -> Result<()> {
        if body.trim().is_empty() {
            return Err(Error::invalid("body", "must not be empty"));
        }
        if body.len() > self.max_message_bytes {
            return Err(Error::invalid(
                "body",
                format!("must be at most {} bytes", self.max_message_bytes),
            ));
        }
        if client_msg_id.is_empty() || client_msg_id.len() > self.max_client_msg_id_bytes {
            return Err(Error::invalid(
                "client_msg_id",
                format!("must be 1 to {} bytes", self.max_client_msg_id_bytes),
            ));
        }
        Ok(())
    }

    /// Clamps a requested page size to `1..=max_page_size`.
    pub fn page(&self, requested: usize) -> usize {
        requested.clamp(1, self.max_page_size)
    }
}

/// Free text: a length in characters and no control characters but newlines.
fn text(field: &'static str, value: &str, min: usize, max: usize) -> Result<()> {
    let chars = value.chars().count();
    if chars < min || chars > max || (min > 0 && value.trim().is_empty()) {
        return Err(Error::invalid(
            field,
            format!("must be {min} to {max} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}
