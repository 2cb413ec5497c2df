//! The chat schema layer: typed operations over any backend.
