//! What a stopped gate's local ledger holds, read with the library (the counterpart of
//! [`super::redis::ledger_view`] for `backend = "local"`): which of the subjects the upstream
//! received are missing from the entity's window.

use std::path::Path;
use std::time::SystemTime;

use transfer_gate::ledger::{Ledger, LocalLedger, LocalOptions, Scope, Subject, SubjectHasher};
use transfer_gate::model::Regime;

/// Opens the local ledger in `data_dir` (the gate must not be running: one writer) with the
/// hash key in `key_file`, and returns the `user_id`s of `forwarded` that are not in the
/// entity's window under `regime`. The ledger is closed on return.
pub async fn local_ledger_missing(
    data_dir: &Path,
    key_file: &Path,
    forwarded: impl IntoIterator<Item = u64>,
    regime: Regime,
) -> Vec<u64> {
    let hasher = SubjectHasher::load_or_create(key_file)
        .unwrap_or_else(|e| panic!("{}: {e}", key_file.display()));
    let l = LocalLedger::open_in_data_dir(data_dir, LocalOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", data_dir.display()));
    let ids = l.register_scopes(&[Scope::Entity]).await.unwrap();
    let forwarded: Vec<u64> = forwarded.into_iter().collect();
    let subject = |id: u64| Subject {
        key: hasher.hash("field", id.to_string().as_bytes()),
        sensitive: false,
    };
    let mut missing = Vec::new();
    // One probe per id would be slow, one probe for all says how many but not which: probe
    // in chunks and look into the chunks that have new subjects.
    for chunk in forwarded.chunks(4096) {
        let subjects: Vec<Subject> = chunk.iter().map(|&id| subject(id)).collect();
        let p = l
            .probe(&subjects, &ids, regime, SystemTime::now())
            .await
            .unwrap();
        if p[0].new_all > 0 {
            for &id in chunk {
                let p = l
                    .probe(&[subject(id)], &ids, regime, SystemTime::now())
                    .await
                    .unwrap();
                if p[0].new_all > 0 {
                    missing.push(id);
                }
            }
        }
    }
    missing
}
