//! The embedded backend: SQLite used as one ordered key-value table.
//!
//! `kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID` compares keys with memcmp,
//! which is exactly FoundationDB's byte order, so tuple-encoded keys sort the
//! same on both backends. WAL mode lets readers run beside the single writer,
//! and several processes may share one file: writers take the lock up front
//! (`BEGIN IMMEDIATE`) and wait for it up to the busy timeout, which makes
//! every read-write transaction serializable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::kv::{Backend, BackendTransaction, KeyValue, RangeOptions, Transaction, TxMode};
use crate::Result;

/// How the embedded store is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a transaction waits for another writer's lock before failing
    /// with a retryable busy error. Default 5 s.
    pub busy_timeout: Duration,
    /// `synchronous=FULL` (fsync on every commit) instead of the default
    /// `NORMAL`. NORMAL in WAL mode survives a process crash (`kill -9`) but
    /// may lose the last commits on power loss; FULL survives both and is
    /// slower. Default false.
    pub fsync_every_commit: bool,
    /// Idle connections kept for reuse. Default 16.
    pub max_idle_connections: usize,
    /// Copy the write-ahead log into the database from a background thread
    /// this often, instead of inside whichever commit crosses SQLite's
    /// auto-checkpoint threshold (which stalls that commit and every writer
    /// queued behind it). `None` keeps SQLite's automatic checkpoints.
    /// Default 100 ms: short rounds copy little at a time, and a round that
    /// finds the log past [`RESTART_FRAMES`] starts it over. In `peers` at
    /// 45k deliveries/s, p99 was 45–52 ms with 500 ms rounds, 15–20 ms with
    /// 100 ms rounds.
    pub checkpoint_every: Option<Duration>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            fsync_every_commit: false,
            max_idle_connections: 16,
            checkpoint_every: Some(Duration::from_millis(100)),
        }
    }
}

/// The SQLite backend. One per process; connections are pooled.
pub struct SqliteBackend {
    path: PathBuf,
    options: SqliteOptions,
    idle: Mutex<Vec<Connection>>,
    /// This process's one write connection, held for the whole of every
    /// write transaction and by a checkpoint that must restart the log.
    ///
    /// SQLite lets one writer in at a time anyway, but a writer that finds
    /// the lock taken sleeps in its busy handler (1, 2, 5, 10 … ms) instead
    /// of waking when the lock is free, and a writer committing back to
    /// back would win it every time, so the log would never start over.
    /// Waiting on this mutex instead wakes at once, in turn. And one
    /// connection for every write keeps its page cache: SQLite drops a
    /// connection's whole cache whenever another connection has written
    /// since its last transaction, so writes spread over a pool re-read the
    /// B-tree from the file on every commit.
    writer: Arc<Mutex<Option<Connection>>>,
    /// Tells the checkpoint thread to stop when the backend is dropped.
    stop_checkpoints: Option<std::sync::mpsc::Sender<()>>,
}

impl SqliteBackend {
    /// Opens (creating if needed) the store file at `path`.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let mut backend = Self {
            path: path.as_ref().to_path_buf(),
            options,
            idle: Mutex::new(Vec::new()),
            writer: Arc::new(Mutex::new(None)),
            stop_checkpoints: None,
        };
        let conn = backend.connect()?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID;",
        )?;
        backend.release(conn);
        if let Some(every) = backend.options.checkpoint_every {
            let conn = backend.connect()?;
            let (stop, stopped) = std::sync::mpsc::channel();
            let writer = backend.writer.clone();
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || checkpoint_loop(&conn, &writer, every, &stopped))
                .map_err(|e| crate::Error::Io(e.to_string()))?;
            backend.stop_checkpoints = Some(stop);
        }
        Ok(backend)
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(self.options.busy_timeout)?;
        enable_wal(&conn, self.options.busy_timeout)?;
        let sync = if self.options.fsync_every_commit {
            "FULL"
        } else {
            "NORMAL"
        };
        // Deleted and overwritten content is zeroed in the file, not left in
        // free space: a message deleted for everyone must be gone.
        conn.execute_batch(&format!(
            "PRAGMA synchronous={sync}; PRAGMA secure_delete=ON; \
             PRAGMA journal_size_limit={WAL_SIZE_LIMIT};"
        ))?;
        if self.options.checkpoint_every.is_some() {
            conn.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
        }
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    fn acquire(&self) -> Result<Connection> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match pooled {
            Some(conn) => Ok(conn),
            None => self.connect(),
        }
    }

    fn release(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.options.max_idle_connections {
                idle.push(conn);
            }
        }
    }
}

impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn serializes_writers(&self) -> bool {
        true
    }

    /// Copies the WAL into the main file and truncates it: the WAL still
    /// holds the pages as they were before the erasing commit. Waits at
    /// most [`SCRUB_WAIT`] for readers of older pages, and fails if they
    /// stay (the caller retries later).
    fn scrub(&self) -> Result<()> {
        let conn = self.acquire()?;
        conn.busy_timeout(SCRUB_WAIT.min(self.options.busy_timeout))?;
        let done: rusqlite::Result<i64> = {
            let _turn = exclusive(&self.writer);
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        };
        conn.busy_timeout(self.options.busy_timeout)?;
        self.release(conn);
        match done? {
            0 => Ok(()),
            _ => Err(crate::Error::Io(
                "checkpoint could not truncate the WAL: readers of older pages".into(),
            )),
        }
    }

    fn begin(&self, mode: TxMode) -> Result<Box<dyn BackendTransaction + '_>> {
        let (conn, writer, begin) = match mode {
            TxMode::Read => (self.acquire()?, None, "BEGIN DEFERRED"),
            TxMode::Write => {
                let mut writer = exclusive(&self.writer);
                let conn = match writer.take() {
                    Some(conn) => conn,
                    None => {
                        let conn = self.connect()?;
                        conn.execute_batch(&format!("PRAGMA cache_size=-{WRITER_CACHE_KIB};"))?;
                        conn
                    }
                };
                (conn, Some(writer), "BEGIN IMMEDIATE")
            }
        };
        let mut tx = SqliteTransaction {
            backend: self,
            conn: Some(conn),
            writer,
        };
        if let Err(e) = tx.conn().execute_batch(begin) {
            // A failed BEGIN leaves no transaction open: the connection is
            // clean and goes back as it is.
            if let Some(conn) = tx.conn.take() {
                tx.release(conn);
            }
            return Err(e.into());
        }
        Ok(Box::new(tx))
    }
}

/// The write connection's page cache, in KiB (SQLite's default is 2 MiB).
const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// How long a scrub waits for other connections' locks: it runs before a
/// deletion is acknowledged, so it must not hold that up for long.
const SCRUB_WAIT: Duration = Duration::from_millis(250);

/// WAL frames (a page and a 24-byte header each, about 4 KiB) past which
/// the background checkpoint also restarts the log. A passive checkpoint
/// copies frames but never makes the next writer start the log over: under
/// a steady stream of commits some frames are always newer than the last
/// copy, so the file grew without end (3 GB in 20 s at 5k messages/s), and
/// every commit appended to fresh file pages the kernel had to zero first
/// (30 % of the node's CPU in `peers` at 45k deliveries/s).
///
/// A restart holds every writer back while it copies the last frames and
/// syncs both files (1–3 ms here), so it is rare enough to stay out of the
/// p99: at 1024 frames it ran three times a second at 4.4k deliveries/s
/// and p99 there was 2.9–3.1 ms; at 4096, with a second passive round just
/// before the restart so that it copies little, 2.2–2.5 ms (1.4 ms with no
/// restarts at all). The file still stays bounded: 34-58 MiB at most for
/// 200 MiB of frames written back to back in
/// `the_wal_stays_bounded_under_sustained_writes` (75 MiB with another
/// test's fsyncs beside it); at 1 024 frames it was 46-51 MiB.
const RESTART_FRAMES: i64 = 4096;

/// How long a restarting checkpoint waits for the writer lock and for
/// readers of older frames before giving up until the next round. Writers
/// queue behind it meanwhile, so it is short.
const RESTART_WAIT: Duration = Duration::from_millis(100);

/// The size a WAL file is cut back to when the log starts over, so that a
/// burst that grew it does not keep the disk space.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Takes this process's write connection: other writers wait until the
/// guard drops (the current one finishes first). A writer that panicked
/// left no transaction open (its rollback ran on unwind), so a poisoned
/// lock is taken as it is.
fn exclusive(writer: &Mutex<Option<Connection>>) -> MutexGuard<'_, Option<Connection>> {
    writer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs passive checkpoints (they never block writers) until told to stop;
