//! tocsin-store: the gateway's durable, append-only, tamper-evident log on SQLite.
//!
//! Every fact Tocsin acts on (alert accepted, deliveries planned, attempts, outcomes,
//! replies, acks, escalations, cancellations, audit entries) is appended here before anyone
//! is told it happened, and on start the daemon rebuilds its state from [`Store::load_all`].
//!
//! - **Nothing accepted is lost**: [`Store::append`] answers only after the SQLite
//!   transaction holding the records has committed (WAL, `synchronous=FULL` by default).
//! - **Group commit**: one writer thread owns the writing connection and commits whatever
//!   appends are queued together in one transaction, so concurrent appenders share an fsync.
//! - **Tamper-evident**: each row carries a SHA-256 hash over the previous row's hash and its
//!   own columns; [`Store::verify`] walks the chain and names the first broken sequence number.
//! - **Readers never block the writer**: reads use their own read-only connection (WAL).
//!
//! The store is generic over the record type ([`LogRecord`]); the router defines the real one.

mod chain;
mod error;
mod schema;
mod writer;

pub use chain::to_hex;
pub use error::StoreError;
pub use schema::SCHEMA_VERSION;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, params};
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use writer::{Counters, Encoded, Job, lock};

/// A record the store can log: serializable, and able to say what it is, which alert it
/// belongs to and when it happened (these three are stored as indexed columns).
pub trait LogRecord:
    serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static
{
    /// The record's kind, e.g. `alert_accepted`.
    fn kind(&self) -> &str;
    /// The alert this record belongs to, if any; records are indexed by it.
    fn alert(&self) -> Option<&str>;
    /// The record's time (virtual or real) in milliseconds since the Unix epoch.
    fn at_millis(&self) -> i64;
}

/// How hard each commit insists on reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced before it is acknowledged; survives power
    /// loss. The default, and the only right choice for a district center.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a crash of the process but a power cut may lose the
    /// last commits; for field kits whose flash storage cannot take an fsync per commit.
    Normal,
}

/// Settings for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync policy of every commit.
    pub durability: Durability,
    /// How long a connection waits for another process's lock before failing.
    pub busy_timeout: Duration,
    /// Most records committed in one group transaction (a single larger append still goes
    /// through alone).
    pub max_group_records: usize,
    /// Appends that may wait for the writer before `append` itself waits (backpressure).
    pub queue_depth: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(5),
            max_group_records: 4096,
            queue_depth: 1024,
        }
    }
}

/// Proof that an append is durable: where its records landed in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Sequence numbers given to the records, in the order they were passed (empty for an
    /// empty append).
    pub seqs: Range<i64>,
    /// Number of the group transaction that committed them (1 = first since open).
    pub group: u64,
    /// How many records, from every caller, shared that transaction.
    pub group_records: usize,
}

/// Why the hash chain is broken at a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakReason {
    /// The sequence numbers skip or repeat: rows were deleted or inserted.
    SeqGap {
        /// The sequence number that should have come next.
        expected: i64,
    },
    /// The row's `prev_hash` is not the previous row's hash.
    PrevHashMismatch,
    /// The row's contents no longer produce its stored hash: it was edited.
    HashMismatch,
    /// A column has the wrong type or encoding.
    Malformed {
        /// Name of the offending column.
        column: &'static str,
    },
}

/// The first place where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// Sequence number of the first row that fails.
    pub seq: i64,
    /// What is wrong with it.
    pub reason: BreakReason,
}

/// The outcome of [`Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Rows checked and found sound before the first break (all rows when intact).
    pub records_verified: u64,
    /// Highest sequence number in the log, if any.
    pub last_seq: Option<i64>,
    /// Hash of the last sound row; anchor it elsewhere to detect a rewritten tail.
    pub head_hash: Option<Vec<u8>>,
    /// The first break in the chain, if any.
    pub first_broken: Option<ChainBreak>,
}

