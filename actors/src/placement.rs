//! Where a conversation lives: rendezvous (highest random weight) hashing of
//! its id over the live nodes' names.
//!
//! Every node computes the same answer from the same membership view, and
//! when a node joins or leaves only the conversations whose highest-scoring
//! node changed move: about 1/N of them.

use sha2::{Digest, Sha256};
use storage::chat::ConvId;

/// The weight of `node` for `key`: the first 8 bytes of SHA-256 over both.
fn weight(key: &[u8], node: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(key);
    h.update([0]);
    h.update(node.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The node among `nodes` that owns `key`; `None` when there is no node.
pub fn owner<'a>(key: &[u8], nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes
        .into_iter()
        .max_by_key(|node| (weight(key, node), *node))
}

/// The home node of a conversation.
pub fn conversation_home<'a>(
    conv_id: ConvId,
    nodes: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    owner(format!("conv:{conv_id}").as_bytes(), nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_evenly_and_moves_little() {
        let three = ["a", "b", "c"];
        let mut counts = std::collections::HashMap::new();
        for id in 0..3000u64 {
            let home = conversation_home(id, three).expect("a node");
            *counts.entry(home).or_insert(0) += 1;
        }
        for n in counts.values() {
            assert!((800..1200).contains(n), "{counts:?}");
        }
        // Removing "c" moves only c's conversations.
        for id in 0..3000u64 {
            let before = conversation_home(id, three).expect("a node");
            let after = conversation_home(id, ["a", "b"]).expect("a node");
            if before != "c" {
                assert_eq!(before, after);
            }
        }
        assert_eq!(conversation_home(1, std::iter::empty()), None);
    }
}