/// when the log has grown past [`RESTART_FRAMES`] it restarts it, holding
/// this process's writers back meanwhile and waiting at most
/// [`RESTART_WAIT`] for readers, so that it is rewritten from its start.
fn checkpoint_loop(
    conn: &Connection,
    writer: &Mutex<Option<Connection>>,
    every: Duration,
    stop: &std::sync::mpsc::Receiver<()>,
) {
    if let Err(e) = conn.busy_timeout(RESTART_WAIT) {
        tracing::warn!(error = %e, "checkpoint connection");
    }
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        let checkpoint = |mode: &str| -> rusqlite::Result<(i64, i64, i64)> {
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        };
        match checkpoint("PASSIVE") {
            Ok((_, log, _)) if log > RESTART_FRAMES => {
                // Once more first, without holding writers: the restart
                // then copies only what was committed meanwhile.
                if let Err(e) = checkpoint("PASSIVE") {
                    tracing::debug!(error = %e, "background checkpoint");
                }
                let _turn = exclusive(writer);
                if let Err(e) = checkpoint("RESTART") {
                    tracing::debug!(error = %e, frames = log, "restarting checkpoint");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "background checkpoint"),
        }
    }
}

/// Switches the file to WAL mode. Switching a new file needs an exclusive
/// lock and SQLite does not apply the busy timeout to it, so processes that
/// create the store at the same moment would fail at once; retry until the
/// busy timeout instead.
fn enable_wal(conn: &Connection, busy_timeout: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + busy_timeout;
    loop {
        // journal_mode returns a row, so it goes through query_row.
        let outcome: rusqlite::Result<String> =
            conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0));
        match outcome {
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = crate::Error::from(e);
                if !e.is_retryable() || std::time::Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// An open SQLite transaction; rolled back on drop unless committed.
struct SqliteTransaction<'a> {
    backend: &'a SqliteBackend,
    conn: Option<Connection>,
    /// A write transaction's hold on the process's write connection: the
    /// connection goes back into it, not to the pool, when it ends.
    writer: Option<MutexGuard<'a, Option<Connection>>>,
}

impl SqliteTransaction<'_> {
    /// Gives the connection back once its transaction has ended.
    fn release(&mut self, conn: Connection) {
        match self.writer.as_mut() {
            Some(writer) => **writer = Some(conn),
            None => self.backend.release(conn),
        }
    }

    fn conn(&self) -> &Connection {
        // Only `commit` and `drop` take the connection out, and both consume
        // the transaction, so it is always there while methods can be called.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("connection taken before the transaction ended"))
    }
}

impl Transaction for SqliteTransaction<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT v FROM kv WHERE k = ?1")?;
        Ok(stmt.query_row([key], |r| r.get(0)).optional()?)
    }

    fn get_range(&mut self, begin: &[u8], end: &[u8], opts: RangeOptions) -> Result<Vec<KeyValue>> {
        let sql = if opts.reverse {
            "SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k DESC LIMIT ?3"
        } else {
            "SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k ASC LIMIT ?3"
        };
        // SQLite reads a negative LIMIT as "no limit".
        let limit = opts
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut stmt = self.conn().prepare_cached(sql)?;
        let rows = stmt.query_map(params![begin, end, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut stmt = self
            .conn()
            .prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)")?;
        stmt.execute(params![key, value])?;
        Ok(())
    }

    fn clear(&mut self, key: &[u8]) -> Result<()> {
        let mut stmt = self.conn().prepare_cached("DELETE FROM kv WHERE k = ?1")?;
        stmt.execute([key])?;
        Ok(())
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) -> Result<()> {
        let mut stmt = self
            .conn()
            .prepare_cached("DELETE FROM kv WHERE k >= ?1 AND k < ?2")?;
        stmt.execute([begin, end])?;
        Ok(())
    }
}

impl BackendTransaction for SqliteTransaction<'_> {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        match conn.execute_batch("COMMIT") {
            Ok(()) => {
                self.release(conn);
                Ok(())
            }
            Err(e) => {
                // The transaction is still open: roll it back before reuse.
                if conn.execute_batch("ROLLBACK").is_ok() {
                    self.release(conn);
                }
                Err(e.into())
            }
        }
    }
}

impl Drop for SqliteTransaction<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // A connection whose rollback failed is in an unknown state:
            // dropping it closes it, which also ends the transaction.
            if conn.execute_batch("ROLLBACK").is_ok() {
                self.release(conn);
            }
        }
    }
}
