//! The built-in `postgres` sink: writes a stream into a table, exactly once, by one of two
//! commit protocols ([`config::CommitProtocol`]).
//!
//! **prepared** (Postgres's two-phase commit; chosen where `max_prepared_transactions` >
//! 0): the first batch of an epoch opens a transaction; batches stream by binary `COPY`
//! straight into the target (append). An upsert without `_op` into a target whose key is
//! indexed is sent in chunks of `merge_rows` rows while the epoch is read: each chunk's
//! keys are deleted from the target and its last row per key copied straight in
//! ([`keyed`]). Other upserts and streams with `_op` go into an unlogged work table of the
//! transaction, merged into the target every `merge_rows` rows and at the end (at the
//! end only for an upsert whose key no index leads). `prepare(epoch)` sends what is left,
//! records (pipeline, stream, epoch) in `_ingest_epochs` and runs `PREPARE TRANSACTION`:
//! the epoch is durable in the server and invisible. `commit` runs `COMMIT PREPARED`.
//! Rows are written once, into the target, except through a work table.
//!
//! **staging** (any server): batches stream by `COPY` into a staging table of the epoch;
//! `prepare` ends the COPY (the rows are durable) and marks the table prepared; `commit` is
//! one transaction that merges it into the target, records the epoch and drops it.
//!
//! Either way a commit repeated after a crash changes nothing, and one whose epoch number
//! another run already recorded is refused. `abort(epoch)` rolls back or drops what was
//! staged for it. Merging: `append` inserts; `upsert` deletes the rows whose key the epoch
//! carries and inserts the last row per key, leaving out rows whose `_op` is `delete`.
//! The target is created from the stream's schema when absent (with the upsert key as its
//! primary key), and columns the stream gained are added as nullable columns. A row with
//! NULL in a NOT NULL column of the target is refused before anything is sent (`write`
//! returns it, with the server's words, for the host's `on_error`); the rest commits.

pub mod config;
pub mod keyed;
pub mod merge;
pub mod replace;
pub mod target;

use arrow_array::BooleanArray;
use arrow_array::RecordBatch;
use ingest_sdk::sink::{Sink, WriteMode, Writer};
use ingest_sdk::source::StreamInfo;
use ingest_sdk::{Error, Reject, Result};
use postgres_client::copy::{HEADER, TRAILER};
use postgres_client::sql::literal;
use postgres_client::Connection;
use serde::{Deserialize, Serialize};

use crate::config::{CommitProtocol, SinkConfig};
use crate::target::Target;

/// The `application_name` the sink's sessions show in `pg_stat_activity`.
const APPLICATION: &str = "ingest-postgres-sink";

/// The sort memory of a merge's last-row-per-key step (a chunk of `merge_rows` rows
/// sorts in memory, the server's default of 4MB would spill it to temporary files).
const MERGE_WORK_MEM: &str = "64MB";

/// COPY data is sent in messages of about this size.
const SEND_BYTES: usize = 1 << 20;

/// An upsert's chunk ([`keyed`]) is sent once its rows' data reaches this size, or
/// `merge_rows` rows.
const CHUNK_BYTES: usize = 32 << 20;

pub struct PostgresSink;

impl Sink for PostgresSink {
    type Writer = PostgresWriter;

    fn spec() -> String {
        config::spec()
    }

    fn check(config: &str) -> Result<()> {
        let cfg = SinkConfig::parse(config)?;
        let mut conn = cfg.settings.connect(APPLICATION)?;
        protocol(&mut conn, cfg.commit)?;
        conn.close();
        Ok(())
    }

    fn open(config: &str, stream: StreamInfo, mode: WriteMode) -> Result<PostgresWriter> {
        let cfg = SinkConfig::parse(config)?;
        let mut conn = cfg.settings.connect(APPLICATION)?;
        let protocol = protocol(&mut conn, cfg.commit)?;
        let mut target = Target::open(&mut conn, &cfg, &stream, &mode)?;
        if matches!(mode, WriteMode::Overwrite) {
            target.write_into_shadow();
        }
        Ok(PostgresWriter {
            conn,
            target,
            mode,
            protocol,
            merge_rows: cfg.merge_rows,
            shadow_ready: false,
            finishing: false,
            open: None,
            out: Vec::with_capacity(SEND_BYTES + (64 << 10)),
        })
    }
}

