//! `tocsind audit`: the offline check of the 叫应 record's hash chain, run as the operator
//! runs it — the real binary against a log file, intact and then edited behind its back.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on a broken fixture"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A record as the store keeps it; the audit reads only the chain, not the body's meaning.
#[derive(serde::Serialize, serde::Deserialize)]
struct Rec {
    kind: String,
    alert: Option<String>,
    at: i64,
    text: String,
}

impl tocsin_store::LogRecord for Rec {
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

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tocsind-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn audit(db: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tocsind"))
        .args(["audit", "--db"])
        .arg(db)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn audit_passes_an_intact_log_and_names_the_first_edited_record() {
    let dir = temp_dir();
    let db = dir.join("tocsin.db");
    let store: tocsin_store::Store<Rec> =
        tocsin_store::Store::open(&db, tocsin_store::StoreOptions::default()).unwrap();
    let recs = (0..5)
        .map(|i| Rec {
            kind: if i == 3 {
                "ack_recorded"
            } else {
                "attempt_sent"
            }
            .into(),
            alert: Some("A-1".into()),
            at: 1_000 * i,
            text: format!("record {i}"),
        })
        .collect();
    store.append(recs).await.unwrap();

    let (ok, text) = audit(&db);
    assert!(ok, "{text}");
    assert!(text.contains("records verified: 5 of 5"), "{text}");
    assert!(text.contains("chain intact"), "{text}");

    // Someone turns record 4 into a forged ack with a SQLite shell.
    let forged = r#"{"kind":"ack_recorded","alert":"A-1","at":3000,"text":"forged"}"#;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE events SET body = ?1 WHERE seq = 4", [forged])
        .unwrap();
    let (ok, text) = audit(&db);
    assert!(!ok, "{text}");
    assert!(text.contains("records verified: 3 of 5"), "{text}");
    assert!(text.contains("chain broken at record 4"), "{text}");

    // No log there: a clear error, not a new empty file.
    let (ok, text) = audit(&dir.join("nothing.db"));
    assert!(!ok && text.contains("nothing.db"), "{text}");
    assert!(!dir.join("nothing.db").exists());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
