//! The store against real files: reopen and migration, concurrency and group commit,
//! tampering, and a child process killed with SIGKILL mid-append.
//!
//! Everything lives in one test binary because debug test binaries are large.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic here is a failed test with its message"
)]

use serde::{Deserialize, Serialize};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use tocsin_store::{
    BreakReason, ChainBreak, Durability, LogRecord, SCHEMA_VERSION, Store, StoreError, StoreOptions,
};

/// A record shaped like the router's: a kind, an optional alert, a time and a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Rec {
    kind: String,
    alert: Option<String>,
    at: i64,
    id: String,
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

fn rec(id: &str, alert: Option<&str>, at: i64) -> Rec {
    Rec {
        kind: if alert.is_some() { "attempt" } else { "audit" }.into(),
        alert: alert.map(Into::into),
        at,
        id: id.into(),
    }
}

/// A directory removed when the test ends (whether it passes or not).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "tocsin-store-{}-{}-{}-{:x}",
            name,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            random_u64()
        );
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("tocsin.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Randomness without a dependency: std seeds every RandomState from the OS.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

fn open(path: &Path) -> Store<Rec> {
    Store::open(path, StoreOptions::default()).unwrap()
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[tokio::test]
async fn file_round_trip_survives_reopen_and_the_chain_continues() {
    let dir = TempDir::new("reopen");
    let path = dir.db();
    let first = vec![
        rec("a1", Some("A1"), 100),
        rec("a2", Some("A1"), 101),
        rec("x", None, 102),
    ];
    {
        let store = open(&path);
        assert_eq!(store.stats().unwrap().records, 0);
        assert_eq!(store.append(first.clone()).await.unwrap().seqs, 1..4);
        store.close().await.unwrap();
    }
    // The empty file was migrated to the current schema.
    let version: i64 = raw(&path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);

    let store = open(&path);
    assert_eq!(store.load_all().unwrap(), first);
    let more = vec![rec("b1", Some("B7"), 200), rec("a3", Some("A1"), 201)];
    assert_eq!(store.append(more.clone()).await.unwrap().seqs, 4..6);
    assert_eq!(
        store.load_all().unwrap(),
        [first.clone(), more.clone()].concat()
    );
    assert_eq!(
        store.load_alert("A1").unwrap(),
        vec![first[0].clone(), first[1].clone(), more[1].clone()]
    );
    let report = store.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records_verified, 5);
    let stats = store.stats().unwrap();
    assert_eq!((stats.records, stats.last_seq, stats.alerts), (5, 5, 2));
    assert!(stats.file_bytes > 0);
    // Counters are per opening: this handle committed one group.
    assert_eq!((stats.transactions, stats.appends), (1, 1));
    store.close().await.unwrap();
}

#[tokio::test]
async fn field_kit_durability_opens_and_appends() {
    let dir = TempDir::new("normal");
    let opts = StoreOptions {
        durability: Durability::Normal,
        ..StoreOptions::default()
    };
    let store = Store::<Rec>::open(&dir.db(), opts).unwrap();
    store.append(vec![rec("n", None, 1)]).await.unwrap();
    let mode: String = raw(&dir.db())
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "the file stays in WAL mode");
    assert_eq!(store.load_all().unwrap().len(), 1);
}

