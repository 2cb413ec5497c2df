//! FoundationDB backend (placeholder).