/// The protocol `wanted` resolves to on this server.
fn protocol(conn: &mut Connection, wanted: CommitProtocol) -> Result<CommitProtocol> {
    if wanted == CommitProtocol::Staging {
        return Ok(wanted);
    }
    let allowed = conn
        .query("SHOW max_prepared_transactions")
        .map_err(|e| e.into_plugin_error("postgres sink"))?;
    let allowed: u32 = allowed.scalar().and_then(|v| v.parse().ok()).unwrap_or(0);
    match (wanted, allowed) {
        (_, 1..) => Ok(CommitProtocol::Prepared),
        (CommitProtocol::Auto, 0) => Ok(CommitProtocol::Staging),
        _ => Err(Error::config(
            "postgres sink: `commit = \"prepared\"` needs prepared transactions, and the server has max_prepared_transactions = 0; set it above 0 (a restart is needed) or use `commit = \"staging\"`",
        )),
    }
}

/// Writes one stream.
pub struct PostgresWriter {
    conn: Connection,
    target: Target,
    mode: WriteMode,
    protocol: CommitProtocol,
    /// Rows of the work table merged per chunk within an epoch.
    merge_rows: u64,
    /// Under `overwrite`: the shadow table exists (made on the first rows of a run).
    shadow_ready: bool,
    /// Under `overwrite`: the stream was read to its end; the next epoch swaps.
    finishing: bool,
    /// The epoch being written, once its first batch arrived.
    open: Option<Open>,
    out: Vec<u8>,
}

/// The epoch being written, with its COPY in progress.
struct Open {
    /// The staging or work table, when the rows do not go straight into the target.
    stage: Option<String>,
    /// A transaction is open (the prepared protocol).
    in_transaction: bool,
    /// Each batch is merged as it arrives, refusals found (a guarded target).
    careful: bool,
    /// A COPY is in progress.
    copying: bool,
    rows: u64,
    /// Rows already merged from the work table into the target (and removed from it).
    merged: u64,
    /// An upsert that deletes each chunk's keys and copies its rows into the target.
    keyed: Option<Keyed>,
}

/// The key table of an upsert that deletes first, and the chunk waiting for it.
struct Keyed {
    table: String,
    chunk: keyed::Chunk,
}

/// What `prepare` hands the host and `commit` reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Staging protocol: the staging table, none when the epoch had no rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Prepared protocol: the prepared transaction, none when the epoch had no rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared: Option<String>,
    /// Unique to this prepare: tells a repeat of this commit from another run's epoch of
    /// the same number.
    pub nonce: String,
    pub rows: u64,
    /// Under `overwrite`, the stream's last epoch: committing it puts the shadow table in
    /// the target's place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub swap: bool,
}

impl PostgresWriter {
    fn at(&self, what: &str) -> String {
        format!("postgres sink, stream `{}`, {what}", self.target.stream)
    }

    fn run(&mut self, what: &str, sql: &str) -> Result<()> {
        let at = self.at(what);
        self.conn.query(sql).map_err(|e| e.into_plugin_error(&at))?;
        Ok(())
    }

    fn send(&mut self, force: bool) -> Result<()> {
        if self.out.is_empty() || !force && self.out.len() < SEND_BYTES {
            return Ok(());
        }
        let at = self.at("COPY");
        self.conn
            .copy_in_send(&self.out)
            .map_err(|e| e.into_plugin_error(&at))?;
        self.out.clear();
        Ok(())
    }

    /// Under `overwrite`, make sure the shadow table the run fills exists.
    fn ensure_shadow(&mut self) -> Result<()> {
        if self.target.replaces.is_some() && !self.shadow_ready {
            replace::ensure_shadow(&mut self.conn, &self.target)?;
            self.shadow_ready = true;
        }
        Ok(())
    }