#[test]
fn a_database_from_a_newer_tocsin_is_refused_clearly() {
    let dir = TempDir::new("newer");
    let path = dir.db();
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 5)
        .unwrap();
    let err = Store::<Rec>::open(&path, StoreOptions::default()).unwrap_err();
    match &err {
        StoreError::NewerSchema { found, known } => {
            assert_eq!(*found, SCHEMA_VERSION + 5);
            assert_eq!(*known, SCHEMA_VERSION);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("newer"), "{message}");
    // Refusing must not touch the file.
    let version: i64 = raw(&path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_share_commits_and_lose_nothing() {
    const TASKS: usize = 50;
    const APPENDS: usize = 20;
    let dir = TempDir::new("concurrent");
    let store = open(&dir.db());
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut shared_a_commit = false;
            for i in 0..APPENDS {
                // Two records per append: an append must stay contiguous in the log.
                let alert = format!("T{task}");
                let batch = vec![
                    rec(&format!("{task}-{i}-a"), Some(&alert), i as i64),
                    rec(&format!("{task}-{i}-b"), None, i as i64),
                ];
                let c = store.append(batch).await.unwrap();
                assert_eq!(c.seqs.end - c.seqs.start, 2);
                shared_a_commit |= c.group_records > 2;
            }
            shared_a_commit
        }));
    }
    let mut any_shared = false;
    for h in handles {
        any_shared |= h.await.unwrap();
    }

    let all = store.load_all().unwrap();
    assert_eq!(all.len(), TASKS * APPENDS * 2);
    let ids: HashSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "every record exactly once");
    // Each append's two records are adjacent, and each task's appends are in order.
    let mut next_per_task: BTreeMap<usize, usize> = BTreeMap::new();
    for pair in all.chunks(2) {
        let (task, i, _) = parse_id(&pair[0].id);
        assert_eq!(pair[1].id, format!("{task}-{i}-b"));
        let expected = next_per_task.entry(task).or_insert(0);
        assert_eq!(i, *expected, "task {task} appends out of order");
        *expected += 1;
    }
    assert_eq!(next_per_task.len(), TASKS);
    for task in 0..TASKS {
        assert_eq!(
            store.load_alert(&format!("T{task}")).unwrap().len(),
            APPENDS
        );
    }

    let report = store.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records_verified, (TASKS * APPENDS * 2) as u64);

    let stats = store.stats().unwrap();
    assert_eq!(stats.appends, (TASKS * APPENDS) as u64);
    assert!(
        stats.transactions < stats.appends,
        "group commit should merge concurrent appends: {} transactions for {} appends",
        stats.transactions,
        stats.appends
    );
    assert!(any_shared, "some caller saw its commit shared");
    eprintln!(
        "{} appends in {} transactions",
        stats.appends, stats.transactions
    );
    store.close().await.unwrap();
}

fn parse_id(id: &str) -> (usize, usize, String) {
    let mut parts = id.split('-');
    let task = parts.next().unwrap().parse().unwrap();
    let i = parts.next().unwrap().parse().unwrap();
    (task, i, parts.next().unwrap().to_string())
}

#[tokio::test]
async fn tampering_with_a_row_is_reported_at_its_seq() {
    let dir = TempDir::new("tamper");
    let path = dir.db();
    let store = open(&path);
    let recs: Vec<Rec> = (0..10)
        .map(|i| rec(&format!("r{i}"), Some("A1"), i))
        .collect();
    store.append(recs).await.unwrap();
    assert!(store.verify().unwrap().is_intact());

    // Someone edits an ack into the record with a plain SQLite shell while the daemon runs.
    let forged = serde_json::to_string(&rec("forged", Some("A1"), 6)).unwrap();
    raw(&path)
        .execute("UPDATE events SET body = ?1 WHERE seq = 7", [forged])
        .unwrap();
    let report = store.verify().unwrap();
    assert_eq!(
        report.first_broken,
        Some(ChainBreak {
            seq: 7,
            reason: BreakReason::HashMismatch
        })
    );
    assert_eq!(report.records_verified, 6);
    assert_eq!(report.last_seq, Some(10));
    // The forged body still decodes: tampering is caught by the chain, not the parser.
    assert_eq!(store.load_all().unwrap()[6].id, "forged");
    // The offline check (`tocsind audit`) reads the file alone and finds the same break,
    // and leaves the file as it was.
    let before = std::fs::read(&path).unwrap();
    let offline = tocsin_store::verify_file(&path).unwrap();
    assert_eq!(offline, report);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(tocsin_store::verify_file(&dir.0.join("missing.db")).is_err());

    // Changing only an indexed column is caught too.
    let dir2 = TempDir::new("tamper-col");
    let store2 = open(&dir2.db());
    store2
        .append(vec![rec("a", Some("A1"), 1), rec("b", Some("A1"), 2)])
        .await
        .unwrap();
    raw(&dir2.db())
        .execute("UPDATE events SET alert = 'A2' WHERE seq = 2", [])
        .unwrap();
    assert_eq!(
        store2.verify().unwrap().first_broken.map(|b| b.seq),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_while_appends_continue() {
    let dir = TempDir::new("wal-reads");
    let store = open(&dir.db());
    let writer = store.clone();
    let appending = tokio::spawn(async move {
        for i in 0..200 {
            writer
                .append(vec![rec(&format!("w{i}"), Some("A1"), i)])
                .await
                .unwrap();
        }
    });
    // Each read sees a consistent prefix of the log and an intact chain.
    let mut seen = 0;
    while !appending.is_finished() {
        let reader = store.clone();
        let (all, report) = tokio::task::spawn_blocking(move || {
            (reader.load_all().unwrap(), reader.verify().unwrap())
        })
        .await
        .unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert!(all.len() >= seen);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.id, format!("w{i}"));
        }
        seen = all.len();
    }
    appending.await.unwrap();
    assert_eq!(store.load_all().unwrap().len(), 200);
}

