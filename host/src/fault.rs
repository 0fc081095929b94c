//! Fault injection for crash tests. With `INGEST_FAULT=<point>@<epoch>` in the environment
//! the process aborts — no destructors, no flushing, like a power cut or `kill -9` — when a
//! run reaches that point of the checkpoint protocol in that epoch. Without the variable
//! every point is a no-op.
//!
//! The points, in protocol order: `before-prepare`, `after-prepare` (the sink staged the
//! epoch, the state does not know it), `mid-state-write` (the new state is written to its
//! temporary file, not yet renamed), `after-state` (the prepared epoch is recorded, nothing
//! is published), `after-sink-commit` (the sink published, the dead-letter queue not yet),
//! `after-commit` (both published, the commit not yet recorded). They are all in
//! `runtime::epoch`, which every commit — a run's, a recovery's, a replay's — goes through.

use std::sync::OnceLock;

/// Every point a fault can be injected at.
pub const POINTS: &[&str] = &[
    "before-prepare",
    "after-prepare",
    "mid-state-write",
    "after-state",
    "after-sink-commit",
    "after-commit",
];

fn configured() -> Option<&'static (String, u64)> {
    static FAULT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    FAULT
        .get_or_init(|| {
            let spec = std::env::var("INGEST_FAULT").ok()?;
            let (point, epoch) = spec.split_once('@')?;
            Some((point.to_string(), epoch.parse().ok()?))
        })
        .as_ref()
}

/// Abort the process if a fault is configured for `point` in `epoch`.
pub fn point(point: &str, epoch: u64) {
    debug_assert!(POINTS.contains(&point), "unknown fault point {point}");
    if let Some((p, e)) = configured() {
        if p == point && *e == epoch {
            eprintln!("fault injected: aborting at {point}@{epoch}");
            std::process::abort();
        }
    }
}
