//! Test support for Parley: real `parley` processes on loopback and real
//! clients speaking the public HTTP and WebSocket protocol to them.
//!
//! - [`node`]: start, kill (`SIGKILL`), pause (`SIGSTOP`), resume and
//!   restart node processes, each on free ports, sharing one temporary
//!   embedded store per cluster;
//! - [`client`]: an HTTP API client and a WebSocket client that records
//!   every frame it receives;
//! - [`store`]: which store the nodes use, SQLite or FoundationDB
//!   (`PARLEY_TEST_STORE`);
//! - [`wait`]: waiting on conditions with a timeout instead of sleeping;
//! - [`traffic`]: a driver of paced, resending, reconnecting clients that
//!   records what they see, and checks it against the stored histories.
//!
//! - [`browser`]: chromium through chromedriver, and finding Firefox, for
//!   the browser tests.
//! - [`fdb`]: a FoundationDB server of a test's own (on a namespace's
//!   address, or with TLS).
//! - [`netns`]: nodes on hosts of their own (network namespaces on a
//!   bridge), so the fault tests can cut the links between them.
//!
//! Everything targets 127.0.0.1, or addresses that exist only inside the
//! namespaces a test creates.

pub mod browser;
pub mod client;
pub mod fdb;
pub mod netns;
pub mod node;
pub mod store;
pub mod traffic;
pub mod wait;