impl AuditReport {
    /// True when every row chains correctly to the one before it.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Size and activity figures for metrics and `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// Rows in the log.
    pub records: u64,
    /// Highest sequence number (0 when empty).
    pub last_seq: i64,
    /// Bytes of JSON bodies in the log.
    pub body_bytes: u64,
    /// Size of the main database file in bytes (pages × page size).
    pub file_bytes: u64,
    /// Distinct alerts with at least one record.
    pub alerts: u64,
    /// Group transactions committed through this handle's writer since open.
    pub transactions: u64,
    /// Append calls committed through this handle's writer since open.
    pub appends: u64,
}

/// A one-line summary of an alert's records, kept in the same transaction as the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSummary {
    /// The alert id.
    pub id: String,
    /// Sequence number of its first record.
    pub first_seq: i64,
    /// Sequence number of its latest record.
    pub last_seq: i64,
    /// Kind of its latest record.
    pub last_kind: String,
    /// Time of its latest record, in milliseconds.
    pub last_at: i64,
    /// Number of records it has.
    pub records: u64,
}

/// A handle on the durable log. Cheap to clone; every clone feeds the same writer thread.
pub struct Store<R> {
    /// Shared state of all clones.
    inner: Arc<Inner>,
    /// The record type; `fn() -> R` keeps the handle Send + Sync whatever R is.
    _record: PhantomData<fn() -> R>,
}

impl<R> Clone for Store<R> {
    fn clone(&self) -> Self {
        Store {
            inner: Arc::clone(&self.inner),
            _record: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for Store<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// What every clone of a [`Store`] shares.
struct Inner {
    /// Queue into the writer thread.
    jobs: mpsc::Sender<Job>,
    /// The read-only connection (the writer's own connection for in-memory stores).
    reader: Arc<Mutex<Connection>>,
    /// Counters kept by the writer.
    counters: Arc<Counters>,
}

impl<R: LogRecord> Store<R> {
    /// Opens (creating if needed) the log at `path`: WAL, the chosen fsync policy, pending
    /// migrations applied. Refuses a file written by a newer schema.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(opts.busy_timeout)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::JournalMode { got: mode });
        }
        let sync = match opts.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        schema::migrate(&mut conn)?;

        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(opts.busy_timeout)?;
        Self::start(
            Arc::new(Mutex::new(conn)),
            Arc::new(Mutex::new(reader)),
            &opts,
        )
    }

    /// Opens a fresh, private log in memory (tests, demos). Reads share the writer's
    /// connection, so they wait for a commit in progress.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        schema::migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        Self::start(Arc::clone(&conn), conn, &StoreOptions::default())
    }

    /// Starts the writer thread around an opened, migrated connection.
    fn start(
        writer_conn: Arc<Mutex<Connection>>,
        reader: Arc<Mutex<Connection>>,
        opts: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let (jobs, rx) = mpsc::channel(opts.queue_depth.max(1));
        let counters = Arc::new(Counters::default());
        let cap = opts.max_group_records.max(1);
        let thread_counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("tocsin-store-writer".into())
            .spawn(move || writer::run(writer_conn, rx, thread_counters, cap))
            .map_err(StoreError::Spawn)?;
        Ok(Store {
            inner: Arc::new(Inner {
                jobs,
                reader,
                counters,
            }),
            _record: PhantomData,
        })
    }

