//! Users, tokens and conversations for a run.
//!
//! Nodes the generator starts get them written straight into their fresh
//! store before they start, with a cheap argon2 cost (registering 100k users
//! at the real cost would take the machine an hour; the real cost is
//! measured on its own by `storm`). A `--target` gets them through the HTTP
//! API, at the server's real cost.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use storage::chat::{ChatStore, Limits, NewUser, PasswordCost};
use storage::Database;

use super::servers::Store;

/// Every generated user's password.
pub const PASSWORD: &str = "bench-password-1";
/// Lifetime of the tokens issued by seeding.
const TOKEN_TTL_MS: u64 = 24 * 3600 * 1000;

/// A user with a token.
#[derive(Debug, Clone)]
pub struct User {
    /// Their id.
    pub id: u64,
    /// Their name.
    pub name: String,
    /// A bearer token (empty until logged in).
    pub token: String,
}

/// A fresh name prefix, so runs against a `--target` do not collide.
pub fn prefix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000_000)
        .unwrap_or(0);
    format!("b{t:x}")
}

/// Where users and conversations are made.
#[derive(Clone)]
pub enum Seeder {
    /// Directly in the (not yet served) store.
    Store(ChatStore),
    /// Through the HTTP API of a running node.
    Http {
        /// Its gateway's URL (`http://` or `https://`, no path).
        base: String,
        /// The client.
        http: reqwest::Client,
    },
}

impl Seeder {
    /// Opens the nodes' store with a cheap password cost.
    pub fn store(store: &Store) -> Result<Self> {
        let db = match store {
            Store::Sqlite(path) => {
                Database::open_sqlite(path).context("opening the store to seed")?
            }
            Store::Fdb {
                cluster_file,
                prefix,
            } => open_fdb(cluster_file, prefix)?,
        };
        let store = ChatStore::open(db, Limits::default())?.with_password_cost(PasswordCost {
            memory_kib: 8,
            iterations: 1,
        });
        Ok(Seeder::Store(store))
    }

    /// Hashes the passwords of the users it registers from now on at the
    /// server's real argon2 cost, so that logging them in costs the server
    /// what a real login does (a store seeder; others are unchanged).
    pub fn with_real_password_cost(self) -> Self {
        match self {
            Seeder::Store(store) => {
                Seeder::Store(store.with_password_cost(PasswordCost::default()))
            }
            http => http,
        }
    }

