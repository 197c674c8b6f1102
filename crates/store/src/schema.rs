//! Schema versions, applied in order and recorded in `PRAGMA user_version`.
//!
//! Migrations are hand-rolled: each one runs in its own IMMEDIATE transaction together with
//! the bump of `user_version`, so a crash mid-migration leaves the previous version intact.
//! Append new migrations at the end; never edit a released one.

use crate::StoreError;
use rusqlite::{Connection, TransactionBehavior};

/// Migration `i` brings the schema from version `i` to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // v1: the event log and the per-alert summary kept in the same transaction.
    "CREATE TABLE events (
         seq       INTEGER PRIMARY KEY,
         at        INTEGER NOT NULL,
         kind      TEXT    NOT NULL,
         alert     TEXT,
         body      TEXT    NOT NULL,
         prev_hash BLOB    NOT NULL,
         hash      BLOB    NOT NULL
     ) STRICT;
     CREATE INDEX events_by_alert ON events(alert, seq);
     CREATE TABLE alerts (
         id        TEXT    PRIMARY KEY,
         first_seq INTEGER NOT NULL,
         last_seq  INTEGER NOT NULL,
         last_kind TEXT    NOT NULL,
         last_at   INTEGER NOT NULL,
         records   INTEGER NOT NULL
     ) STRICT;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Reads `user_version`.
fn user_version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Checks that `found` is a version this build can open.
fn check_version(found: i64) -> Result<(), StoreError> {
    if found < 0 {
        return Err(StoreError::ForeignSchema { found });
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Brings the database up to [`SCHEMA_VERSION`], refusing one from a newer build.
/// Returns the version found before migrating.
pub fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    let found = user_version(conn)?;
    check_version(found)?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let target = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
        if target <= found {
            continue;
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated between our first read and taking the lock.
        let now_at = user_version(&tx)?;
        check_version(now_at)?;
        if now_at >= target {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", target)?;
        tx.commit()?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_an_empty_database_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        // Idempotent: a second run finds the current version and changes nothing.
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('events', 'alerts')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 2);
    }

    #[test]
    fn refuses_newer_and_foreign_versions() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        match migrate(&mut conn) {
            Err(StoreError::NewerSchema { found, known }) => {
                assert_eq!(found, SCHEMA_VERSION + 1);
                assert_eq!(known, SCHEMA_VERSION);
            }
            other => panic!("expected NewerSchema, got {other:?}"),
        }
        conn.pragma_update(None, "user_version", -3).unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(StoreError::ForeignSchema { found: -3 })
        ));
    }
}
