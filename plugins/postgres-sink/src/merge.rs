//! Publishing an epoch: the checks run on a staging table before it is prepared, and the
//! one transaction that merges it into the target and records the epoch.

use ingest_sdk::sink::WriteMode;
use ingest_sdk::{Error, Result};
use postgres_client::sql::{ident, literal};
use postgres_client::{Connection, PgError};

use crate::target::{Target, STAGE_ROW};
use crate::Token;

/// Merge the staging table named by `token` into the target and record `epoch`, in one
/// transaction. An epoch already recorded with this token changes nothing; one recorded
/// by another run is refused.
pub fn commit(
    conn: &mut Connection,
    target: &Target,
    mode: &WriteMode,
    epoch: u64,
    token: &Token,
) -> Result<()> {
    let at = format!(
        "postgres sink, stream `{}`, table {}, epoch {epoch}",
        target.stream,
        target.display()
    );
    let result = transaction(conn, target, mode, epoch, token, &at);
    if result.is_err() {
        let _ = conn.query("ROLLBACK");
    }
    result
}

fn transaction(
    conn: &mut Connection,
    target: &Target,
    mode: &WriteMode,
    epoch: u64,
    token: &Token,
    at: &str,
) -> Result<()> {
    let fail =
        |what: &'static str| move |e: PgError| e.into_plugin_error(format_args!("{at}: {what}"));
    conn.query("BEGIN").map_err(fail("BEGIN"))?;
    let marker = format!(
        "pipeline = {} AND stream = {} AND epoch = {epoch}",
        literal(&target.pipeline),
        literal(&target.stream)
    );
    let recorded = conn
        .query(&format!(
            "SELECT nonce FROM {} WHERE {marker} FOR UPDATE",
            target.epochs_sql()
        ))
        .map_err(fail("reading _ingest_epochs"))?;
    if let Some(nonce) = recorded.scalar() {
        conn.query("ROLLBACK").map_err(fail("ROLLBACK"))?;
        if nonce == token.nonce {
            return Ok(()); // a repeat: already published
        }
        return Err(recorded_by_another_run(target, epoch, at));
    }
    if let Some(stage) = &token.stage {
        let exists = conn
            .query(&format!(
                "SELECT to_regclass({}) IS NOT NULL",
                literal(&target.stage_sql(stage))
            ))
            .map_err(fail("finding the staging table"))?;
        if exists.scalar() != Some("t") {
            return Err(Error::fatal(format!(
                "{at}: the staging table {stage} holding the epoch's {} rows is gone, and the epoch is not recorded as committed; \
                 the rows must be read again: remove the state directory's last epoch or re-run from scratch",
                token.rows
            )));
        }
        for statement in merge_sql(target, mode, stage, None) {
            conn.query(&statement).map_err(fail("merging the epoch"))?;
        }
    }
    conn.query(&record_sql(target, epoch, &token.nonce, token.rows))
        .map_err(fail("recording the epoch"))?;
    if let Some(stage) = &token.stage {
        conn.query(&format!("DROP TABLE {}", target.stage_sql(stage)))
            .map_err(fail("dropping the staging table"))?;
    }
    if token.swap {
        crate::replace::swap_in_transaction(conn, target)?;
    }
    conn.query("COMMIT").map_err(fail("COMMIT"))?;
    Ok(())
}

/// The refusal of an epoch that `_ingest_epochs` records as committed by another run:
/// its rows were never written, and the state that would have them written is elsewhere.
pub fn recorded_by_another_run(target: &Target, epoch: u64, at: &str) -> Error {
    Error::fatal(format!(
        "{at}: {} already records epoch {epoch} of pipeline `{}` and stream `{}`, committed by another run (was the state directory reset?); \
         nothing was written. Give the sink a new `pipeline` name, or delete that pipeline's rows from {} to start over",
        target.epochs_sql(),
        target.pipeline,
        target.stream,
        target.epochs_sql()
    ))
}

