//! What can go wrong in the store, each case with enough detail for an operator to act.

use std::sync::Arc;

/// An error from the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an open, a read or a migration.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The group transaction holding this append failed; none of its records were stored.
    #[error("commit failed, nothing of this append was stored: {0}")]
    Commit(#[source] Arc<rusqlite::Error>),
    /// The database was written by a newer Tocsin whose schema this build does not know.
    #[error(
        "database schema version {found} is newer than this build knows (up to {known}); \
         run the Tocsin version that wrote it, or a newer one"
    )]
    NewerSchema {
        /// The `user_version` found in the file.
        found: i64,
        /// The highest schema version this build can migrate to.
        known: i64,
    },
    /// The file carries a schema version Tocsin never writes, so it is not a Tocsin store.
    #[error("database schema version {found} is not a Tocsin store version")]
    ForeignSchema {
        /// The `user_version` found in the file.
        found: i64,
    },
    /// The database could not be switched to write-ahead logging (e.g. a network filesystem).
    #[error(
        "database refused WAL journal mode (it reports {got:?}); keep the store on a local disk"
    )]
    JournalMode {
        /// The journal mode SQLite reported instead of `wal`.
        got: String,
    },
    /// A record could not be serialized to JSON, so it was not appended.
    #[error("cannot encode record: {0}")]
    Encode(#[source] serde_json::Error),
    /// A stored body does not decode as the record type.
    #[error("record seq {seq} has a corrupt body: {source}")]
    CorruptBody {
        /// Sequence number of the unreadable record.
        seq: i64,
        /// Why the JSON did not decode.
        #[source]
        source: serde_json::Error,
    },
    /// A stored row has a column of the wrong type or encoding.
    #[error("record seq {seq} has an unreadable {column} column")]
    CorruptRow {
        /// Sequence number of the unreadable record.
        seq: i64,
        /// Name of the offending column.
        column: &'static str,
    },
    /// The store was closed; nothing more can be appended through it.
    #[error("store is closed; the append was not stored")]
    Closed,
    /// The writer thread stopped before answering; this append may or may not be stored.
    #[error("store writer stopped before answering; the append may or may not be stored")]
    WriterGone,
    /// The writer thread could not be started.
    #[error("cannot start the store writer thread: {0}")]
    Spawn(#[source] std::io::Error),
}
