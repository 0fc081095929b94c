//! Change data capture from PostgreSQL: a table's snapshot, then its changes through a
//! logical replication slot, streamed into Postgres (applied by key) and into Parquet (the
//! changelog), exactly once under SIGKILLs, with clear errors for what cannot go on.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::pg::{self, TestDb};
use crate::support::*;

/// The source table, its audit trail (every change in commit order, written by a trigger
/// in the changing transaction: the truth the changelog is checked against), and a
/// publication of the table alone.
const ITEMS: &str = "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text); \
    CREATE TABLE audit (seq bigserial PRIMARY KEY, op text NOT NULL, id int NOT NULL, qty int, note text); \
    CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
      IF TG_OP = 'DELETE' THEN INSERT INTO audit (op, id) VALUES ('delete', OLD.id); \
      ELSE INSERT INTO audit (op, id, qty, note) VALUES (lower(TG_OP), NEW.id, NEW.qty, NEW.note); END IF; \
      RETURN NULL; END $$; \
    CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON items FOR EACH ROW EXECUTE FUNCTION audit(); \
    INSERT INTO items SELECT g, g % 17, 'first ' || g FROM generate_series(1, 1000) AS g; \
    CREATE PUBLICATION items_pub FOR TABLE items;";

/// Replication slots of one test, dropped before its database (a database with a slot
/// cannot be dropped).
struct Slots<'a> {
    db: &'a TestDb,
    names: Vec<String>,
}