    /// Open the epoch: its transaction and table, and the COPY into it.
    fn begin(&mut self) -> Result<Open> {
        self.ensure_shadow()?;
        let open = match self.protocol {
            CommitProtocol::Prepared => {
                self.run("BEGIN", "BEGIN")?;
                let careful = self.target.guarded;
                let direct = matches!(self.mode, WriteMode::Append | WriteMode::Overwrite)
                    && !self.target.has_op()
                    && !careful;
                // An upsert into a target whose key is indexed deletes each chunk's keys
                // and copies its rows straight in. Without the index each delete would
                // scan the target; a guarded target merges batch by batch; and a change
                // stream (`_op`) brings keys back many times an epoch, each return
                // ending a chunk early, where the work table's merge keeps up better.
                let keyed = matches!(self.mode, WriteMode::Upsert(_))
                    && self.target.key_indexed
                    && !self.target.has_op()
                    && !careful;
                let stage = if direct || keyed {
                    None
                } else {
                    Some(self.target.create_stage(&mut self.conn, true)?)
                };
                let keyed = if keyed {
                    Some(Keyed {
                        table: self.target.create_key_table(&mut self.conn)?,
                        chunk: keyed::Chunk::default(),
                    })
                } else {
                    None
                };
                if matches!(self.mode, WriteMode::Upsert(_)) {
                    self.tune_merges()?;
                }
                Open {
                    stage,
                    in_transaction: true,
                    careful,
                    copying: false,
                    rows: 0,
                    merged: 0,
                    keyed,
                }
            }
            _ => Open {
                stage: Some(self.target.create_stage(&mut self.conn, false)?),
                in_transaction: false,
                careful: false,
                copying: false,
                rows: 0,
                merged: 0,
                keyed: None,
            },
        };
        Ok(open)
    }

    /// Start the COPY into the epoch's table.
    fn start_copy(&mut self, stage: Option<&str>) -> Result<()> {
        let sql = match stage {
            Some(stage) => self.target.copy_sql(stage),
            None => self.target.copy_target_sql(),
        };
        let at = self.at("starting COPY");
        self.conn
            .copy_in_start(&sql)
            .map_err(|e| e.into_plugin_error(&at))?;
        self.out.clear();
        self.out.extend_from_slice(HEADER);
        Ok(())
    }

    /// Stage the rows of `batch` in the open epoch, opening it on its first rows.
    fn stage(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.open.is_none() {
            let open = self.begin()?;
            self.open = Some(open);
        }
        let open = self.open.as_ref().expect("opened above");
        if open.keyed.is_some() {
            return self.stage_keyed(batch);
        }
        if !open.copying {
            let stage = open.stage.clone();
            self.start_copy(stage.as_deref())?;
            self.open.as_mut().expect("opened above").copying = true;
        }
        let open = self.open.as_mut().expect("opened above");
        let first = open.rows as i64;
        let numbers: Vec<i64> = (first..first + batch.num_rows() as i64).collect();
        open.rows += batch.num_rows() as u64;
        let direct = open.stage.is_none();
        self.target
            .encode(&batch, (!direct).then_some(&numbers[..]), &mut self.out)?;
        self.send(false)?;
        self.merge_chunk()
    }

