//! The single writer thread and its group commit.
//!
//! One thread owns the writing connection. Callers send already-serialized records with a
//! oneshot reply; the thread takes one job, drains whatever else is queued (up to a record
//! cap), writes the whole group in ONE transaction and answers every caller only after
//! COMMIT returned. So a burst of concurrent appenders shares one fsync, and nobody hears
//! "committed" before it is true. If the transaction fails, every caller in the group gets
//! the error and nothing of the group is visible (the transaction rolls back).

use crate::chain::{GENESIS, link_hash};
use crate::{Committed, StoreError};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};

/// One record, serialized by the caller so the writer thread only does I/O.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    /// The record's time in milliseconds.
    pub at: i64,
    /// The record's kind, e.g. `alert_accepted`.
    pub kind: String,
    /// The alert the record belongs to, if any.
    pub alert: Option<String>,
    /// The record as JSON.
    pub body: String,
}

/// Where the writer sends one caller's outcome.
pub(crate) type Reply = oneshot::Sender<Result<Committed, StoreError>>;

/// A request to the writer thread.
pub(crate) enum Job {
    /// Append these records and answer once they are committed (or not).
    Append {
        /// The caller's records, in the caller's order.
        records: Vec<Encoded>,
        /// Where the outcome goes.
        reply: Reply,
    },
    /// Commit what came before, refuse what comes after, and stop.
    Close {
        /// Answered once the writing connection is closed.
        reply: oneshot::Sender<()>,
    },
}

/// Counters the writer keeps for [`crate::StoreStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Group transactions committed since open.
    pub transactions: AtomicU64,
    /// Append calls answered "committed" since open.
    pub appends: AtomicU64,
}

/// Locks a connection, taking it over even if a panicking holder poisoned the lock: the
/// connection itself stays consistent because SQLite rolls back an unfinished transaction.
pub(crate) fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What one pass of [`gather`] collected.
pub(crate) struct Group {
    /// Append jobs to commit together: each caller's records with its reply.
    pub appends: Vec<(Vec<Encoded>, Reply)>,
    /// A close request met while draining; handled after the group commits.
    pub close: Option<oneshot::Sender<()>>,
    /// A job that would have pushed the group over the cap; it starts the next group.
    pub carry: Option<Job>,
}

/// Starting from `first`, takes every job already queued until the group holds `cap` records
/// or a close request arrives. Never waits: what is not queued yet goes in the next group.
pub(crate) fn gather(first: Job, rx: &mut mpsc::Receiver<Job>, cap: usize) -> Group {
    let mut group = Group {
        appends: Vec::new(),
        close: None,
        carry: None,
    };
    let mut records = 0usize;
    let mut next = Some(first);
    while let Some(job) = next.take() {
        match job {
            Job::Close { reply } => {
                group.close = Some(reply);
                break;
            }
            Job::Append {
                records: recs,
                reply,
            } => {
                // The first job always goes in, however large: a group is never empty.
                if !group.appends.is_empty() && records.saturating_add(recs.len()) > cap {
                    group.carry = Some(Job::Append {
                        records: recs,
                        reply,
                    });
                    break;
                }
                records = records.saturating_add(recs.len());
                group.appends.push((recs, reply));
            }
        }
        if records >= cap {
            break;
        }
        next = rx.try_recv().ok();
    }
    group
}

/// Writes every job's records in one IMMEDIATE transaction, chaining hashes from the current
/// head, and returns each job's sequence range. Nothing is visible unless this returns Ok.
pub(crate) fn commit_group(
    conn: &mut Connection,
    jobs: &[&[Encoded]],
) -> Result<Vec<Range<i64>>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // The head is read inside the write lock, so even a second process appending to the same
    // file (an operator tool, a misconfigured second daemon) cannot fork the chain.
    let head: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (mut seq, mut prev) = head.unwrap_or((0, GENESIS.to_vec()));
    let mut ranges = Vec::with_capacity(jobs.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (seq, at, kind, alert, body, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut summary = tx.prepare_cached(
            "INSERT INTO alerts (id, first_seq, last_seq, last_kind, last_at, records)
             VALUES (?1, ?2, ?2, ?3, ?4, 1)
             ON CONFLICT (id) DO UPDATE SET
                 last_seq = excluded.last_seq,
                 last_kind = excluded.last_kind,
                 last_at = excluded.last_at,
                 records = records + 1",
        )?;
        for records in jobs {
            let start = seq.saturating_add(1);
            for rec in *records {
                // At i64::MAX the insert collides with the existing row and fails cleanly.
                seq = seq.saturating_add(1);
                let hash = link_hash(
                    &prev,
                    seq,
                    rec.at,
                    &rec.kind,
                    rec.alert.as_deref(),
                    &rec.body,
                );
                insert.execute(params![
                    seq,
                    rec.at,
                    rec.kind,
                    rec.alert,
                    rec.body,
                    prev,
                    hash.as_slice()
                ])?;
                if let Some(alert) = &rec.alert {
                    summary.execute(params![alert, seq, rec.kind, rec.at])?;
                }
                prev = hash.to_vec();
            }
            ranges.push(start..seq.saturating_add(1));
        }
    }
    tx.commit()?;
    Ok(ranges)
}