    /// Appends `records` in order and returns only after the transaction holding them has
    /// committed. If the future is dropped after the records were queued they may still be
    /// committed: appends are at-least-once from the caller's point of view.
    pub async fn append(&self, records: Vec<R>) -> Result<Committed, StoreError> {
        let records = encode(&records)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .jobs
            .send(Job::Append { records, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// [`Store::append`] for threads that are not async tasks. Safe to call anywhere (it
    /// never panics), but it blocks the calling thread until the commit.
    pub fn append_blocking(&self, records: Vec<R>) -> Result<Committed, StoreError> {
        block_on(self.append(records))
    }

    /// Every record in append order, to rebuild state at start. Blocking.
    pub fn load_all(&self) -> Result<Vec<R>, StoreError> {
        let conn = lock(&self.inner.reader);
        let mut stmt = conn.prepare("SELECT seq, body FROM events ORDER BY seq")?;
        let rows = stmt.query([])?;
        decode_rows(rows)
    }

    /// Every record of one alert, in append order. Blocking.
    pub fn load_alert(&self, alert: &str) -> Result<Vec<R>, StoreError> {
        let conn = lock(&self.inner.reader);
        let mut stmt =
            conn.prepare("SELECT seq, body FROM events WHERE alert = ?1 ORDER BY seq")?;
        let rows = stmt.query(params![alert])?;
        decode_rows(rows)
    }

    /// Walks the whole hash chain and reports the first broken row, if any. Blocking; reads
    /// one consistent snapshot while appends go on.
    pub fn verify(&self) -> Result<AuditReport, StoreError> {
        verify_chain(&lock(&self.inner.reader))
    }

    /// Size and activity figures. Blocking.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut conn = lock(&self.inner.reader);
        // One read transaction so the figures describe the same instant.
        let tx = conn.transaction()?;
        let (records, last_seq, body_bytes, alerts): (i64, i64, i64, i64) = tx.query_row(
            "SELECT COUNT(*), COALESCE(MAX(seq), 0),
                    COALESCE(SUM(LENGTH(CAST(body AS BLOB))), 0),
                    (SELECT COUNT(*) FROM alerts)
             FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let page_count: i64 = tx.pragma_query_value(None, "page_count", |r| r.get(0))?;
        let page_size: i64 = tx.pragma_query_value(None, "page_size", |r| r.get(0))?;
        tx.finish()?;
        let counters = &self.inner.counters;
        Ok(StoreStats {
            records: non_negative(records),
            last_seq,
            body_bytes: non_negative(body_bytes),
            file_bytes: non_negative(page_count.saturating_mul(page_size)),
            alerts: non_negative(alerts),
            transactions: counters.transactions.load(Ordering::SeqCst),
            appends: counters.appends.load(Ordering::SeqCst),
        })
    }

    /// Every alert with records, most recently active first. Blocking.
    pub fn alerts(&self) -> Result<Vec<AlertSummary>, StoreError> {
        let conn = lock(&self.inner.reader);
        let mut stmt = conn.prepare(
            "SELECT id, first_seq, last_seq, last_kind, last_at, records
             FROM alerts ORDER BY last_seq DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(AlertSummary {
                id: r.get(0)?,
                first_seq: r.get(1)?,
                last_seq: r.get(2)?,
                last_kind: r.get(3)?,
                last_at: r.get(4)?,
                records: non_negative(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Commits everything appended before, refuses appends after (from every clone), folds
    /// the WAL into the database file and stops the writer thread.
    pub async fn close(self) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        if self.inner.jobs.send(Job::Close { reply }).await.is_err() {
            // The writer has already stopped, after a close from another clone.
            return Ok(());
        }
        // The writer answers after closing its connection; a dropped answer means it ended
        // anyway (another close won the race).
        let _ = done.await;
        Ok(())
    }
}

/// Serializes records in the caller's thread so the writer only does I/O.
fn encode<R: LogRecord>(records: &[R]) -> Result<Vec<Encoded>, StoreError> {
    records
        .iter()
        .map(|r| {
            Ok(Encoded {
                at: r.at_millis(),
                kind: r.kind().to_owned(),
                alert: r.alert().map(str::to_owned),
                body: serde_json::to_string(r).map_err(StoreError::Encode)?,
            })
        })
        .collect()
}

/// Decodes `(seq, body)` rows, naming the seq of the first one that does not decode.
fn decode_rows<R: LogRecord>(mut rows: rusqlite::Rows<'_>) -> Result<Vec<R>, StoreError> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let body = match row.get_ref(1)? {
            ValueRef::Text(bytes) => {
                std::str::from_utf8(bytes).map_err(|_| StoreError::CorruptRow {
                    seq,
                    column: "body",
                })?
            }
            _ => {
                return Err(StoreError::CorruptRow {
                    seq,
                    column: "body",
                });
            }
        };
        let record =
            serde_json::from_str(body).map_err(|source| StoreError::CorruptBody { seq, source })?;
        out.push(record);
    }
    Ok(out)
}

/// Verifies the log at `path` without writing to it: read-only, no migration, no writer
/// (`tocsind audit`, run beside a live gateway or on a copy of its file).
pub fn verify_file(path: &Path) -> Result<AuditReport, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(StoreOptions::default().busy_timeout)?;
    verify_chain(&conn)
}

/// Walks the hash chain of the log on `conn` in one read transaction.
fn verify_chain(conn: &Connection) -> Result<AuditReport, StoreError> {
    let mut stmt = conn
        .prepare("SELECT seq, at, kind, alert, body, prev_hash, hash FROM events ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut report = AuditReport {
        records_verified: 0,
        last_seq: None,
        head_hash: None,
        first_broken: None,
    };
    let mut expected_seq: i64 = 1;
    let mut prev: Vec<u8> = chain::GENESIS.to_vec();
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        report.last_seq = Some(seq);
        if report.first_broken.is_some() {
            // Keep scanning only to report the true last seq.
            continue;
        }
        match check_row(row, seq, expected_seq, &prev) {
            Ok(hash) => {
                report.records_verified += 1;
                prev = hash;
                expected_seq = seq.saturating_add(1);
            }
            Err(reason) => report.first_broken = Some(ChainBreak { seq, reason }),
        }
    }
    if report.records_verified > 0 {
        report.head_hash = Some(prev);
    }
    Ok(report)
}

/// Checks one row against the chain; returns its hash when sound.
fn check_row(
    row: &rusqlite::Row<'_>,
    seq: i64,
    expected_seq: i64,
    prev: &[u8],
) -> Result<Vec<u8>, BreakReason> {
    if seq != expected_seq {
        return Err(BreakReason::SeqGap {
            expected: expected_seq,
        });
    }
    let at = match row.get_ref(1) {
        Ok(ValueRef::Integer(v)) => v,
        _ => return Err(BreakReason::Malformed { column: "at" }),
    };
    let kind = text(row, 2).ok_or(BreakReason::Malformed { column: "kind" })?;
    let alert = match row.get_ref(3) {
        Ok(ValueRef::Null) => None,
        _ => Some(text(row, 3).ok_or(BreakReason::Malformed { column: "alert" })?),
    };
    let body = text(row, 4).ok_or(BreakReason::Malformed { column: "body" })?;
    let prev_hash = blob(row, 5).ok_or(BreakReason::Malformed {
        column: "prev_hash",
    })?;
    let hash = blob(row, 6).ok_or(BreakReason::Malformed { column: "hash" })?;
    if prev_hash != prev {
        return Err(BreakReason::PrevHashMismatch);
    }
    let computed = chain::link_hash(prev, seq, at, kind, alert, body);
    if computed.as_slice() != hash {
        return Err(BreakReason::HashMismatch);
    }
    Ok(hash.to_vec())
}

/// A TEXT column as UTF-8, or None if it is anything else.
fn text<'a>(row: &'a rusqlite::Row<'_>, idx: usize) -> Option<&'a str> {
    match row.get_ref(idx) {
        Ok(ValueRef::Text(bytes)) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// A BLOB column, or None if it is anything else.
fn blob<'a>(row: &'a rusqlite::Row<'_>, idx: usize) -> Option<&'a [u8]> {
    match row.get_ref(idx) {
        Ok(ValueRef::Blob(bytes)) => Some(bytes),
        _ => None,
    }
}

/// SQLite counts are i64; a negative one cannot happen, and would read as zero.
fn non_negative(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Wakes a parked thread.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on the current thread by parking between polls.
///
/// Unlike tokio's `blocking_send`/`blocking_recv` this never panics inside a runtime; the
/// futures it drives (a bounded channel send and a oneshot reply) are woken by the writer
/// thread, so they need no runtime to make progress.
fn block_on<F: Future>(fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rec {
        kind: String,
        alert: Option<String>,
        at: i64,
        note: String,
    }

    impl LogRecord for Rec {
        fn kind(&self) -> &str {
            &self.kind
        }
        fn alert(&self) -> Option<&str> {
            self.alert.as_deref()
        }
        fn at_millis(&self) -> i64 {
            self.at
        }
    }

    fn rec(kind: &str, alert: Option<&str>, at: i64) -> Rec {
        Rec {
            kind: kind.into(),
            alert: alert.map(Into::into),
            at,
            note: format!("{kind} at {at}"),
        }
    }

    /// A record whose serialization fails: serde_json refuses maps with non-string keys.
    #[derive(Debug, Serialize, Deserialize)]
    struct Unencodable {
        map: std::collections::BTreeMap<(u8, u8), u8>,
    }

    impl LogRecord for Unencodable {
        fn kind(&self) -> &str {
            "bad"
        }
        fn alert(&self) -> Option<&str> {
            None
        }
        fn at_millis(&self) -> i64 {
            0
        }
    }

    #[test]
    fn store_handles_are_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone>() {}
        assert_traits::<Store<Rec>>();
    }

    #[tokio::test]
    async fn in_memory_round_trip_keeps_append_order() {
        let store = Store::<Rec>::open_in_memory().unwrap();
        let a = vec![
            rec("alert_accepted", Some("A1"), 10),
            rec("delivery_planned", Some("A1"), 11),
        ];
        let b = vec![rec("audit", None, 12), rec("ack", Some("A1"), 13)];
        let c1 = store.append(a.clone()).await.unwrap();
        let c2 = store.append(b.clone()).await.unwrap();
        assert_eq!(c1.seqs, 1..3);
        assert_eq!(c2.seqs, 3..5);

        let all = store.load_all().unwrap();
        assert_eq!(all, [a.clone(), b.clone()].concat());
        let alert = store.load_alert("A1").unwrap();
        assert_eq!(alert, vec![a[0].clone(), a[1].clone(), b[1].clone()]);
        assert!(store.load_alert("nope").unwrap().is_empty());

        let report = store.verify().unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_verified, 4);
        assert_eq!(report.last_seq, Some(4));
        assert_eq!(report.head_hash.as_ref().map(Vec::len), Some(32));

        let stats = store.stats().unwrap();
        assert_eq!(stats.records, 4);
        assert_eq!(stats.last_seq, 4);
        assert_eq!(stats.alerts, 1);
        assert_eq!(stats.transactions, 2);
        assert_eq!(stats.appends, 2);
        assert!(stats.body_bytes > 0);

        let summaries = store.alerts().unwrap();
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].id, "A1");
        assert_eq!(summaries[0].first_seq, 1);
        assert_eq!(summaries[0].last_seq, 4);
        assert_eq!(summaries[0].last_kind, "ack");
        assert_eq!(summaries[0].records, 3);
        store.close().await.unwrap();
    }

    #[test]
    fn append_blocking_works_off_and_on_a_runtime_thread() {
        let store = Store::<Rec>::open_in_memory().unwrap();
        let c = store.append_blocking(vec![rec("audit", None, 1)]).unwrap();
        assert_eq!(c.seqs, 1..2);

        // Inside a runtime worker it blocks that worker but must not panic.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inner = store.clone();
        let c = rt.block_on(async move { inner.append_blocking(vec![rec("audit", None, 2)]) });
        assert_eq!(c.unwrap().seqs, 2..3);
        assert_eq!(store.load_all().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn empty_append_is_a_commit_barrier() {
        let store = Store::<Rec>::open_in_memory().unwrap();
        store.append(vec![rec("audit", None, 1)]).await.unwrap();
        let c = store.append(Vec::new()).await.unwrap();
        assert_eq!(c.seqs, 2..2);
        assert!(c.seqs.is_empty());
    }

    #[tokio::test]
    async fn unencodable_record_is_refused_before_queueing() {
        let store = Store::<Unencodable>::open_in_memory().unwrap();
        let mut map = std::collections::BTreeMap::new();
        map.insert((1, 2), 3);
        let err = store.append(vec![Unencodable { map }]).await.unwrap_err();
        assert!(matches!(err, StoreError::Encode(_)), "{err:?}");
        assert_eq!(store.stats().unwrap().records, 0);
    }

    #[tokio::test]
    async fn appends_after_close_are_refused_from_every_clone() {
        let store = Store::<Rec>::open_in_memory().unwrap();
        let other = store.clone();
        store.append(vec![rec("audit", None, 1)]).await.unwrap();
        store.close().await.unwrap();
        let err = other.append(vec![rec("audit", None, 2)]).await.unwrap_err();
        assert!(matches!(err, StoreError::Closed), "{err:?}");
        // Reads still work on the closed log.
        assert_eq!(other.load_all().unwrap().len(), 1);
        // A second close is harmless.
        other.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_body_names_its_seq() {
        let store = Store::<Rec>::open_in_memory().unwrap();
        store
            .append(vec![
                rec("a", None, 1),
                rec("b", None, 2),
                rec("c", None, 3),
            ])
            .await
            .unwrap();
        lock(&store.inner.reader)
            .execute("UPDATE events SET body = '{not json' WHERE seq = 2", [])
            .unwrap();
        match store.load_all() {
            Err(StoreError::CorruptBody { seq, .. }) => assert_eq!(seq, 2),
            other => panic!("expected CorruptBody at 2, got {other:?}"),
        }
        let report = store.verify().unwrap();
        assert_eq!(
            report.first_broken,
            Some(ChainBreak {
                seq: 2,
                reason: BreakReason::HashMismatch
            })
        );
        assert_eq!(report.records_verified, 1);
        assert_eq!(report.last_seq, Some(3));
    }

    #[tokio::test]
    async fn verify_names_deleted_and_relinked_rows() {
        let store = Store::<Rec>::open_in_memory().unwrap();
        let recs: Vec<Rec> = (0..5).map(|i| rec("audit", None, i)).collect();
        store.append(recs).await.unwrap();
        lock(&store.inner.reader)
            .execute("DELETE FROM events WHERE seq = 3", [])
            .unwrap();
        let report = store.verify().unwrap();
        assert_eq!(
            report.first_broken,
            Some(ChainBreak {
                seq: 4,
                reason: BreakReason::SeqGap { expected: 3 }
            })
        );

        // Renumbering to hide the gap still breaks the link.
        lock(&store.inner.reader)
            .execute_batch(
                "UPDATE events SET seq = 3 WHERE seq = 4; UPDATE events SET seq = 4 WHERE seq = 5;",
            )
            .unwrap();
        let report = store.verify().unwrap();
        assert_eq!(report.first_broken.map(|b| b.seq), Some(3));

        // A wrongly typed column is reported, not a panic or an error.
        let store = Store::<Rec>::open_in_memory().unwrap();
        store.append(vec![rec("audit", None, 1)]).await.unwrap();
        {
            let conn = lock(&store.inner.reader);
            // STRICT tables refuse a wrongly typed value, so drop to a non-strict copy.
            conn.execute_batch(
                "CREATE TABLE loose AS SELECT * FROM events; DROP TABLE events;
                 ALTER TABLE loose RENAME TO events; UPDATE events SET hash = 'text';",
            )
            .unwrap();
        }
        let report = store.verify().unwrap();
        assert_eq!(
            report.first_broken,
            Some(ChainBreak {
                seq: 1,
                reason: BreakReason::Malformed { column: "hash" }
            })
        );
    }
}