    /// Add `batch` to the open epoch's chunk of an upsert that deletes first (its last
    /// row per key), sending the chunk first when it holds one of the batch's keys
    /// already, and after when it is full.
    fn stage_keyed(&mut self, batch: RecordBatch) -> Result<()> {
        let mut keys = Vec::new();
        self.target.encode_keys(&batch, &mut keys)?;
        let ranges = keyed::row_ranges(&keys).map_err(|e| Error::fatal(self.at(&e)))?;
        let keep = keyed::last_per_key(&keys, &ranges);
        let hashes = keyed::hashes(&keys, &ranges, keep.as_deref());
        let holds = {
            let open = self.open.as_ref().expect("the epoch is open");
            let chunk = &open
                .keyed
                .as_ref()
                .expect("an upsert that deletes first")
                .chunk;
            chunk.holds_any(&hashes)
        };
        if holds {
            self.send_chunk()?;
        }
        // The rows written into the target: the last per key.
        let rows = match &keep {
            None => batch,
            Some(keep) => {
                arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep.clone()))
                    .map_err(|e| Error::fatal(format!("postgres sink: {e}")))?
            }
        };
        let open = self.open.as_mut().expect("the epoch is open");
        open.rows += ranges.len() as u64;
        let chunk = &mut open
            .keyed
            .as_mut()
            .expect("an upsert that deletes first")
            .chunk;
        chunk.add_keys(&keys, &ranges, keep.as_deref(), &hashes);
        chunk.taken += ranges.len() as u64;
        self.target.encode(&rows, None, &mut chunk.rows)?;
        if chunk.taken >= self.merge_rows || chunk.rows.len() >= CHUNK_BYTES {
            self.send_chunk()?;
        }
        Ok(())
    }

    /// Send the open epoch's chunk: its keys into the key table, a delete of those keys
    /// from the target, and its rows into the target.
    fn send_chunk(&mut self) -> Result<()> {
        let Some(keyed) = self.open.as_mut().and_then(|o| o.keyed.as_mut()) else {
            return Ok(());
        };
        if keyed.chunk.is_empty() {
            return Ok(());
        }
        let table = keyed.table.clone();
        let chunk = std::mem::take(&mut keyed.chunk);
        let result = self.send_chunk_of(&table, &chunk);
        let keyed = self.open.as_mut().and_then(|o| o.keyed.as_mut());
        if let Some(keyed) = keyed {
            keyed.chunk = chunk;
            keyed.chunk.clear();
        }
        result
    }

    fn send_chunk_of(&mut self, table: &str, chunk: &keyed::Chunk) -> Result<()> {
        let copy_keys = self.target.copy_keys_sql(table);
        self.copy_all(&copy_keys, &chunk.keys, "COPY of the chunk's keys")?;
        let delete = format!(
            "{}; TRUNCATE {}",
            self.target.delete_keys_sql(table),
            self.target.stage_sql(table)
        );
        self.run("deleting the chunk's keys from the target", &delete)?;
        if !chunk.rows.is_empty() {
            let copy_rows = self.target.copy_target_sql();
            self.copy_all(&copy_rows, &chunk.rows, "COPY of the chunk's rows")?;
        }
        Ok(())
    }

    /// One whole binary COPY of `rows` (encoded rows, without header or trailer).
    fn copy_all(&mut self, sql: &str, rows: &[u8], what: &str) -> Result<()> {
        let at = self.at(what);
        let fail = |e: postgres_client::PgError| e.into_plugin_error(&at);
        self.conn.copy_in_start(sql).map_err(fail)?;
        self.conn.copy_in_send(HEADER).map_err(fail)?;
        for piece in rows.chunks(SEND_BYTES) {
            self.conn.copy_in_send(piece).map_err(fail)?;
        }
        self.conn.copy_in_send(TRAILER).map_err(fail)?;
        self.conn.copy_in_finish().map_err(fail)?;
        Ok(())
    }

    /// Under the prepared protocol, once `merge_rows` rows wait in the work table, merge
    /// them into the target and empty it, so that the server merges while the rest of
    /// the epoch is read. Chunks of an upsert delete their keys by probing the key's
    /// index; without one, each chunk would scan the whole target, and the work table
    /// is merged once, at `prepare`. A guarded target merges every batch itself.
    fn merge_chunk(&mut self) -> Result<()> {
        let Some(open) = self.open.as_ref() else {
            return Ok(());
        };
        let unindexed_upsert =
            matches!(self.mode, WriteMode::Upsert(_)) && !self.target.key_indexed;
        let Some(stage) = open.stage.as_ref() else {
            return Ok(());
        };
        if !open.in_transaction
            || open.careful
            || open.rows - open.merged < self.merge_rows
            || unindexed_upsert
        {
            return Ok(());
        }
        let stage = stage.clone();
        self.end_copy()?;
        self.merge_all(&stage)?;
        let empty = format!("TRUNCATE {}", self.target.stage_sql(&stage));
        self.run("emptying the work table", &empty)?;
        let open = self.open.as_mut().expect("checked above");
        open.merged = open.rows;
        Ok(())
    }

    /// For the rest of an upsert's transaction: its deletes by key are steered to the
    /// key's index when there is one (the work table has no statistics, and a hash join
    /// would read the whole target for every chunk or batch merged), and its sort for the
    /// last row per key is given `MERGE_WORK_MEM`, so that a chunk sorts in memory rather
    /// than in temporary files. Nothing else the transaction runs plans a join or a sort.
    fn tune_merges(&mut self) -> Result<()> {
        let mut set = vec![format!("SET LOCAL work_mem = '{MERGE_WORK_MEM}'")];
        if self.target.key_indexed {
            set.push("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off".into());
        }
        self.run("setting up the merges", &set.join("; "))
    }

    /// Merge every row of work table `stage` into the target.
    fn merge_all(&mut self, stage: &str) -> Result<()> {
        for statement in merge::merge_sql(&self.target, &self.mode, stage, None) {
            self.run("merging the epoch", &statement)?;
        }
        Ok(())
    }

    /// Merge the rows numbered `first..=last` of work table `stage` into the target, in
    /// a savepoint; when the target refuses one of them, halve the range until the
    /// refused rows stand alone, and add each to `refused` with the database's reason.
    fn merge_checked(
        &mut self,
        stage: &str,
        first: u64,
        last: u64,
        refused: &mut Vec<(u64, String)>,
    ) -> Result<()> {
        self.run("SAVEPOINT", "SAVEPOINT ingest_rows")?;
        let mut failure = None;
        for statement in merge::merge_sql(&self.target, &self.mode, stage, Some((first, last))) {
            if let Err(e) = self.conn.query(&statement) {
                failure = Some(e);
                break;
            }
        }
        let Some(e) = failure else {
            return self.run("RELEASE SAVEPOINT", "RELEASE SAVEPOINT ingest_rows");
        };
        // Class 22 (a value the column cannot hold) and 23 (a constraint) are the row's
        // fault; anything else is the epoch's.
        let row_fault = matches!(e.code().and_then(|c| c.get(..2)), Some("22" | "23"));
        if !row_fault {
            return Err(e.into_plugin_error(self.at("merging a batch")));
        }
        self.run("ROLLBACK TO SAVEPOINT", "ROLLBACK TO SAVEPOINT ingest_rows")?;
        self.run("RELEASE SAVEPOINT", "RELEASE SAVEPOINT ingest_rows")?;
        if first == last {
            refused.push((first, e.to_string()));
            return Ok(());
        }
        let middle = first + (last - first) / 2;
        self.merge_checked(stage, first, middle, refused)?;
        self.merge_checked(stage, middle + 1, last, refused)
    }

    /// Under a guarded target: end the COPY of the batch just staged, merge it (its rows
    /// numbered from `first`), and empty the work table for the next. Returns the rows
    /// refused, by their index in the batch.
    fn merge_batch(&mut self, first: u64) -> Result<Vec<(usize, String)>> {
        let Some(open) = self.open.as_ref() else {
            return Ok(Vec::new());
        };
        let (Some(stage), true) = (open.stage.clone(), open.careful) else {
            return Ok(Vec::new());
        };
        let last = open.rows;
        if last <= first {
            return Ok(Vec::new());
        }
        self.end_copy()?;
        let mut refused = Vec::new();
        self.merge_checked(&stage, first, last - 1, &mut refused)?;
        let empty = format!("TRUNCATE {}", self.target.stage_sql(&stage));
        self.run("emptying the work table", &empty)?;
        Ok(refused
            .into_iter()
            .map(|(row, reason)| ((row - first) as usize, reason))
            .collect())
    }

    /// End the open epoch's COPY.
    fn end_copy(&mut self) -> Result<()> {
        match self.open.as_mut() {
            Some(open) if open.copying => open.copying = false,
            _ => return Ok(()),
        }
        self.out.extend_from_slice(TRAILER);
        self.send(true)?;
        let at = self.at("ending COPY");
        self.conn
            .copy_in_finish()
            .map_err(|e| e.into_plugin_error(&at))?;
        Ok(())
    }
}

