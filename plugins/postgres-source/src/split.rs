//! Splitting a stream for parallel reads: full-refresh tables with a primary key are cut
//! into ranges of the key's first column, and every range is read from one snapshot.
//!
//! `splits` opens a repeatable-read transaction, exports its snapshot
//! (`pg_export_snapshot()`), estimates the table's rows and takes the range bounds as
//! percentiles of the first key column. The exporting session stays open, idle in its
//! transaction, for as long as this instance lives (or until the next stream is split):
//! the snapshot can be imported only while it does. Each reader imports it with
//! `SET TRANSACTION SNAPSHOT` before its COPY, so the ranges together are one consistent
//! read of the table, as a single COPY would be.
//!
//! A split's descriptor also names the plan it belongs to. The host keeps a plan of
//! several splits until the stream is read to its end, so a resumed run reads the same
//! ranges; a split's position records its plan, which is how `open` tells a range this
//! plan already finished (read nothing) from one a finished earlier run left (read it
//! again). A resumed run cannot import the snapshot of the run that planned it: its
//! readers then read from their own snapshots, with a note in the log.

use std::cell::RefCell;

use ingest_sdk::host::{log, Level};
use ingest_sdk::source::Split;
use ingest_sdk::{Error, Result};
use postgres_client::sql::{ident, literal};
use postgres_client::{Connection, PgError};
use serde::{Deserialize, Serialize};

use crate::config::{SourceConfig, Sync};
use crate::plan::StreamPlan;

/// Splits of one table at most, whatever `split_rows` asks for.
pub const MAX_SPLITS: u64 = 64;

/// Rows the bounds are computed from at most (a sample above that).
const SAMPLE_ROWS: f64 = 200_000.0;

thread_local! {
    /// The session whose transaction exported the snapshot of the stream being read.
    static EXPORTER: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

/// What a split's descriptor holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The plan this split belongs to.
    pub plan: String,
    /// The snapshot every split of the plan reads from, while its exporter lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The range of the first key column: from `lower` (inclusive; none: from the first
    /// row, NULLs included) to `upper` (exclusive; none: to the last row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<String>,
}

impl Descriptor {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a descriptor serialises")
    }

    /// The descriptor `open` was given; an empty one (no plan) is the whole stream.
    pub fn decode(stream: &str, bytes: &[u8]) -> Result<Descriptor> {
        if bytes.is_empty() {
            return Ok(Descriptor::default());
        }
        serde_json::from_slice(bytes).map_err(|e| {
            Error::fatal(format!(
                "stream `{stream}`: a split descriptor is unreadable ({e})"
            ))
        })
    }

    /// Whether the split is a range of the key rather than the whole stream.
    pub fn is_range(&self) -> bool {
        self.lower.is_some() || self.upper.is_some()
    }
}

