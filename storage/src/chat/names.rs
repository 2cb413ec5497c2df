//! What makes two names the same, and which characters no name may hold.
//!
//! User names are stored in Unicode NFKC form (so fullwidth `ｂｏｂ` *is*
//! `bob`) and looked up case-insensitively by [`name_key`]. Beyond that, a
//! name whose UTS #39 confusable [`skeleton`] equals an existing user's is
//! refused: `аlice` with a Cyrillic `а`, `paypa1` next to `paypal`, `rn`
//! next to `m`. Free-text names (groups) refuse control characters,
//! bidirectional overrides and invisible (zero-width) characters, which
//! make a name display as something else.

use unicode_normalization::UnicodeNormalization;

use super::{get, put, User, UserId};
use crate::{keys, Database, RangeOptions, Result};

/// Users indexed per transaction by [`index_existing`].
const INDEX_PAGE: usize = 500;

/// Gives every user of a store written before the skeleton index existed
/// their `user_by_skeleton` row (the first of two look-alikes keeps it),
/// then marks the store indexed. Idempotent; a no-op on an indexed store.
pub(crate) fn index_existing(db: &Database) -> Result<()> {
    let marker = keys::META.key(&(keys::meta::SKELETONS_INDEXED,));
    if db.read(|tx| tx.get(&marker))?.is_some() {
        return Ok(());
    }
    let (mut begin, end) = keys::USER.all();
    loop {
        let next = db.run(|tx| {
            let rows = tx.get_range(&begin, &end, RangeOptions::forward(INDEX_PAGE))?;
            for (_, value) in &rows {
                let user: User = crate::codec::decode(keys::USER.name, value)?;
                let skel = (&skeleton(&user.name),);
                if get::<UserId, _>(tx, keys::USER_BY_SKELETON, &skel)?.is_none() {
                    put(tx, keys::USER_BY_SKELETON, &skel, &user.id)?;
                }
            }
            Ok(rows.last().map(|(k, _)| {
                let mut past = k.clone();
                past.push(0x00);
                past
            }))
        })?;
        match next {
            Some(past) => begin = past,
            None => break,
        }
    }
    db.run(|tx| tx.set(&marker, &crate::codec::encode(keys::META.name, &true)?))
}

/// The NFKC form of a name, which is what is stored.
pub fn normalize(name: &str) -> String {
    name.nfkc().collect()
}

/// The case-insensitive lookup key of a user name: NFKC, then lowercase.
pub fn name_key(name: &str) -> String {
    normalize(name).to_lowercase()
}

/// The confusable skeleton of a user name (UTS #39 §4 on the lowercased
/// NFKC form, lowercased again since skeletons may map to capitals): two
/// names with the same skeleton look alike.
pub fn skeleton(name: &str) -> String {
    unicode_security::skeleton(&name_key(name))
        .collect::<String>()
        .to_lowercase()
}

/// Characters that change how text around them displays without showing
/// themselves: bidirectional embeddings, overrides and isolates, and
/// zero-width or otherwise invisible characters.
pub fn is_deceptive(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
        | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}' // bidi isolates
        | '\u{061C}'              // Arabic letter mark
        | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
        | '\u{180E}'              // Mongolian vowel separator
        | '\u{FEFF}'              // zero-width no-break space
        | '\u{00AD}'              // soft hyphen
        | '\u{034F}'              // combining grapheme joiner
        | '\u{FE00}'..='\u{FE0F}' // variation selectors
    ) || c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_share_a_skeleton() {
        assert_eq!(skeleton("alice"), skeleton("\u{0430}lice"));
        assert_eq!(skeleton("bob"), skeleton("ＢＯＢ"));
        assert_eq!(skeleton("paypal"), skeleton("paypa1"));
        assert_ne!(skeleton("alice"), skeleton("alicia"));
    }

    #[test]
    fn nfkc_folds_fullwidth() {
        assert_eq!(normalize("ｂｏｂ"), "bob");
        assert_eq!(name_key("ＢＯＢ"), "bob");
    }

    #[test]
    fn invisible_and_bidi_are_deceptive() {
        for c in ['\u{202E}', '\u{200B}', '\u{2066}', '\n', '\u{FEFF}'] {
            assert!(is_deceptive(c), "{c:?}");
        }
        for c in ['a', 'é', ' ', '-', '中'] {
            assert!(!is_deceptive(c), "{c:?}");
        }
    }
}