impl Writer for PostgresWriter {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        match self.write_rejecting(batch)?.into_iter().next() {
            None => Ok(()),
            Some(r) => Err(Error::data(format!(
                "postgres sink, stream `{}`: {}",
                self.target.stream, r.reason
            ))),
        }
    }

    fn write_rejecting(&mut self, batch: RecordBatch) -> Result<Vec<Reject>> {
        let mut refused = self.target.refused(&batch);
        let mut kept: Vec<usize> = (0..batch.num_rows()).collect();
        let batch = if refused.is_empty() {
            batch
        } else {
            let mut keep = vec![true; batch.num_rows()];
            for r in &refused {
                if let Some(row) = r.row {
                    keep[row as usize] = false;
                }
            }
            kept.retain(|i| keep[*i]);
            arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep))
                .map_err(|e| Error::fatal(format!("postgres sink: {e}")))?
        };
        let first = self.open.as_ref().map_or(0, |o| o.rows);
        self.stage(batch)?;
        for (index, reason) in self.merge_batch(first)? {
            refused.push(Reject::row(kept[index], reason));
        }
        refused.sort_by_key(|r| r.row);
        Ok(refused)
    }
    fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>> {
        let nonce = postgres_client::nonce(self.conn.backend_pid);
        let swap = std::mem::take(&mut self.finishing);
        self.end_copy()?;
        self.send_chunk()?;
        let Some(open) = self.open.take() else {
            if swap {
                // A run without rows replaces the target with an empty table.
                self.ensure_shadow()?;
            }
            return Ok(encode_token(Token {
                stage: None,
                prepared: None,
                nonce,
                rows: 0,
                swap,
            }));
        };
        let token = if open.in_transaction {
            if let Some(keyed) = &open.keyed {
                let drop = format!("DROP TABLE {}", self.target.stage_sql(&keyed.table));
                self.run("dropping the key table", &drop)?;
            }
            if let Some(stage) = &open.stage {
                // A guarded target had each batch merged as it came; otherwise what the
                // chunks left.
                if !open.careful && open.rows > open.merged {
                    self.merge_all(stage)?;
                }
                let drop = format!("DROP TABLE {}", self.target.stage_sql(stage));
                self.run("dropping the work table", &drop)?;
            }
            let record = merge::record_sql(&self.target, epoch, &nonce, open.rows);
            if let Err(e) = self.conn.query(&record) {
                let refusal = if e.code() == Some("23505") {
                    let at = self.at(&format!("epoch {epoch}"));
                    merge::recorded_by_another_run(&self.target, epoch, &at)
                } else {
                    e.into_plugin_error(self.at("recording the epoch"))
                };
                let _ = self.conn.query("ROLLBACK");
                return Err(refusal);
            }
            let gid = self.target.transaction_id(epoch, &nonce);
            self.run(
                "PREPARE TRANSACTION",
                &format!("PREPARE TRANSACTION {}", literal(&gid)),
            )?;
            Token {
                stage: None,
                prepared: Some(gid),
                nonce,
                rows: open.rows,
                swap,
            }
        } else {
            let stage = open.stage.expect("the staging protocol always stages");
            self.target.mark_prepared(&mut self.conn, &stage, epoch)?;
            Token {
                stage: Some(stage),
                prepared: None,
                nonce,
                rows: open.rows,
                swap,
            }
        };
        Ok(encode_token(token))
    }

    fn commit(&mut self, epoch: u64, token: &[u8]) -> Result<Vec<String>> {
        let token: Token = serde_json::from_slice(token).map_err(|e| {
            Error::fatal(format!(
                "postgres sink, stream `{}`, epoch {epoch}: the token is unreadable: {e}",
                self.target.stream
            ))
        })?;
        match &token.prepared {
            Some(gid) => {
                merge::commit_prepared(&mut self.conn, &self.target, epoch, gid, &token)?;
                if token.swap {
                    replace::swap(&mut self.conn, &self.target)?;
                }
            }
            None => merge::commit(&mut self.conn, &self.target, &self.mode, epoch, &token)?,
        }
        Ok(vec![self.target.display()])
    }

    fn finish(&mut self) -> Result<()> {
        self.finishing = self.target.replaces.is_some();
        Ok(())
    }

    fn abort(&mut self, epoch: u64) -> Result<()> {
        if let Some(open) = self.open.take() {
            if open.copying {
                let _ = self.conn.copy_in_fail("the epoch was aborted");
            }
            if open.in_transaction {
                self.run("ROLLBACK", "ROLLBACK")?;
            } else if let Some(stage) = &open.stage {
                self.target.drop_stage(&mut self.conn, stage)?;
            }
        }
        self.target
            .drop_unprepared_and(&mut self.conn, Some(epoch))?;
        self.target.roll_back_prepared_from(&mut self.conn, epoch)?;
        Ok(())
    }
}

fn encode_token(token: Token) -> Vec<u8> {
    serde_json::to_vec(&token).expect("a token serialises")
}

// Exported only in the component: the export names are not valid symbols for a native
// shared library, and the native build exists for the unit tests.
#[cfg(target_arch = "wasm32")]
ingest_sdk::export_sink!(PostgresSink);
