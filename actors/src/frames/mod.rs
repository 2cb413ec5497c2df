//! The WebSocket protocol's types, in one place: what clients send
//! ([`client`]), what the server sends ([`server`]), and the error codes
//! both HTTP and WebSocket errors carry. docs/PROTOCOL.md describes each
//! frame with an example.

mod client;
mod server;

pub use client::{parse_watermarks, reference_of, ClientFrame};
pub use server::{ConvError, ErrorCode, FrameKind, ServerFrame, STORAGE_FULL};
