//! WebSocket clients: connecting from a chosen loopback source address,
//! and reading the few frames the generator cares about cheaply.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A connected, authenticated client socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The run's time origin: every stamp is microseconds since it.
pub fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Microseconds since [`base`].
pub fn stamp_of(t: Instant) -> u64 {
    t.saturating_duration_since(base()).as_micros() as u64
}

/// Source addresses 127.0.0.2 ..= 127.0.0.(1+n): each has its own
/// ephemeral port range, so more than ~28k sockets can reach one server.
#[derive(Debug, Clone, Copy)]
pub struct SourceIps(pub u8);

impl SourceIps {
    /// The source address of connection `i` (round robin).
    pub fn of(&self, i: usize) -> Option<Ipv4Addr> {
        (self.0 > 0).then(|| Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(self.0)) as u8))
    }
}

/// Connects `ws://{addr}/ws?token=` from `src`, and waits for `hello`.
pub async fn connect(addr: SocketAddr, src: Option<Ipv4Addr>, token: &str) -> Result<Ws> {
    connect_with(addr, src, token, None).await
}

/// [`connect`], over TLS (`wss://`) with `tls`.
pub async fn connect_with(
    addr: SocketAddr,
    src: Option<Ipv4Addr>,
    token: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        socket
            .bind(SocketAddr::from((ip, 0)))
            .with_context(|| format!("binding {ip}"))?;
    }
    let stream = socket.connect(addr).await.context("TCP connect")?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (stream, scheme) = match tls {
        None => (MaybeTlsStream::Plain(stream), "ws"),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let stream = tls.connect(name, stream).await.context("TLS handshake")?;
            (MaybeTlsStream::Rustls(stream), "wss")
        }
    };
    let url = format!("{scheme}://{addr}/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("WebSocket upgrade")?;
    let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .map_err(|_| anyhow!("no hello within 30 s"))?;
    match first {
        Some(Ok(Message::Text(t))) if t.starts_with(r#"{"type":"hello""#) => Ok(ws),
        Some(Ok(other)) => bail!("expected hello, got {other:?}"),
        Some(Err(e)) => Err(e.into()),
        None => bail!("closed before hello"),
    }
}

/// What the generator needs of a server frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `message`: its conversation, seq, sender and the stamp the sender
    /// put at the start of the body.
    Message {
        /// The conversation.
        conv_id: u64,
        /// Its sequence number.
        seq: u64,
        /// Who sent it.
        sender: u64,
        /// The intended send time (a body starting with digits).
        stamp: Option<u64>,
        /// When the generator actually wrote it (the body's second
        /// number): the intended time plus the generator's own lateness.
        written: Option<u64>,
    },
    /// `sent`: the acknowledgement of one of ours.
    Sent {
        /// Our id for it.
        client_msg_id: &'a str,
        /// The stamp at its start.
        stamp: Option<u64>,
    },
    /// `error`.
    Error(&'a str),
    /// Anything else.
    Other,
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: &str = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The number after the first number (and one space) after `key`.
fn second_number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    let first_end = rest.find(|c: char| !c.is_ascii_digit())?;
    number_after(&rest[first_end..], " ")
}

fn string_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    Some(&rest[..rest.find('"')?])
}