    /// Seeds through `addr`'s API.
    pub fn http(addr: SocketAddr) -> Self {
        Seeder::Http {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    /// Seeds through the API at `base` with `http` (an HTTPS client of a
    /// node speaking TLS, say).
    pub fn http_at(base: String, http: reqwest::Client) -> Self {
        Seeder::Http { base, http }
    }

    /// Registers `n` users `{prefix}u{i}` and gets each a token.
    pub async fn users(&self, prefix: &str, n: usize, concurrency: usize) -> Result<Vec<User>> {
        let started = Instant::now();
        let users = match self {
            Seeder::Store(store) => {
                let store = store.clone();
                let prefix = prefix.to_owned();
                tokio::task::spawn_blocking(move || -> Result<Vec<User>> {
                    let mut users = Vec::with_capacity(n);
                    for i in 0..n {
                        let name = format!("{prefix}u{i}");
                        let user = store.register(&NewUser {
                            name: name.clone(),
                            phone: None,
                            password: PASSWORD.into(),
                        })?;
                        let token = store.issue_token(user.id, TOKEN_TTL_MS)?;
                        users.push(User {
                            id: user.id,
                            name,
                            token,
                        });
                    }
                    Ok(users)
                })
                .await??
            }
            Seeder::Http { .. } => {
                let names: Vec<String> = (0..n).map(|i| format!("{prefix}u{i}")).collect();
                let this = self.clone();
                let ids = par_map(names.clone(), concurrency, move |name| {
                    let this = this.clone();
                    async move { this.register_http(&name).await }
                })
                .await?;
                let this = self.clone();
                let tokens = par_map(names.clone(), concurrency, move |name| {
                    let this = this.clone();
                    async move { this.login_http(&name).await.map(|(_, t)| t) }
                })
                .await?;
                names
                    .into_iter()
                    .zip(ids)
                    .zip(tokens)
                    .map(|((name, id), token)| User { id, name, token })
                    .collect()
            }
        };
        if n >= 1000 {
            eprintln!(
                "seeded {n} users in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(users)
    }

    /// Opens the direct chat of `a` and `b`.
    pub async fn direct(&self, a: &User, b: &User) -> Result<u64> {
        match self {
            Seeder::Store(store) => {
                let store = store.clone();
                let (a, b) = (a.id, b.id);
                Ok(tokio::task::spawn_blocking(move || store.open_direct(a, b))
                    .await??
                    .id)
            }
            Seeder::Http { .. } => {
                let (status, body) = self
                    .call(
                        "POST",
                        &format!("/api/direct/{}", b.id),
                        Some(&a.token),
                        None,
                    )
                    .await?;
                if status != 200 {
                    bail!("opening a direct chat: {status} {body}");
                }
                body["id"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("no id in {body}"))
            }
        }
    }

    /// Many direct chats: `pairs[i]` = (a, b) indexes into `users`.
    pub async fn directs(
        &self,
        users: &[User],
        pairs: &[(usize, usize)],
        concurrency: usize,
    ) -> Result<Vec<u64>> {
        match self {
            Seeder::Store(store) => {
                let store = store.clone();
                let ids: Vec<(u64, u64)> = pairs
                    .iter()
                    .map(|&(a, b)| (users[a].id, users[b].id))
                    .collect();
                tokio::task::spawn_blocking(move || -> Result<Vec<u64>> {
                    ids.into_iter()
                        .map(|(a, b)| Ok(store.open_direct(a, b)?.id))
                        .collect()
                })
                .await?
            }
            Seeder::Http { .. } => {
                let jobs: Vec<(User, User)> = pairs
                    .iter()
                    .map(|&(a, b)| (users[a].clone(), users[b].clone()))
                    .collect();
                let this = self.clone();
                par_map(jobs, concurrency, move |(a, b)| {
                    let this = this.clone();
                    async move { this.direct(&a, &b).await }
                })
                .await
            }
        }
    }

    /// Creates a group of `creator` with `members`.
    pub async fn group(&self, name: &str, creator: &User, members: &[&User]) -> Result<u64> {
        let ids: Vec<u64> = members.iter().map(|u| u.id).collect();
        match self {
            Seeder::Store(store) => {
                let store = store.clone();
                let (name, creator) = (name.to_owned(), creator.id);
                Ok(tokio::task::spawn_blocking(move || {
                    store.create_group(creator, &name, "", &ids)
                })
                .await??
                .id)
            }
            Seeder::Http { .. } => {
                let (status, body) = self
                    .call(
                        "POST",
                        "/api/groups",
                        Some(&creator.token),
                        Some(json!({"name": name, "members": ids})),
                    )
                    .await?;
                if status != 201 {
                    bail!("creating a group: {status} {body}");
                }
                body["id"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("no id in {body}"))
            }
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let Seeder::Http { base, http } = self else {
            bail!("not an HTTP seeder");
        };
        http_call_at(http, base, method, path, token, body).await
    }

    /// `POST /api/register`; the new user's id.
    pub async fn register_http(&self, name: &str) -> Result<u64> {
        let (status, body) = self
            .call(
                "POST",
                "/api/register",
                None,
                Some(json!({"name": name, "password": PASSWORD})),
            )
            .await?;
        if status != 201 {
            bail!("register {name}: {status} {body}");
        }
        body["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("no id in {body}"))
    }

    /// `POST /api/login`; (id, token).
    pub async fn login_http(&self, name: &str) -> Result<(u64, String)> {
        let (status, body) = self
            .call(
                "POST",
                "/api/login",
                None,
                Some(json!({"name": name, "password": PASSWORD})),
            )
            .await?;
        if status != 200 {
            bail!("login {name}: {status} {body}");
        }
        let id = body["user"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("no user id in {body}"))?;
        let token = body["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token in {body}"))?;
        Ok((id, token.to_owned()))
    }
}

/// One JSON call: status and body (`Null` when empty).
pub async fn http_call(
    http: &reqwest::Client,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    http_call_at(http, &format!("http://{addr}"), method, path, token, body).await
}

/// [`http_call`] to the gateway at `base` (`http(s)://host:port`).
async fn http_call_at(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let mut req = http.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, value))
}

/// Runs `f` over `items` with at most `concurrency` at a time, keeping the
/// order; fails on the first error.
pub async fn par_map<I, T, F, Fut>(items: Vec<I>, concurrency: usize, f: F) -> Result<Vec<T>>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let f = Arc::new(f);
    let mut handles = Vec::with_capacity(items.len());
    for item in items {
        let permit = sem.clone().acquire_owned().await?;
        let f = f.clone();
        handles.push(tokio::spawn(async move {
            let out = f(item).await;
            drop(permit);
            out
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await??);
    }
    Ok(out)
}

/// The nodes' FoundationDB store, under their key prefix.
#[cfg(feature = "fdb")]
fn open_fdb(cluster_file: &Path, prefix: &str) -> Result<Database> {
    Database::open_fdb_with_prefix(Some(cluster_file), prefix.as_bytes().to_vec())
        .context("opening FoundationDB to seed")
}

#[cfg(not(feature = "fdb"))]
fn open_fdb(_cluster_file: &Path, _prefix: &str) -> Result<Database> {
    bail!("PARLEY_FDB_CLUSTER_FILE is set: build parley-bench with `-p tests --features fdb`")
}