/// The writer thread's loop: runs until every handle is dropped or a close request arrives.
pub(crate) fn run(
    conn: Arc<Mutex<Connection>>,
    mut rx: mpsc::Receiver<Job>,
    counters: Arc<Counters>,
    cap: usize,
) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None => match rx.blocking_recv() {
                Some(job) => job,
                // Every handle is gone and the queue is drained.
                None => return,
            },
        };
        let group = gather(first, &mut rx, cap);
        carry = group.carry;
        if !group.appends.is_empty() {
            commit_and_reply(&conn, group.appends, &counters);
        }
        if let Some(reply) = group.close {
            rx.close();
            // Jobs queued behind the close request were never written: say so.
            while let Ok(job) = rx.try_recv() {
                refuse(job);
            }
            if let Some(job) = carry.take() {
                refuse(job);
            }
            {
                let guard = lock(&conn);
                // Fold the WAL back into the main file so a copied .db is complete; the data
                // is already durable, so a failure here (e.g. a reader holding a snapshot)
                // costs nothing.
                let _ = guard.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
            }
            drop(conn);
            let _ = reply.send(());
            return;
        }
    }
}

/// Answers a job that arrived after close.
fn refuse(job: Job) {
    match job {
        Job::Append { reply, .. } => {
            let _ = reply.send(Err(StoreError::Closed));
        }
        Job::Close { reply } => {
            let _ = reply.send(());
        }
    }
}