/// The statement that records `epoch` in `_ingest_epochs`.
pub fn record_sql(target: &Target, epoch: u64, nonce: &str, rows: u64) -> String {
    format!(
        "INSERT INTO {} (pipeline, stream, epoch, nonce, rows) VALUES ({}, {}, {epoch}, {}, {rows})",
        target.epochs_sql(),
        literal(&target.pipeline),
        literal(&target.stream),
        literal(nonce)
    )
}

/// Commit the prepared transaction `gid` of `epoch`. When it is gone, the epoch must be
/// recorded with this token's nonce (committed before: a repeat); otherwise it was rolled
/// back and its rows are lost to this run, which is refused.
pub fn commit_prepared(
    conn: &mut Connection,
    target: &Target,
    epoch: u64,
    gid: &str,
    token: &Token,
) -> Result<()> {
    let at = format!(
        "postgres sink, stream `{}`, table {}, epoch {epoch}",
        target.stream,
        target.display()
    );
    match conn.query(&format!("COMMIT PREPARED {}", literal(gid))) {
        Ok(_) => return Ok(()),
        Err(e) if e.code() == Some("42704") => {}
        Err(e) => return Err(e.into_plugin_error(&at)),
    }
    let recorded = conn
        .query(&format!(
            "SELECT nonce FROM {} WHERE pipeline = {} AND stream = {} AND epoch = {epoch}",
            target.epochs_sql(),
            literal(&target.pipeline),
            literal(&target.stream)
        ))
        .map_err(|e| e.into_plugin_error(&at))?;
    match recorded.scalar() {
        Some(nonce) if nonce == token.nonce => Ok(()),
        Some(_) => Err(recorded_by_another_run(target, epoch, &at)),
        None => Err(Error::fatal(format!(
            "{at}: the prepared transaction {gid} holding the epoch's {} rows is gone (rolled back by an operator?) and the epoch is not recorded; \
             the rows must be read again: remove the state directory and re-run",
            token.rows
        ))),
    }
}

/// The statements that merge staging table `stage` into the target: all of it, or the
/// rows numbered `first..=last`.
pub fn merge_sql(
    target: &Target,
    mode: &WriteMode,
    stage: &str,
    rows: Option<(u64, u64)>,
) -> Vec<String> {
    let columns: Vec<String> = target.columns.iter().map(|c| ident(&c.name)).collect();
    let columns = columns.join(", ");
    let stage_sql = target.stage_sql(stage);
    let in_range = |alias: &str| match rows {
        Some((first, last)) => format!("{alias}{} BETWEEN {first} AND {last}", ident(STAGE_ROW)),
        None => String::new(),
    };
    let mut kept = Vec::new();
    if target.has_op() {
        kept.push(format!(
            "s.{} IS DISTINCT FROM 'delete'",
            ident(target.stage_op())
        ));
    }
    let not_deleted = if kept.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", kept.join(" AND "))
    };
    match mode {
        WriteMode::Upsert(_) => {
            let key: Vec<String> = target.key.iter().map(|k| ident(k)).collect();
            let matches: Vec<String> = key.iter().map(|k| format!("t.{k} = s.{k}")).collect();
            let mut delete_when = matches;
            let mut select_when = String::new();
            if rows.is_some() {
                delete_when.push(in_range("s."));
                select_when = format!(" WHERE {}", in_range(""));
            }
            vec![
                format!(
                    "DELETE FROM {} AS t USING {stage_sql} AS s WHERE {}",
                    target.sql(),
                    delete_when.join(" AND ")
                ),
                format!(
                    "INSERT INTO {} ({columns}) SELECT {columns} FROM \
                     (SELECT DISTINCT ON ({}) * FROM {stage_sql}{select_when} ORDER BY {}, {} DESC) AS s{not_deleted}",
                    target.sql(),
                    key.join(", "),
                    key.join(", "),
                    ident(STAGE_ROW)
                ),
            ]
        }
        _ => {
            if rows.is_some() {
                kept.push(in_range("s."));
            }
            let when = if kept.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", kept.join(" AND "))
            };
            vec![format!(
                "INSERT INTO {} ({columns}) SELECT {columns} FROM {stage_sql} AS s{when}",
                target.sql()
            )]
        }
    }
}
