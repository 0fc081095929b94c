//! `write_mode = "overwrite"`: the run's rows go into a shadow table beside the target,
//! epoch by epoch and exactly once like any other epoch, and the stream's last epoch
//! replaces the target with it at once (`DROP TABLE` + `ALTER TABLE … RENAME` in one
//! transaction). Readers see the old table until then, and the new one whole after.
//!
//! The shadow is created when the run writes its first rows (never when a writer merely
//! opens: recovery opens one to commit an epoch again, and must not make an empty shadow
//! the next swap would publish). The swap is idempotent: it happens only while the shadow
//! exists, so a commit repeated after a crash that followed the swap changes nothing. A
//! run stopped part-way leaves the shadow holding its committed epochs, and the resumed
//! run goes on filling it.

use ingest_sdk::Result;
use postgres_client::sql::{ident, literal, qualified};
use postgres_client::{Connection, PgError};

use crate::target::Target;

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1 bytes).
const MAX_NAME: usize = 63;

/// What the shadow table's name ends with.
const SUFFIX: &str = "__ingest_new";

/// The shadow table of `table`: `<table>__ingest_new`, the table's name shortened (at a
/// character boundary) when the whole would exceed PostgreSQL's 63 bytes.
pub fn shadow_name(table: &str) -> String {
    let mut end = table.len().min(MAX_NAME - SUFFIX.len());
    while !table.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{SUFFIX}", &table[..end])
}

fn fail(target: &Target, what: &'static str) -> impl FnOnce(PgError) -> ingest_sdk::Error {
    let at = format!(
        "postgres sink, stream `{}`, table {}: {what}",
        target.stream,
        target.display()
    );
    move |e| e.into_plugin_error(at)
}

/// Make sure the shadow exists, shaped like the target, with every column the stream
/// writes (a shadow left by an interrupted run gains the columns added since).
pub fn ensure_shadow(conn: &mut Connection, target: &Target) -> Result<()> {
    let Some(real) = &target.replaces else {
        return Ok(());
    };
    conn.query(&format!(
        "CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING ALL)",
        target.sql(),
        qualified(&target.schema, real)
    ))
    .map_err(fail(target, "creating the table that replaces it"))?;
    for c in &target.columns {
        conn.query(&format!(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
            target.sql(),
            ident(&c.name),
            c.type_sql
        ))
        .map_err(fail(
            target,
            "adding a column to the table that replaces it",
        ))?;
    }
    Ok(())
}

/// Inside the caller's transaction: replace the target with the shadow, if the shadow
/// is still there (a repeat after the swap finds nothing to do).
pub fn swap_in_transaction(conn: &mut Connection, target: &Target) -> Result<()> {
    let Some(real) = &target.replaces else {
        return Ok(());
    };
    let exists = conn
        .query(&format!(
            "SELECT to_regclass({}) IS NOT NULL",
            literal(&target.sql())
        ))
        .map_err(fail(target, "finding the table that replaces it"))?;
    if exists.scalar() != Some("t") {
        return Ok(());
    }
    conn.query(&format!(
        "DROP TABLE IF EXISTS {}",
        qualified(&target.schema, real)
    ))
    .map_err(fail(
        target,
        "dropping it to put the new rows in its place (do views or foreign keys depend on it?)",
    ))?;
    conn.query(&format!(
        "ALTER TABLE {} RENAME TO {}",
        target.sql(),
        ident(real)
    ))
    .map_err(fail(target, "renaming the new table into its place"))?;
    Ok(())
}

/// Replace the target with the shadow in a transaction of its own.
pub fn swap(conn: &mut Connection, target: &Target) -> Result<()> {
    conn.query("BEGIN").map_err(fail(target, "BEGIN"))?;
    let swapped = swap_in_transaction(conn, target).and_then(|()| {
        conn.query("COMMIT")
            .map(drop)
            .map_err(fail(target, "COMMIT"))
    });
    if swapped.is_err() {
        let _ = conn.query("ROLLBACK");
    }
    swapped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shadow_name_fits_in_63_bytes_at_a_character_boundary() {
        assert_eq!(shadow_name("orders"), "orders__ingest_new");
        let long = "é".repeat(40);
        let name = shadow_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with(SUFFIX));
    }
}
