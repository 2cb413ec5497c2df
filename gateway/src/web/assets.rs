//! The web app's files, compiled into the binary from `gateway/web/`.

/// One embedded file.
pub(crate) struct Asset {
    /// Its file name (the URL's last segment).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its content.
    pub bytes: &'static [u8],
}

impl Asset {
    /// A strong ETag from the content (FNV-1a: stable across builds and
    /// processes, so every node of a cluster gives the same one).
    pub fn etag(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("\"{hash:016x}\"")
    }
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../../web/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the app.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("manifest.webmanifest", "application/manifest+json"),
    asset!("sw.js", JS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("connection.js", JS),
    asset!("outbox.js", JS),
    asset!("view.js", JS),
    asset!("format.js", JS),
    asset!("notify.js", JS),
];

/// The asset of that name.
pub(crate) fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_there_and_tagged_apart() {
        let index = find("index.html").expect("index");
        assert!(std::str::from_utf8(index.bytes).is_ok_and(|s| s.contains("app.js")));
        let tags: std::collections::BTreeSet<_> = ASSETS.iter().map(Asset::etag).collect();
        assert_eq!(tags.len(), ASSETS.len());
        assert!(find("../Cargo.toml").is_none());
    }
}