impl<'a> Slots<'a> {
    fn new(db: &'a TestDb, names: &[&str]) -> Slots<'a> {
        let names: Vec<String> = names.iter().map(|n| format!("{}_{n}", db.name)).collect();
        Slots { db, names }
    }

    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The slot's confirmed flush LSN, compared with `lsn`: true once it reached it.
    fn confirmed_past(&self, i: usize, lsn: &str) -> bool {
        self.db.value(&format!(
            "SELECT coalesce(confirmed_flush_lsn >= '{lsn}'::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = '{}'",
            self.names[i]
        )) == "t"
    }
}

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            for _ in 0..50 {
                let left = self.db.value(&format!(
                    "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots \
                     WHERE slot_name = '{name}' AND NOT active"
                ));
                let still = self.db.value(&format!(
                    "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{name}'"
                ));
                if left != "0" || still == "0" {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A stream-mode pipeline reading `items` by CDC through `slot`, into `sink`.
fn cdc_pipeline(db: &TestDb, slot: &str, sink: &str) -> String {
    format!(
        r#"[pipeline]
name = "cdc"
mode = "stream"

[retry]
max_attempts = 5
initial_backoff = "50ms"
max_backoff = "500ms"

[[source]]
name = "db"
plugin = "builtin:postgres"
{grant}
[source.config]
{conn}tables = ["items"]
[source.config.streams.items]
sync = "cdc"
slot = "{slot}"
publication = "items_pub"

{sink}"#,
        grant = pg::net_grant(),
        conn = db.connection()
    )
}

fn pg_sink(db: &TestDb) -> String {
    format!(
        "[[sink]]\nname = \"warehouse\"\nplugin = \"builtin:postgres\"\n{}\nwrite_mode = \"upsert\"\nprimary_key = [\"id\"]\n[sink.config]\n{}table = \"items_copy\"\n",
        pg::net_grant(),
        db.connection()
    )
}

pub(crate) const PARQUET_SINK: &str = "[[sink]]\nname = \"lake\"\nplugin = \"builtin:file\"\nfs = [\"out:rw\"]\n[sink.config]\npath = \"out\"\nformat = \"parquet\"\n";

pub(crate) fn start(scratch: &Scratch) -> Child {
    scratch
        .command(&["run", "pipeline.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

pub(crate) fn start_piped(scratch: &Scratch) -> Child {
    scratch
        .command(&["run", "pipeline.toml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub(crate) fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Wait until `done` holds, for at most `limit`; panics with `what` otherwise.
pub(crate) fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A writer in the server: for `seconds`, transactions of 50 random inserts (upserts),
/// updates and deletes over keys 1..3000, paced to `rate` changes a second.
fn writer(db: &TestDb, seconds: u32, rate: u32) -> Child {
    let sql = format!(
        "DO $$ DECLARE t0 timestamptz := clock_timestamp(); done bigint := 0; k int; BEGIN \
           WHILE clock_timestamp() < t0 + interval '{seconds} seconds' LOOP \
             FOR i IN 1..50 LOOP \
               k := 1 + floor(random() * 3000)::int; \
               CASE floor(random() * 3)::int \
                 WHEN 0 THEN INSERT INTO items VALUES (k, 1, md5(random()::text)) \
                             ON CONFLICT (id) DO UPDATE SET qty = items.qty + 1, note = EXCLUDED.note; \
                 WHEN 1 THEN UPDATE items SET qty = qty + 1, note = md5(random()::text) WHERE id = k; \
                 ELSE DELETE FROM items WHERE id = k; \
               END CASE; \
             END LOOP; \
             COMMIT; \
             done := done + 50; \
             PERFORM pg_sleep(greatest(0, done / {rate}.0 - extract(epoch FROM clock_timestamp() - t0))); \
           END LOOP; END $$;"
    );
    Command::new("psql")
        .args([
            "-h",
            pg::HOST,
            "-p",
            &pg::PORT.to_string(),
            "-U",
            "postgres",
        ])
        .args([
            "-d",
            &db.name,
            "-v",
            "ON_ERROR_STOP=1",
            "-X",
            "-q",
            "-c",
            &sql,
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("psql runs")
}

/// One change as the audit trail and the changelog both tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub op: String,
    pub qty: Option<i32>,
    pub note: Option<String>,
}

/// The audit trail: every key's changes in commit order.
fn audit(db: &TestDb) -> BTreeMap<i32, Vec<Change>> {
    let mut out: BTreeMap<i32, Vec<Change>> = BTreeMap::new();
    for line in db.lines("SELECT id, op, qty, coalesce(note, '<null>') FROM audit ORDER BY seq") {
        let parts: Vec<&str> = line.splitn(4, '|').collect();
        let change = Change {
            op: parts[1].to_string(),
            qty: parts[2].parse().ok(),
            note: (parts[1] != "delete" && parts[3] != "<null>").then(|| parts[3].to_string()),
        };
        out.entry(parts[0].parse().unwrap())
            .or_default()
            .push(change);
    }
    out
}

/// The changelog under `dir`: every key's changes in the order the files (by epoch) and
/// their rows hold them.
pub(crate) fn changelog(dir: &Path) -> BTreeMap<i32, Vec<Change>> {
    let mut out: BTreeMap<i32, Vec<Change>> = BTreeMap::new();
    for batch in batches(dir) {
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int32Type>();
        let qtys = batch
            .column_by_name("qty")
            .unwrap()
            .as_primitive::<Int32Type>();
        let notes = batch.column_by_name("note").unwrap().as_string::<i32>();
        let ops = batch.column_by_name("_op").unwrap().as_string::<i32>();
        // Postgres changes carry their LSN, MariaDB's their place in the binary log.
        let lsns = batch
            .column_by_name("_lsn")
            .map(|c| c.as_primitive::<Int64Type>().clone());
        let places = batch
            .column_by_name("_pos")
            .map(|c| c.as_string::<i32>().clone());
        assert!(
            lsns.is_some() || places.is_some(),
            "a changelog without positions"
        );
        for row in 0..batch.num_rows() {
            if let Some(l) = &lsns {
                assert!(l.value(row) > 0, "a change without its LSN");
            }
            if let Some(p) = &places {
                assert!(p.value(row).contains(':'), "a change without its place");
            }
            let op = ops.value(row).to_string();
            let deleted = op == "delete";
            out.entry(ids.value(row)).or_default().push(Change {
                qty: (!deleted && !qtys.is_null(row)).then(|| qtys.value(row)),
                note: (!deleted && !notes.is_null(row)).then(|| notes.value(row).to_string()),
                op,
            });
        }
    }
    out
}

/// Every record batch of every Parquet file under `dir`, in file order.
pub(crate) fn batches(dir: &Path) -> Vec<RecordBatch> {
    parquet_files(dir)
        .iter()
        .flat_map(|file| {
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
        })
        .collect()
}

/// A file of the changelog was published: the snapshot's epoch committed.
pub(crate) fn snapshot_committed(scratch: &Scratch) -> bool {
    !parquet_files(&scratch.path("out")).is_empty()
}

/// Run the pipeline in `scratch` (slot 0 of `slots`) until its snapshot is committed, make
/// `changes`, wait until they are committed too, then SIGTERM: the run drains and exits 0.
fn stream_then_drain(db: &TestDb, scratch: &Scratch, slots: &Slots, changes: impl FnOnce()) {
    let mut run = start(scratch);
    wait_for(Duration::from_secs(60), "the snapshot committed", || {
        snapshot_committed(scratch)
    });
    changes();
    let now = current_lsn(db);
    wait_for(Duration::from_secs(60), "the changes committed", || {
        slots.confirmed_past(0, &now)
    });
    sigterm(&run);
    assert!(
        run.wait().unwrap().success(),
        "a SIGTERM drains and exits 0"
    );
}

/// The current LSN of the server.
fn current_lsn(db: &TestDb) -> String {
    db.value("SELECT pg_current_wal_lsn()")
}

#[test]
fn twenty_sigkills_while_a_writer_changes_the_table_lose_and_repeat_no_change() {
    let db = TestDb::new("cdc_kills");
    db.sql(ITEMS);
    // The target declares NOT NULL like the table: deletes carry only the key, and still
    // reach it.
    db.sql("CREATE TABLE items_copy (id int PRIMARY KEY, qty int NOT NULL, note text)");
    let slots = Slots::new(&db, &["to_pg", "to_lake"]);
    let to_pg = Scratch::new();
    to_pg.write(
        "pipeline.toml",
        cdc_pipeline(&db, slots.name(0), &pg_sink(&db)),
    );
    let to_lake = Scratch::new();
    to_lake.write(
        "pipeline.toml",
        cdc_pipeline(&db, slots.name(1), PARQUET_SINK),
    );

    // Both take their snapshot (the first 1,000 rows) before the writer starts.
    let mut runs = [start(&to_pg), start(&to_lake)];
    wait_for(Duration::from_secs(60), "both snapshots committed", || {
        snapshot_committed(&to_lake) && db.value("SELECT count(*) FROM items_copy") == "1000"
    });

    let mut writing = writer(&db, 30, 5000);
    let started = Instant::now();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut kills = 0;
    while kills < 20 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(300 + rng % 1000));
        let which = (rng >> 20) as usize % 2;
        runs[which].kill().unwrap();
        runs[which].wait().unwrap();
        kills += 1;
        runs[which] = start(if which == 0 { &to_pg } else { &to_lake });
    }
    let status = writing.wait().unwrap();
    assert!(status.success(), "the writer failed");
    let wrote_for = started.elapsed();
    let end = current_lsn(&db);
    let changes: u64 = db
        .value("SELECT count(*) - 1000 FROM audit")
        .parse()
        .unwrap();
    assert!(
        changes as f64 >= 3000.0 * wrote_for.as_secs_f64() * 0.5,
        "the writer made only {changes} changes in {wrote_for:?}"
    );

    // Both catch up; then a SIGTERM drains each within about one epoch.
    wait_for(Duration::from_secs(120), "both pipelines caught up", || {
        slots.confirmed_past(0, &end) && slots.confirmed_past(1, &end)
    });
    for run in &mut runs {
        sigterm(run);
        let asked = Instant::now();
        let status = run.wait().unwrap();
        assert!(status.success(), "a drain ended with {status}");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "a drain took {:?}",
            asked.elapsed()
        );
    }

    // The target equals the table.
    let differ = db.value(
        "SELECT count(*) FROM ((SELECT id, qty, note FROM items EXCEPT SELECT id, qty, note FROM items_copy) \
         UNION ALL (SELECT id, qty, note FROM items_copy EXCEPT SELECT id, qty, note FROM items)) AS d",
    );
    assert_eq!(differ, "0", "the target differs from the table");

    // The changelog holds every change once, in commit order per key.
    let truth = audit(&db);
    let log = changelog(&to_lake.path("out"));
    let total: usize = log.values().map(Vec::len).sum();
    assert_eq!(total as u64, changes + 1000, "changes in the changelog");
    for (id, expected) in &truth {
        assert_eq!(log.get(id), Some(expected), "the changes of key {id}");
    }
    assert_eq!(log.len(), truth.len(), "keys in the changelog");
}

#[test]
fn a_change_that_moves_a_key_is_a_delete_and_an_insert_and_ddl_stops_the_run_clearly() {
    let db = TestDb::new("cdc_ddl");
    db.sql(ITEMS);
    let slots = Slots::new(&db, &["lake"]);
    let scratch = Scratch::new();
    scratch.write(
        "pipeline.toml",
        cdc_pipeline(&db, slots.name(0), PARQUET_SINK),
    );
    let mut run = start_piped(&scratch);
    wait_for(Duration::from_secs(60), "the snapshot committed", || {
        snapshot_committed(&scratch)
    });
    db.sql("UPDATE items SET id = 5000 WHERE id = 1");
    db.sql("ALTER TABLE items ADD COLUMN colour text");
    db.sql("INSERT INTO items VALUES (6000, 1, 'after', 'red')");
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            run.kill().unwrap();
            panic!("the run went on past a column it cannot carry");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = finished(run.wait_with_output().unwrap());
    assert_ne!(out.code, 0, "{}", out.stderr);
    for part in [
        "column `colour` is not in the stream's schema",
        "run it again",
    ] {
        assert!(
            out.stderr.contains(part),
            "{part} missing from: {}",
            out.stderr
        );
    }
    let log = changelog(&scratch.path("out"));
    assert!(
        !log.contains_key(&6000),
        "nothing after the change was delivered"
    );

    // The next run takes the new column (evolve accepts a new nullable column) and goes on
    // from the last committed change.
    let mut run = start(&scratch);
    let now = current_lsn(&db);
    wait_for(
        Duration::from_secs(60),
        "the run after the change caught up",
        || slots.confirmed_past(0, &now),
    );
    sigterm(&run);
    assert!(run.wait().unwrap().success());
    let log = changelog(&scratch.path("out"));
    let moved: Vec<&str> = log[&1].iter().map(|c| c.op.as_str()).collect();
    assert_eq!(moved, ["insert", "delete"], "the old key is deleted");
    assert_eq!(log[&5000].len(), 1);
    assert_eq!(log[&5000][0].op, "update", "the new key holds the row");
    assert_eq!(log[&6000].len(), 1);
    assert_eq!(log[&6000][0].op, "insert");
    assert_eq!(log[&6000][0].note.as_deref(), Some("after"));
}

#[test]
fn a_missing_publication_and_a_missing_slot_are_clear_errors() {
    let db = TestDb::new("cdc_faults");
    db.sql(ITEMS);
    let slots = Slots::new(&db, &["lake"]);
    let scratch = Scratch::new();
    let text = cdc_pipeline(&db, slots.name(0), PARQUET_SINK);
    scratch.write(
        "pipeline.toml",
        text.replace("publication = \"items_pub\"", "publication = \"nope\""),
    );
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("publication `nope` does not exist")
            && out.stderr.contains("CREATE PUBLICATION"),
        "{}",
        out.stderr
    );

    // A change stream never ends: other streams of the same source would never be read.
    scratch.write(
        "pipeline.toml",
        text.replace("tables = [\"items\"]", "tables = [\"items\", \"audit\"]"),
    );
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("a source with a `cdc` stream must have only that one")
            && out.stderr.contains("(audit)"),
        "{}",
        out.stderr
    );

    // A run takes the snapshot and commits; then the slot is dropped behind its back.
    scratch.write("pipeline.toml", &text);
    stream_then_drain(&db, &scratch, &slots, || {});
    db.sql(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        slots.name(0)
    ));
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    for part in ["is missing", "reset this pipeline's state"] {
        assert!(
            out.stderr.contains(part),
            "{part} missing from: {}",
            out.stderr
        );
    }
}

#[test]
fn under_replica_identity_full_updates_and_deletes_carry_the_row_as_it_was() {
    let db = TestDb::new("cdc_before");
    db.sql(ITEMS);
    db.sql("ALTER TABLE items REPLICA IDENTITY FULL");
    let slots = Slots::new(&db, &["lake"]);
    let scratch = Scratch::new();
    scratch.write(
        "pipeline.toml",
        cdc_pipeline(&db, slots.name(0), PARQUET_SINK),
    );
    stream_then_drain(&db, &scratch, &slots, || {
        db.sql("UPDATE items SET qty = 99, note = 'changed' WHERE id = 7");
        db.sql("DELETE FROM items WHERE id = 8");
    });

    let mut seen = Vec::new();
    for batch in batches(&scratch.path("out")) {
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int32Type>();
        let qtys = batch
            .column_by_name("qty")
            .unwrap()
            .as_primitive::<Int32Type>();
        let ops = batch.column_by_name("_op").unwrap().as_string::<i32>();
        let before = batch
            .column_by_name("_before")
            .expect("a before-image column")
            .as_struct();
        let old_qty = before
            .column_by_name("qty")
            .unwrap()
            .as_primitive::<Int32Type>();
        let old_note = before.column_by_name("note").unwrap().as_string::<i32>();
        for row in 0..batch.num_rows() {
            if ops.value(row) == "insert" {
                assert!(before.is_null(row), "an insert has no before-image");
                continue;
            }
            seen.push((
                ops.value(row).to_string(),
                ids.value(row),
                qtys.is_valid(row).then(|| qtys.value(row)),
                old_qty.value(row),
                old_note.value(row).to_string(),
            ));
        }
    }
    assert_eq!(
        seen,
        [
            ("update".to_string(), 7, Some(99), 7, "first 7".to_string()),
            ("delete".to_string(), 8, Some(8), 8, "first 8".to_string()),
        ]
    );
}

#[test]
fn a_server_restart_mid_stream_is_resumed_not_failed() {
    // The restart would break every other test using the server: this one has it alone.
    let server = pg::exclusive();
    let db = TestDb::new("cdc_restart");
    db.sql(ITEMS);
    let slots = Slots::new(&db, &["lake"]);
    let scratch = Scratch::new();
    let text = cdc_pipeline(&db, slots.name(0), PARQUET_SINK)
        .replace("max_attempts = 5", "max_attempts = 30")
        .replace("max_backoff = \"500ms\"", "max_backoff = \"1s\"");
    scratch.write("pipeline.toml", text);
    let run = start_piped(&scratch);
    wait_for(Duration::from_secs(60), "the snapshot committed", || {
        snapshot_committed(&scratch)
    });
    db.sql("UPDATE items SET qty = qty + 1 WHERE id <= 100");
    pg::restart_server(&server);
    db.sql("UPDATE items SET qty = qty + 1 WHERE id > 900");
    db.sql("DELETE FROM items WHERE id BETWEEN 400 AND 409");
    let now = current_lsn(&db);
    wait_for(
        Duration::from_secs(60),
        "the stream caught up after the restart",
        || slots.confirmed_past(0, &now),
    );
    sigterm(&run);
    let out = finished(run.wait_with_output().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("retrying from the last checkpoint"),
        "the broken stream was retried: {}",
        out.stderr
    );
    let truth = audit(&db);
    let log = changelog(&scratch.path("out"));
    assert_eq!(log, truth, "every change once, in order per key");
}

#[test]
fn example_09_streams_the_snapshot_and_then_each_change_into_parquet() {
    let db = TestDb::new("example_09");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/09-postgres-cdc-to-parquet");
    db.sql(&std::fs::read_to_string(dir.join("setup.sql")).unwrap());
    let slots = Slots::new(&db, &["example"]);
    let scratch = Scratch::new();
    let text = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
    assert!(text.contains("database = \"postgres\"") && text.contains("slot = \"example_09\""));
    let text = text
        .replace(
            "database = \"postgres\"",
            &format!("database = \"{}\"", db.name),
        )
        .replace(
            "slot = \"example_09\"",
            &format!("slot = \"{}\"", slots.name(0)),
        );
    scratch.write("pipeline.toml", text);
    stream_then_drain(&db, &scratch, &slots, || {
        db.sql("UPDATE example_items SET qty = qty + 1 WHERE id <= 3");
        db.sql("DELETE FROM example_items WHERE id = 10");
    });

    let mut ops = BTreeMap::new();
    for batch in batches(&scratch.path("out/example_items")) {
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "name",
                "qty",
                "price",
                "updated_at",
                "_op",
                "_lsn",
                "_commit_ts"
            ]
        );
        let o = batch.column_by_name("_op").unwrap().as_string::<i32>();
        for row in 0..batch.num_rows() {
            *ops.entry(o.value(row).to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(
        ops,
        BTreeMap::from([
            ("delete".to_string(), 1),
            ("insert".to_string(), 1000),
            ("update".to_string(), 3)
        ])
    );
}