/// Commits one group and answers every caller in it.
fn commit_and_reply(
    conn: &Mutex<Connection>,
    appends: Vec<(Vec<Encoded>, Reply)>,
    counters: &Counters,
) {
    let slices: Vec<&[Encoded]> = appends.iter().map(|(recs, _)| recs.as_slice()).collect();
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let outcome = {
        let mut guard = lock(conn);
        commit_group(&mut guard, &slices)
    };
    match outcome {
        Ok(ranges) => {
            let group = counters.transactions.fetch_add(1, Ordering::SeqCst) + 1;
            counters
                .appends
                .fetch_add(appends.len() as u64, Ordering::SeqCst);
            for ((_, reply), seqs) in appends.into_iter().zip(ranges) {
                // A caller that stopped waiting still had its records committed.
                let _ = reply.send(Ok(Committed {
                    seqs,
                    group,
                    group_records: total,
                }));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for (_, reply) in appends {
                let _ = reply.send(Err(StoreError::Commit(Arc::clone(&e))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::migrate;

    fn rec(kind: &str, alert: Option<&str>, at: i64) -> Encoded {
        Encoded {
            at,
            kind: kind.to_string(),
            alert: alert.map(str::to_string),
            body: format!("{{\"kind\":\"{kind}\",\"at\":{at}}}"),
        }
    }

    fn append_job(n: usize) -> (Job, oneshot::Receiver<Result<Committed, StoreError>>) {
        let (tx, rx) = oneshot::channel();
        let records = (0..n).map(|i| rec("k", None, i as i64)).collect();
        (Job::Append { records, reply: tx }, rx)
    }

    fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn
    }

    #[test]
    fn gather_takes_everything_queued_up_to_the_cap() {
        let (tx, mut rx) = mpsc::channel(16);
        let (first, _r0) = append_job(3);
        let mut waiting = Vec::new();
        for n in [2, 4, 5] {
            let (job, r) = append_job(n);
            tx.try_send(job).unwrap();
            waiting.push(r);
        }
        // Cap 10: 3 + 2 + 4 = 9 fits; the 5-record job would overflow and is carried.
        let group = gather(first, &mut rx, 10);
        let sizes: Vec<usize> = group.appends.iter().map(|(r, _)| r.len()).collect();
        assert_eq!(sizes, vec![3, 2, 4]);
        assert!(group.close.is_none());
        match group.carry {
            Some(Job::Append { records, .. }) => assert_eq!(records.len(), 5),
            _ => panic!("the overflowing job must be carried to the next group"),
        }
        assert!(rx.try_recv().is_err(), "nothing left behind in the queue");
    }

    #[test]
    fn gather_lets_an_oversized_first_job_through_alone() {
        let (_tx, mut rx) = mpsc::channel::<Job>(4);
        let (first, _r) = append_job(50);
        let group = gather(first, &mut rx, 10);
        assert_eq!(group.appends.len(), 1);
        assert_eq!(group.appends[0].0.len(), 50);
    }

    #[test]
    fn gather_stops_at_close() {
        let (tx, mut rx) = mpsc::channel(16);
        let (first, _r0) = append_job(1);
        let (close_tx, _close_rx) = oneshot::channel();
        tx.try_send(Job::Close { reply: close_tx }).unwrap();
        let (after, _r1) = append_job(1);
        tx.try_send(after).unwrap();
        let group = gather(first, &mut rx, 100);
        assert_eq!(group.appends.len(), 1);
        assert!(group.close.is_some());
        assert!(group.carry.is_none());
        assert!(rx.try_recv().is_ok(), "the job behind close stays queued");
    }

    #[test]
    fn commit_group_chains_from_the_head_and_assigns_ranges() {
        let mut conn = migrated();
        let a = [rec("alert_accepted", Some("A1"), 1)];
        let b = [
            rec("delivery_planned", Some("A1"), 2),
            rec("audit", None, 3),
        ];
        let ranges = commit_group(&mut conn, &[&a, &b]).unwrap();
        assert_eq!(ranges, vec![1..2, 2..4]);
        let empty: [Encoded; 0] = [];
        let ranges = commit_group(&mut conn, &[&empty, &a]).unwrap();
        assert_eq!(ranges, vec![4..4, 4..5]);

        let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = conn
            .prepare("SELECT seq, prev_hash, hash FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].1, GENESIS.to_vec());
        for pair in rows.windows(2) {
            assert_eq!(pair[1].1, pair[0].2, "prev_hash links to the previous row");
        }
        let (first_seq, last_seq, last_kind, count): (i64, i64, String, i64) = conn
            .query_row(
                "SELECT first_seq, last_seq, last_kind, records FROM alerts WHERE id = 'A1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            (first_seq, last_seq, last_kind.as_str(), count),
            (1, 4, "alert_accepted", 3)
        );
    }

    #[test]
    fn a_failed_group_leaves_nothing_and_every_caller_hears_it() {
        let conn = migrated();
        conn.execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.kind = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned record'); END;",
        )
        .unwrap();
        let conn = Mutex::new(conn);
        let counters = Counters::default();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let appends = vec![
            (vec![rec("ok", Some("A1"), 1)], tx1),
            (vec![rec("ok", None, 2), rec("poison", None, 3)], tx2),
        ];
        commit_and_reply(&conn, appends, &counters);
        for rx in [&mut rx1, &mut rx2] {
            match rx.try_recv() {
                Ok(Err(StoreError::Commit(e))) => {
                    assert!(e.to_string().contains("poisoned record"), "{e}")
                }
                other => panic!("expected a commit error, got {other:?}"),
            }
        }
        let guard = lock(&conn);
        let (events, alerts): (i64, i64) = guard
            .query_row(
                "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM alerts)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((events, alerts), (0, 0));
        assert_eq!(counters.transactions.load(Ordering::SeqCst), 0);
        drop(guard);

        // The chain head did not move: the next good group starts at seq 1 from genesis.
        let (tx3, mut rx3) = oneshot::channel();
        commit_and_reply(&conn, vec![(vec![rec("ok", None, 4)], tx3)], &counters);
        let committed = rx3.try_recv().unwrap().unwrap();
        assert_eq!(committed.seqs, 1..2);
        assert_eq!(committed.group, 1);
    }
}