/// Reads a frame. The server writes fields in a fixed order, so this looks
/// for keys instead of parsing the JSON: parsing every frame would make the
/// generator the bottleneck sooner.
pub fn parse(text: &str) -> Frame<'_> {
    if text.starts_with(r#"{"type":"message""#) {
        return Frame::Message {
            conv_id: number_after(text, r#""conv_id":"#).unwrap_or(0),
            seq: number_after(text, r#""seq":"#).unwrap_or(0),
            sender: number_after(text, r#""sender":"#).unwrap_or(0),
            stamp: number_after(text, r#""body":""#),
            written: second_number_after(text, r#""body":""#),
        };
    }
    if text.starts_with(r#"{"type":"sent""#) {
        let id = string_after(text, r#""client_msg_id":""#).unwrap_or("");
        let end = id.find(|c: char| !c.is_ascii_digit()).unwrap_or(id.len());
        return Frame::Sent {
            client_msg_id: id,
            stamp: id[..end].parse().ok(),
        };
    }
    if text.starts_with(r#"{"type":"error""#) {
        return Frame::Error(text);
    }
    Frame::Other
}

/// Where a batch of connections goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The node's gateway.
    pub addr: SocketAddr,
    /// The source address.
    pub src: Option<Ipv4Addr>,
    /// The token.
    pub token: String,
}

/// How a batch of connections went.
pub struct ConnectStats {
    /// Connected.
    pub ok: usize,
    /// Failed.
    pub failed: usize,
    /// The first failure.
    pub first_error: Option<String>,
    /// Wall time of the whole batch.
    pub seconds: f64,
    /// Per-connection time to `hello`, microseconds.
    pub latency: Histogram<u64>,
}

/// A latency histogram: 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Connects every target with at most `concurrency` handshakes at a time;
/// `None` where it failed.
pub async fn connect_all(
    targets: Vec<Target>,
    concurrency: usize,
) -> (Vec<Option<Ws>>, ConnectStats) {
    connect_all_with(targets, concurrency, None).await
}

/// [`connect_all`], over TLS with `tls`.
pub async fn connect_all_with(
    targets: Vec<Target>,
    concurrency: usize,
    tls: Option<tokio_rustls::TlsConnector>,
) -> (Vec<Option<Ws>>, ConnectStats) {
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let hist = Arc::new(Mutex::new(histogram()));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let failed = Arc::new(AtomicU64::new(0));
    let total = targets.len();
    let done = Arc::new(AtomicU64::new(0));
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = done.load(Ordering::Relaxed);
                if now as usize >= total {
                    return;
                }
                if now != last {
                    eprintln!("  connected {now}/{total}");
                    last = now;
                }
            }
        })
    };
    let mut handles = Vec::with_capacity(total);
    for t in targets {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let (hist, first_error, failed, done, tls) = (
            hist.clone(),
            first_error.clone(),
            failed.clone(),
            done.clone(),
            tls.clone(),
        );
        handles.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let result = connect_with(t.addr, t.src, &t.token, tls.as_ref()).await;
            drop(permit);
            done.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(ws) => {
                    if let Ok(mut h) = hist.lock() {
                        h.saturating_record(t0.elapsed().as_micros() as u64);
                    }
                    Some(ws)
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut f) = first_error.lock() {
                        f.get_or_insert_with(|| format!("{e:#}"));
                    }
                    None
                }
            }
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.ok().flatten());
    }
    progress.abort();
    let latency = hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| histogram());
    let stats = ConnectStats {
        ok: out.iter().filter(|w| w.is_some()).count(),
        failed: failed.load(Ordering::Relaxed) as usize,
        first_error: first_error.lock().ok().and_then(|f| f.clone()),
        seconds: started.elapsed().as_secs_f64(),
        latency,
    };
    (out, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_frames_it_needs() {
        let m = r#"{"type":"message","conv_id":12,"seq":41,"sender":3,"client_msg_id":"77-1","body":"12345 12399 xx","sent_at":1}"#;
        assert_eq!(
            parse(m),
            Frame::Message {
                conv_id: 12,
                seq: 41,
                sender: 3,
                stamp: Some(12345),
                written: Some(12399),
            }
        );
        let m = r#"{"type":"message","conv_id":12,"seq":41,"sender":3,"client_msg_id":"77-1","body":"12345 xx","sent_at":1}"#;
        assert!(matches!(
            parse(m),
            Frame::Message {
                stamp: Some(12345),
                written: None,
                ..
            }
        ));
        let s = r#"{"type":"sent","client_msg_id":"999-4","conv_id":1,"seq":2,"sent_at":3}"#;
        assert_eq!(
            parse(s),
            Frame::Sent {
                client_msg_id: "999-4",
                stamp: Some(999)
            }
        );
        assert_eq!(parse(r#"{"type":"pong"}"#), Frame::Other);
    }
}