/// Set in the child process: the database it appends to until it is killed.
const CHILD_DB_ENV: &str = "TOCSIN_STORE_CRASH_CHILD_DB";
/// Set in the child process: a tag that keeps ids unique across rounds.
const CHILD_ROUND_ENV: &str = "TOCSIN_STORE_CRASH_CHILD_ROUND";

/// The child's entry point. In a normal test run it does nothing; the crash test re-runs
/// this test binary with only this test selected and the environment set.
#[test]
fn crash_child_entry() {
    let Ok(db) = std::env::var(CHILD_DB_ENV) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND_ENV).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async move {
        let store: Store<Rec> = open(Path::new(&db));
        let mut tasks = Vec::new();
        for task in 0..4 {
            let store = store.clone();
            let round = round.clone();
            tasks.push(tokio::spawn(async move {
                // Bounded so a parent that never kills us still ends.
                for i in 0..5000u32 {
                    let n = 1 + (i % 3) as usize;
                    let batch: Vec<Rec> = (0..n)
                        .map(|k| rec(&format!("{round}.{task}.{i}.{k}"), Some("A1"), i64::from(i)))
                        .collect();
                    let ids: Vec<String> = batch.iter().map(|r| r.id.clone()).collect();
                    store.append(batch).await.unwrap();
                    // Only now may anyone be told: the parent treats this line as a promise.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "committed {}", ids.join(",")).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn records_reported_committed_survive_sigkill() {
    let dir = TempDir::new("crash");
    let path = dir.db();
    let exe = std::env::current_exe().unwrap();
    let mut promised: HashSet<String> = HashSet::new();

    for round in 0..3 {
        // Kill after a random number of promises, while the other tasks are mid-append.
        let kill_after = 5 + (random_u64() % 120) as usize;
        let mut child = Command::new(&exe)
            .args([
                "crash_child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB_ENV, &path)
            .env(CHILD_ROUND_ENV, round.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0usize;
        while seen < kill_after {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(ids) = line.strip_prefix("committed ") {
                        promised.extend(ids.split(',').map(str::to_string));
                        seen += 1;
                    }
                }
                _ => break,
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        // Promises already in the pipe when the child died count too.
        for line in lines.map_while(Result::ok) {
            if let Some(ids) = line.strip_prefix("committed ") {
                promised.extend(ids.split(',').map(str::to_string));
                seen += 1;
            }
        }
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        assert!(
            seen >= kill_after,
            "child ended early ({status}) after {seen} commits:\n{stderr}"
        );
        assert!(!status.success(), "the child must have been killed");

        // The parent opens the crashed file like a restarting daemon would.
        let store = open(&path);
        let all = store.load_all().unwrap();
        let stored: HashSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(stored.len(), all.len(), "no record stored twice");
        let missing: Vec<&String> = promised
            .iter()
            .filter(|id| !stored.contains(id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} promised records lost, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        let report = store.verify().unwrap();
        assert!(report.is_intact(), "round {round}: {report:?}");
        assert_eq!(report.records_verified, all.len() as u64);
        eprintln!(
            "round {round}: killed after {seen} promises; {} promised, {} stored",
            promised.len(),
            all.len()
        );
        drop(store);
    }
}