/// The splits of `plan`'s stream: key ranges of a full-refresh table of more than
/// `split_rows` rows, otherwise the whole stream as one split.
pub fn plan(conn: &mut Connection, cfg: &SourceConfig, plan: &StreamPlan) -> Result<Vec<Split>> {
    let id = postgres_client::nonce(conn.backend_pid);
    let whole = || {
        vec![Split {
            id: "all".into(),
            descriptor: Descriptor {
                plan: id.clone(),
                ..Descriptor::default()
            }
            .encode(),
        }]
    };
    if plan.sync != Sync::FullRefresh
        || plan.primary_key.is_empty()
        || cfg.split_rows == 0
        || plan.relation.starts_with('(')
    {
        return Ok(whole());
    }
    let at = |what: &'static str| {
        let stream = plan.name.clone();
        move |e: PgError| e.into_plugin_error(format_args!("stream `{stream}`: {what}"))
    };
    conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .map_err(at("BEGIN"))?;
    let table = conn
        .query(&format!(
            "SELECT c.reltuples::bigint, c.relkind FROM pg_catalog.pg_class c WHERE c.oid = to_regclass({})",
            literal(&plan.relation)
        ))
        .map_err(at("estimating its rows"))?;
    let row = table.rows.first().cloned().unwrap_or_default();
    let estimate: i64 = row
        .first()
        .cloned()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let kind = row.get(1).cloned().flatten().unwrap_or_default();
    if !matches!(kind.as_str(), "r" | "p" | "m") {
        let _ = conn.query("ROLLBACK");
        return Ok(whole());
    }
    let rows = if estimate >= 0 {
        estimate as f64
    } else {
        // Never analysed: count.
        conn.query(&format!("SELECT count(*) FROM {}", plan.relation))
            .map_err(at("counting its rows"))?
            .scalar()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let wanted = ((rows / cfg.split_rows as f64).ceil() as u64).clamp(1, MAX_SPLITS);
    if wanted < 2 {
        let _ = conn.query("ROLLBACK");
        return Ok(whole());
    }
    let snapshot = conn
        .query("SELECT pg_export_snapshot()")
        .map_err(at("exporting a snapshot"))?
        .scalar()
        .map(str::to_string);
    let fractions: Vec<String> = (1..wanted)
        .map(|i| format!("{}", i as f64 / wanted as f64))
        .collect();
    let sample = if rows > SAMPLE_ROWS && kind != "p" {
        format!(
            " TABLESAMPLE SYSTEM ({})",
            (100.0 * SAMPLE_ROWS / rows).max(0.01)
        )
    } else {
        String::new()
    };
    let first = ident(&plan.primary_key[0]);
    let bounds = conn
        .query(&format!(
            "SELECT b::text FROM unnest((SELECT percentile_disc(ARRAY[{}]::float8[]) WITHIN GROUP (ORDER BY s.{first}) \
             FROM {} AS s{sample} WHERE s.{first} IS NOT NULL)) WITH ORDINALITY AS u(b, n) ORDER BY n",
            fractions.join(", "),
            plan.relation
        ))
        .map_err(at("planning key ranges"))?;
    let mut cuts: Vec<String> = Vec::new();
    for value in bounds
        .rows
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
    {
        if cuts.last() != Some(&value) {
            cuts.push(value);
        }
    }
    if cuts.is_empty() {
        let _ = conn.query("ROLLBACK");
        return Ok(whole());
    }
    let count = cuts.len() + 1;
    let mut splits = Vec::with_capacity(count);
    for i in 0..count {
        let descriptor = Descriptor {
            plan: id.clone(),
            snapshot: snapshot.clone(),
            lower: i.checked_sub(1).map(|j| cuts[j].clone()),
            upper: cuts.get(i).cloned(),
        };
        splits.push(Split {
            id: format!("keys-{}-of-{count}", i + 1),
            descriptor: descriptor.encode(),
        });
    }
    log(
        Level::Info,
        &format!(
            "stream `{}`: about {rows} rows in {count} key ranges of `{}`, read from one snapshot",
            plan.name, plan.primary_key[0]
        ),
    );
    Ok(splits)
}

/// Keep `conn`, whose transaction exported the snapshot of the splits just planned, open
/// for their readers; the previous stream's exporter is closed.
pub fn keep_exporter(conn: Connection) {
    let previous = EXPORTER.with(|e| e.borrow_mut().replace(conn));
    if let Some(previous) = previous {
        previous.close();
    }
}

/// Start the transaction a split is read in: from the plan's snapshot when it can still
/// be imported, else from a snapshot of its own.
pub fn begin(conn: &mut Connection, stream: &str, descriptor: &Descriptor) -> Result<()> {
    let Some(snapshot) = &descriptor.snapshot else {
        return Ok(());
    };
    let at = |what: &'static str| {
        let stream = stream.to_string();
        move |e: PgError| e.into_plugin_error(format_args!("stream `{stream}`: {what}"))
    };
    let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
    conn.query(begin).map_err(at("BEGIN"))?;
    if let Err(e) = conn.query(&format!("SET TRANSACTION SNAPSHOT {}", literal(snapshot))) {
        log(
            Level::Info,
            &format!(
                "stream `{stream}`: the snapshot the key ranges were planned in is gone ({e}); this range reads from a snapshot of its own"
            ),
        );
        conn.query("ROLLBACK").map_err(at("ROLLBACK"))?;
        conn.query(begin).map_err(at("BEGIN"))?;
    }
    Ok(())
}
