//! The JSON Schema files in `schemas/json/` are generated from the Rust types; this test fails
//! when they are stale, and rewrites them so that the next run passes (commit the result).

use std::path::PathBuf;

use schemars::{JsonSchema, schema_for};
use swarm_schemas::{
    AuditEntry, DeadLetter, ExecutionRecord, Outcome, PostSignal, Signal, UnitManifest, UnitReply,
    UnitStatus,
};

fn check<T: JsonSchema>(file: &str, stale: &mut Vec<String>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("json")
        .join(file);
    let schema = schema_for!(T);
    let mut fresh = serde_json::to_string_pretty(&schema).expect("schema serialises");
    fresh.push('\n');
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != fresh {
        std::fs::write(&path, fresh).expect("write schema file");
        stale.push(file.to_owned());
    }
}

#[test]
fn json_schema_files_are_fresh() {
    let mut stale = Vec::new();
    check::<Signal>("signal.schema.json", &mut stale);
    check::<UnitManifest>("unit-manifest.schema.json", &mut stale);
    check::<UnitReply>("unit-reply.schema.json", &mut stale);
    check::<Outcome>("outcome.schema.json", &mut stale);
    check::<ExecutionRecord>("execution-record.schema.json", &mut stale);
    check::<DeadLetter>("dead-letter.schema.json", &mut stale);
    check::<PostSignal>("post-signal.schema.json", &mut stale);
    check::<UnitStatus>("unit-status.schema.json", &mut stale);
    check::<AuditEntry>("audit-entry.schema.json", &mut stale);
    assert!(
        stale.is_empty(),
        "stale schema files were regenerated, commit them: {stale:?}"
    );
}
