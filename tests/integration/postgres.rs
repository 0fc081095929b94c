//! The `postgres` source and sink against the real PostgreSQL on this machine: every
//! mapped type round-trips PG → PG and PG → Parquet, incremental reads lose and repeat
//! nothing across ties and concurrent inserts, commits are exactly-once across kills and
//! terminated sessions, and bad input fails with a clear error naming the stage.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::pg::{self, TestDb};
use crate::support::*;

/// A pipeline reading `source_config` from the Postgres source into `sink` (a whole
/// `[[sink]]` table).
fn pipeline(every_rows: u64, source_config: &str, sink: &str) -> String {
    format!(
        r#"[pipeline]
name = "pg"

[checkpoint]
every_rows = {every_rows}

[retry]
max_attempts = 5
initial_backoff = "50ms"
max_backoff = "500ms"

[[source]]
name = "db"
plugin = "builtin:postgres"
{grant}
batch_rows = 1000
[source.config]
{source_config}

{sink}
"#,
        grant = pg::net_grant()
    )
}

/// A Postgres `[[sink]]` writing into `db` with `extra` lines in the sink table (such as
/// `write_mode`) and `config` lines in its config.
fn pg_sink(db: &TestDb, extra: &str, config: &str) -> String {
    format!(
        "[[sink]]\nname = \"warehouse\"\nplugin = \"builtin:postgres\"\n{}\n{extra}\n[sink.config]\n{}{config}\n",
        pg::net_grant(),
        db.connection()
    )
}

/// Every row of `table` as JSON text, in key order: what two tables are compared by.
fn json_rows(db: &TestDb, table: &str) -> Vec<String> {
    db.lines(&format!(
        "SELECT row_to_json(whole_row)::text FROM {table} AS whole_row ORDER BY id"
    ))
}

const ALL_TYPES: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TABLE kinds (
    id integer PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
    n numeric(12,2), nu numeric, b boolean,
    t text, vc varchar(20), ch char(5), by bytea,
    d date, tm time, ts timestamp, tz timestamptz, iv interval,
    u uuid, j json, jb jsonb, ai integer[], at text[],
    e mood, dom positive
);
INSERT INTO kinds VALUES
 (1, -32768, -2147483648, -9223372036854775808, -3.4e38, -1.7e308,
  -9999999999.99, -123456789012345678901234567890.123456789, false,
  '', '', '', '\x', '0001-01-01', '00:00:00', '0001-01-01 00:00:00',
  '0001-01-01 00:00:00+00', '-178000000 years', '00000000-0000-0000-0000-000000000000',
  '{}', '{}', '{}', '{}', 'sad', 1),
 (2, 32767, 2147483647, 9223372036854775807, 3.4e38, 1.7e308,
  9999999999.99, 'NaN', true,
  'Zürich 東京 🎉 "quoted" \ back', 'ñandú', 'ab', '\xdeadbeef00ff', '9999-12-31',
  '24:00:00', '9999-12-31 23:59:59.999999', '2024-02-29 12:34:56.789012+05:30',
  '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2, {"b": null}]}', '{"é": "ü", "n": 1.5}', '{1,NULL,3}',
  '{"x","",NULL,"ö"}', 'happy', 2147483647),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 0, 0, 'NaN', '-Infinity', 0, 0.000001, NULL, 'x', 'y', 'z', NULL,
  'infinity', '12:00:00.5', '-infinity', 'infinity', '-1 mons -3 days -00:00:01',
  NULL, 'null', '[]', '{NULL}', '{NULL}', 'ok', 7);
"#;

#[test]
fn every_mapped_type_round_trips_postgres_to_postgres() {
    let db = TestDb::new("types_pg");
    db.sql(ALL_TYPES);
    let scratch = Scratch::new();
    let source = format!("{}tables = [\"kinds\"]\n", db.connection());
    let sink = pg_sink(
        &db,
        "write_mode = \"upsert\"\nprimary_key = [\"id\"]",
        "table = \"kinds_copy\"\n",
    );
    scratch.write("pipeline.toml", pipeline(1000, &source, &sink));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();

    assert_eq!(json_rows(&db, "kinds_copy"), json_rows(&db, "kinds"));
    // The target was created from the Arrow schema: enums and domains as their base type.
    let types = db.lines(
        "SELECT column_name || ' ' || data_type FROM information_schema.columns \
         WHERE table_name = 'kinds_copy' AND column_name IN ('e', 'dom', 'n', 'u', 'ai', 'iv') \
         ORDER BY column_name",
    );
    assert_eq!(
        types,
        [
            "ai ARRAY",
            "dom integer",
            "e text",
            "iv interval",
            "n numeric",
            "u uuid"
        ]
    );
    // Run again: the upsert leaves the same rows, and each epoch is recorded once.
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(json_rows(&db, "kinds_copy"), json_rows(&db, "kinds"));
    assert_eq!(
        db.value("SELECT count(*) = count(DISTINCT (pipeline, stream, epoch)) FROM _ingest_epochs"),
        "t"
    );
}

#[test]
fn every_mapped_type_reads_into_parquet() {
    let db = TestDb::new("types_parquet");
    db.sql(ALL_TYPES);
    let scratch = Scratch::new();
    let source = format!("{}tables = [\"kinds\"]\n", db.connection());
    let sink = "[[sink]]\nname = \"lake\"\nplugin = \"builtin:file\"\nfs = [\"out:rw\"]\n[sink.config]\npath = \"out\"\nformat = \"parquet\"\n";
    scratch.write("pipeline.toml", pipeline(1000, &source, sink));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();

    let files = parquet_files(&scratch.path("out/kinds"));
    assert_eq!(files.len(), 1, "{files:?}");
    let batches = read_parquet(&files[0]);
    let schema = batches[0].schema();
    let described: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    for expected in [
        "i2 Int16",
        "i8 Int64",
        "f4 Float32",
        "n Decimal128(12, 2)",
        "nu Utf8",
        "by Binary",
        "d Date32",
        "tm Time64(µs)",
        "ts Timestamp(µs)",
        "tz Timestamp(µs, \"+00:00\")",
        "iv Utf8",
        "u FixedSizeBinary(16)",
        "jb Utf8",
        "e Utf8",
        "dom Int32",
    ] {
        assert!(
            described.iter().any(|d| d == expected),
            "{expected} missing from {described:?}"
        );
    }
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 4);
    let text = pretty(&batches);
    for value in [
        "Zürich 東京 🎉",
        "-123456789012345678901234567890.123456789",
        "P1Y2M3DT4H5M6.789S",
        "2024-02-29T07:04:56.789012",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "{\"n\": 1.5, \"é\": \"ü\"}",
        "[1, , 3]",
        "-9999999999.99",
    ] {
        assert!(text.contains(value), "{value} missing from\n{text}");
    }
}

#[test]
fn incremental_reads_lose_and_repeat_nothing_across_ties_and_concurrent_inserts() {
    let db = TestDb::new("incremental");
    // Ten rows share each cursor value; the checkpoint falls inside ties.
    db.sql(
        "CREATE TABLE events (id bigint PRIMARY KEY, batch bigint NOT NULL, body text);
         INSERT INTO events SELECT g, g / 10, 'row ' || g FROM generate_series(1, 2005) AS g;",
    );
    let scratch = Scratch::new();
    let source = format!(
        "{}tables = [\"events\"]\n[source.config.streams.events]\nsync = \"incremental\"\ncursor = \"batch\"\n",
        db.connection()
    );
    let sink = pg_sink(&db, "", "table = \"events_copy\"\n");
    scratch.write("pipeline.toml", pipeline(333, &source, &sink));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(db.value("SELECT count(*) FROM events_copy"), "2005");

    // More rows at the last cursor value (a tie with what was read) and past it.
    db.sql("INSERT INTO events SELECT g, 200, 'late ' || g FROM generate_series(3001, 3004) AS g");
    db.sql(
        "INSERT INTO events SELECT g, g / 10, 'new ' || g FROM generate_series(2006, 2100) AS g",
    );
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_same_ids(&db, "events", "events_copy");

    // Rows arriving while a read runs: a writer inserts in cursor order meanwhile.
    let inserting = std::thread::spawn({
        let name = db.name.clone();
        move || {
            for chunk in 0..40 {
                let from = 10_000 + chunk * 50;
                pg_exec(
                    &name,
                    &format!(
                        "INSERT INTO events SELECT g, g / 10, 'live' FROM generate_series({from}, {}) AS g",
                        from + 49
                    ),
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    while !inserting.is_finished() {
        scratch.host(&["run", "pipeline.toml"]).assert_ok();
    }
    inserting.join().unwrap();
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_same_ids(&db, "events", "events_copy");
}

/// `table` and `copy` hold the same ids, each once (the sink appends: a repeat shows).
fn assert_same_ids(db: &TestDb, table: &str, copy: &str) {
    assert_eq!(
        db.value(&format!("SELECT count(*) - count(DISTINCT id) FROM {copy}")),
        "0",
        "a row was delivered twice"
    );
    assert_eq!(
        db.value(&format!(
            "SELECT count(*) FROM ((SELECT id FROM {table} EXCEPT SELECT id FROM {copy}) \
             UNION ALL (SELECT id FROM {copy} EXCEPT SELECT id FROM {table})) AS d"
        )),
        "0",
        "the copy differs from the table"
    );
}

fn pg_exec(database: &str, sql: &str) {
    let status = std::process::Command::new("psql")
        .args(["-h", pg::HOST, "-U", "postgres", "-d", database, "-X", "-q"])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .status()
        .unwrap();
    assert!(status.success(), "{sql}");
}

const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, \
     amount numeric(12,2), status text, updated_at timestamptz NOT NULL);";

fn fill_orders(db: &TestDb, from: i64, to: i64, status: &str) {
    db.sql(&format!(
        "INSERT INTO orders SELECT g, 'customer ' || (g % 997), (g % 100000) / 100.0, '{status}', \
         timestamptz '2024-01-01' + g * interval '1 second' FROM generate_series({from}, {to}) AS g"
    ));
}

#[test]
fn upserts_replace_rows_by_key_and_op_delete_deletes() {
    for protocol in ["prepared", "staging"] {
        upserts(protocol);
    }
}

fn upserts(protocol: &str) {
    let db = TestDb::new(&format!("upsert_{protocol}"));
    db.sql(ORDERS);
    fill_orders(&db, 1, 1000, "new");
    let scratch = Scratch::new();
    let sink = pg_sink(
        &db,
        "write_mode = \"upsert\"\nprimary_key = [\"id\"]",
        &format!("table = \"orders_copy\"\ncommit = \"{protocol}\"\n"),
    );
    let source = format!("{}tables = [\"orders\"]\n", db.connection());
    scratch.write("pipeline.toml", pipeline(300, &source, &sink));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(json_rows(&db, "orders_copy"), json_rows(&db, "orders"));

    db.sql("UPDATE orders SET status = 'paid' WHERE id % 3 = 0");
    fill_orders(&db, 1001, 1200, "new");
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(json_rows(&db, "orders_copy"), json_rows(&db, "orders"));

    // A query stream with an `_op` column: rows marked `delete` delete their key, and the
    // last row of a key in an epoch wins.
    let source = format!(
        "{}[[source.config.queries]]\nname = \"orders\"\nsql = \"SELECT *, CASE WHEN id % 10 = 0 THEN 'delete' ELSE 'upsert' END AS _op FROM orders\"\n",
        db.connection()
    );
    scratch.write("pipeline.toml", pipeline(10_000, &source, &sink));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(db.value("SELECT count(*) FROM orders_copy"), "1080");
    assert_eq!(
        db.value("SELECT count(*) FROM orders_copy WHERE id % 10 = 0"),
        "0"
    );

    // With its state directory gone, a run starts again at epoch 1, which the target
    // records as committed by another run: it is refused, in words, and writes nothing.
    std::fs::remove_dir_all(scratch.path(".state")).unwrap();
    db.sql("UPDATE orders SET status = 'shipped'");
    let refused = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("already records epoch 1")
            && refused.stderr.contains("committed by another run"),
        "{protocol}: {}",
        refused.stderr
    );
    assert_eq!(db.value("SELECT count(*) FROM orders_copy"), "1080");
    assert_eq!(
        db.value("SELECT count(*) FROM orders_copy WHERE status = 'shipped'"),
        "0"
    );
    assert_eq!(
        db.value("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()"),
        "0"
    );
}

#[test]
fn an_upsert_merged_in_chunks_keeps_the_last_row_of_each_key_across_chunks() {
    // Every key arrives three times in one epoch (inserted, deleted or updated, then set
    // again for some), in `merge_rows = 7` chunks: whatever chunk a key's rows fall into,
    // the last one wins. Once into a target with its key indexed (merged chunk by chunk),
    // once into one without (merged at the end).
    for (table, ddl) in [
        (
            "keyed",
            "CREATE TABLE keyed (id bigint PRIMARY KEY, customer text, status text)",
        ),
        (
            "unkeyed",
            "CREATE TABLE unkeyed (id bigint, customer text, status text)",
        ),
    ] {
        let db = TestDb::new(&format!("chunks_{table}"));
        db.sql(ORDERS);
        fill_orders(&db, 1, 100, "new");
        db.sql(ddl);
        db.sql(&format!(
            "INSERT INTO {table} SELECT id, 'old', 'old' FROM generate_series(1, 100, 2) AS id"
        ));
        let scratch = Scratch::new();
        let sink = pg_sink(
            &db,
            "write_mode = \"upsert\"\nprimary_key = [\"id\"]",
            &format!("table = \"{table}\"\nmerge_rows = 7\n"),
        );
        let changes = "SELECT id, customer, status, op AS _op FROM (\
            SELECT id, customer, status, 'upsert' AS op, 1 AS pass FROM orders \
            UNION ALL SELECT id, customer, 'second', CASE WHEN id % 4 = 0 THEN 'delete' ELSE 'upsert' END, 2 FROM orders \
            UNION ALL SELECT id, customer, 'third', 'upsert', 3 FROM orders WHERE id % 8 = 0) AS c \
            ORDER BY id, pass";
        let source = format!(
            "{}[[source.config.queries]]\nname = \"changes\"\nsql = \"{changes}\"\n",
            db.connection()
        );
        // Batches of 5 rows, chunks of 10: a key's two or three rows fall in one chunk or
        // straddle two.
        let text =
            pipeline(1_000_000, &source, &sink).replace("batch_rows = 1000", "batch_rows = 5");
        scratch.write("pipeline.toml", text);
        scratch.host(&["run", "pipeline.toml"]).assert_ok();
        let expected = db.lines(
            "SELECT id || ' ' || CASE WHEN id % 8 = 0 THEN 'third' ELSE 'second' END FROM orders \
             WHERE id % 4 <> 0 OR id % 8 = 0 ORDER BY id",
        );
        let got = db.lines(&format!(
            "SELECT id || ' ' || status FROM {table} ORDER BY id, status"
        ));
        assert_eq!(got, expected, "{table}");
        assert_eq!(
            db.value("SELECT count(*) FROM _ingest_epochs"),
            "1",
            "{table}: one epoch"
        );
    }
}

#[test]
fn an_upsert_that_deletes_first_keeps_the_last_row_of_each_key_across_batches_and_chunks() {
    // Without `_op`, an upsert into a target with its key indexed deletes each chunk's
    // keys and copies the chunk's rows straight in. Every key arrives two or three times
    // in one epoch, in batches of 5 and chunks of at most 7: a key that comes back within
    // a batch keeps its last row, and one that comes back in a later batch ends the chunk
    // first. Half the keys are in the target already.
    let db = TestDb::new("chunks_delete_first");
    db.sql(ORDERS);
    fill_orders(&db, 1, 100, "new");
    db.sql("CREATE TABLE keyed (id bigint PRIMARY KEY, customer text, status text)");
    db.sql("INSERT INTO keyed SELECT id, 'old', 'old' FROM generate_series(1, 100, 2) AS id");
    let scratch = Scratch::new();
    let sink = pg_sink(
        &db,
        "write_mode = \"upsert\"\nprimary_key = [\"id\"]",
        "table = \"keyed\"\nmerge_rows = 7\n",
    );
    let changes = "SELECT id, customer, status FROM (\
        SELECT id, customer, status, 1 AS pass FROM orders \
        UNION ALL SELECT id, customer, 'second', 2 FROM orders \
        UNION ALL SELECT id, customer, 'third', 3 FROM orders WHERE id % 8 = 0) AS c \
        ORDER BY CASE WHEN id % 3 = 0 THEN id ELSE id / 4 END, pass";
    let source = format!(
        "{}[[source.config.queries]]\nname = \"changes\"\nsql = \"{changes}\"\n",
        db.connection()
    );
    let text = pipeline(1_000_000, &source, &sink).replace("batch_rows = 1000", "batch_rows = 5");
    scratch.write("pipeline.toml", text);
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let expected = db.lines(
        "SELECT id || ' ' || customer || ' ' || CASE WHEN id % 8 = 0 THEN 'third' ELSE 'second' END \
         FROM orders ORDER BY id",
    );
    let got = db.lines("SELECT id || ' ' || customer || ' ' || status FROM keyed ORDER BY id");
    assert_eq!(got, expected);
    assert_eq!(db.value("SELECT count(*) FROM _ingest_epochs"), "1");
}

#[test]
fn fifty_sigkills_during_a_million_row_upsert_leave_the_target_exactly_equal_to_the_source() {
    sigkills("prepared", 1_000_000, 50);
}

#[test]
fn a_sigkill_at_any_point_leaves_the_target_exactly_equal_to_the_source_staged_commits() {
    sigkills("staging", 200_000, 12);
}

/// Kill `kills` runs of a PG → PG upsert of `rows` rows (half the keys already in the
/// target) at random points, then finish: the target equals the source, no staging table
/// or prepared transaction is left, no epoch applied twice.
fn sigkills(protocol: &str, rows: i64, kills: usize) {
    let db = TestDb::new(&format!("kills_{protocol}"));
    db.sql(ORDERS);
    fill_orders(&db, 1, rows, "new");
    db.sql("CREATE TABLE orders_copy (id bigint PRIMARY KEY, customer text, amount numeric(12,2), status text, updated_at timestamptz)");
    fill_orders_into(&db, "orders_copy", 1, rows / 2, "stale");
    let scratch = Scratch::new();
    let sink = pg_sink(
        &db,
        "write_mode = \"upsert\"\nprimary_key = [\"id\"]",
        &format!("table = \"orders_copy\"\ncommit = \"{protocol}\"\n"),
    );
    let source = format!("{}tables = [\"orders\"]\n", db.connection());
    scratch.write("pipeline.toml", pipeline(20_000, &source, &sink));

    // Kill at random moments: most runs commit an epoch or two first, some are killed in
    // the middle of a commit. A run that finishes before its moment has copied the whole
    // table (the next run reads it all again, as a full refresh does): on a machine that
    // fast, the moments come sooner from then on.
    let mut killed = 0;
    let mut rng = 0x9e37_79b9_u64;
    let mut latest = 700;
    for _ in 0..kills {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let after = Duration::from_millis(20 + (rng >> 33) % latest);
        let mut child = start(&scratch);
        if wait_or_kill(&mut child, after) {
            killed += 1;
        } else {
            latest = (latest / 2).max(50);
        }
    }
    let committed_while_killed: u64 = db
        .value("SELECT count(*) FROM _ingest_epochs WHERE stream = 'orders'")
        .parse()
        .unwrap();
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert!(
        killed * 2 >= kills,
        "only {killed} runs were killed before one finished; {kills} were planned"
    );
    assert!(
        committed_while_killed > 0,
        "no epoch committed between the kills"
    );
    assert_copied_exactly_once(&db);
}

/// `orders_copy` equals `orders` (`EXCEPT` both ways is empty), no staging table or
/// prepared transaction is left, and no epoch of stream `orders` was applied twice.
fn assert_copied_exactly_once(db: &TestDb) {
    assert_eq!(
        db.value(
            "SELECT count(*) FROM ((SELECT * FROM orders EXCEPT SELECT * FROM orders_copy) \
             UNION ALL (SELECT * FROM orders_copy EXCEPT SELECT * FROM orders)) AS d"
        ),
        "0"
    );
    assert_eq!(
        db.value("SELECT count(*) FROM pg_tables WHERE tablename LIKE '\\_ingest\\_stage%'"),
        "0",
        "a staging table was left behind"
    );
    assert_eq!(
        db.value(&format!(
            "SELECT count(*) FROM pg_prepared_xacts WHERE database = '{}'",
            db.name
        )),
        "0",
        "a prepared transaction was left behind"
    );
    assert_eq!(
        db.value("SELECT count(*) FROM _ingest_epochs WHERE stream = 'orders'"),
        db.value("SELECT count(DISTINCT epoch) FROM _ingest_epochs WHERE stream = 'orders'"),
    );
}

fn fill_orders_into(db: &TestDb, table: &str, from: i64, to: i64, status: &str) {
    db.sql(&format!(
        "INSERT INTO {table} SELECT g, 'customer ' || (g % 997), 0, '{status}', \
         timestamptz '2020-01-01' FROM generate_series({from}, {to}) AS g"
    ));
}

/// Start a run whose output the test reads when it ends.
fn start_piped(scratch: &Scratch) -> Child {
    start_with(scratch, Stdio::piped)
}

/// Start a run whose output nobody reads (it is killed).
fn start(scratch: &Scratch) -> Child {
    start_with(scratch, Stdio::null)
}

fn start_with(scratch: &Scratch, output: fn() -> Stdio) -> Child {
    scratch
        .command(&["run", "pipeline.toml"])
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap()
}

#[test]
fn a_terminated_session_is_retried_from_the_last_checkpoint() {
    let db = TestDb::new("terminate");
    db.sql(ORDERS);
    fill_orders(&db, 1, 300_000, "new");
    // A slow target: every epoch's insert waits, so the source is held back and its COPY
    // is still running, blocked on a full socket, when its session is terminated.
    db.sql(
        "CREATE TABLE orders_copy (id bigint PRIMARY KEY, customer text, amount numeric(12,2), status text, updated_at timestamptz); \
         CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.2); RETURN NULL; END $$; \
         CREATE TRIGGER slow_insert AFTER INSERT ON orders_copy FOR EACH STATEMENT EXECUTE FUNCTION slow_insert();",
    );
    let scratch = Scratch::new();
    let sink = pg_sink(&db, "", "table = \"orders_copy\"\n");
    let source = format!("{}tables = [\"orders\"]\n", db.connection());
    scratch.write("pipeline.toml", pipeline(20_000, &source, &sink));
    let child = start_piped(&scratch);
    // Terminate the source's session once it is reading; only a termination that reached
    // a live session counts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut terminated = false;
    while Instant::now() < deadline && !terminated {
        let n = db.value(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'ingest-postgres-source' \
             AND state = 'active' AND query LIKE 'COPY%'",
        );
        terminated = n != "0";
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(terminated, "the source's session was never seen");
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("retrying from the last checkpoint"),
        "the failure was retried: {stderr}"
    );
    // The server says why when it can; a session killed while it was blocked sending
    // COPY data just closes.
    assert!(
        stderr.contains("terminating connection due to administrator command")
            || stderr.contains("the server closed the connection"),
        "the cause is named: {stderr}"
    );
    assert_same_ids(&db, "orders", "orders_copy");
}

#[test]
fn a_server_restart_mid_run_is_retried_and_loses_and_repeats_nothing() {
    // The restart would break every other test using the server: this one has it alone.
    let server = pg::exclusive();
    let db = TestDb::new("restart");
    db.sql(ORDERS);
    fill_orders(&db, 1, 300_000, "new");
    db.sql("CREATE TABLE orders_copy (id bigint PRIMARY KEY, customer text, amount numeric(12,2), status text, updated_at timestamptz)");
    fill_orders_into(&db, "orders_copy", 1, 150_000, "stale");
    let scratch = Scratch::new();
    let sink = pg_sink(
        &db,
        "write_mode = \"upsert\"\nprimary_key = [\"id\"]",
        "table = \"orders_copy\"\n",
    );
    let source = format!("{}tables = [\"orders\"]\n", db.connection());
    // Enough patience for the server to come back: about 15 s of backoff in all.
    let quick = pipeline(20_000, &source, &sink);
    let text = quick.replace(
        "max_attempts = 5\ninitial_backoff = \"50ms\"\nmax_backoff = \"500ms\"",
        "max_attempts = 10\ninitial_backoff = \"250ms\"\nmax_backoff = \"2s\"",
    );
    assert_ne!(text, quick, "the [retry] table of `pipeline` changed");
    scratch.write("pipeline.toml", text);
    let child = start_piped(&scratch);
    // Restart once the sink is writing, with epochs committed and another under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut writing = false;
    while Instant::now() < deadline && !writing {
        writing = db.value(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
             AND application_name = 'ingest-postgres-sink' AND query LIKE 'COPY%'",
            db.name
        )) != "0";
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(writing, "the sink was never seen writing");
    std::thread::sleep(Duration::from_millis(300));
    pg::restart_server(&server);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("retrying from the last checkpoint"),
        "the failure was retried: {stderr}"
    );
    assert!(
        !stdout.contains(" 1 attempt;"),
        "the run needed more than one attempt: {stdout}"
    );
    assert_copied_exactly_once(&db);
}

#[test]
fn bad_connections_and_tables_fail_with_a_clear_error_naming_the_stage() {
    let db = TestDb::new("errors");
    db.sql("CREATE TABLE t (id int PRIMARY KEY, p point)");
    let scratch = Scratch::new();
    let file_sink = "[[sink]]\nname = \"lake\"\nplugin = \"builtin:file\"\nfs = [\"out:rw\"]\n[sink.config]\npath = \"out\"\n";
    let cases: Vec<(&str, String, String, &[&str])> = vec![
        (
            "wrong password",
            format!(
                "host = \"{}\"\nuser = \"{}\"\ndatabase = \"{}\"\npassword_secret = \"pg\"\ntables = [\"t\"]\n",
                pg::HOST,
                pg::SCRAM_USER,
                db.name
            ),
            "not-the-password".into(),
            &["source \"db\"", "password authentication failed", "ingest_scram"],
        ),
        (
            "unreachable host",
            format!("host = \"127.0.0.1\"\nport = 1\nuser = \"postgres\"\ndatabase = \"{}\"\ntables = [\"t\"]\n", db.name),
            String::new(),
            &["source \"db\"", "127.0.0.1:1"],
        ),
        (
            "missing table",
            format!("{}tables = [\"nowhere\"]\n", db.connection()),
            String::new(),
            &["source \"db\"", "\"nowhere\" matches no table"],
        ),
        (
            "unmappable type",
            format!("{}tables = [\"t\"]\n", db.connection()),
            String::new(),
            &["source \"db\"", "column `p` has type point", "unknown_types"],
        ),
    ];
    for (case, source, password, expected) in cases {
        let mut text = pipeline(1000, &source, file_sink);
        if !password.is_empty() {
            text = text.replace(
                "[[source]]",
                "[secrets]\npg = { env = \"TEST_PG_PASSWORD\" }\n\n[[source]]",
            );
            text = text.replace("batch_rows = 1000", "batch_rows = 1000\nsecrets = [\"pg\"]");
        }
        if case == "unreachable host" {
            text = text.replace(&pg::net_grant(), "net = [\"127.0.0.1:1\"]");
            text = text.replace("max_attempts = 5", "max_attempts = 2");
        }
        scratch.write("pipeline.toml", &text);
        let mut command = scratch.command(&["run", "pipeline.toml"]);
        command.env("TEST_PG_PASSWORD", &password);
        let out = output(command);
        assert_ne!(out.code, 0, "{case}: the run should fail");
        for part in expected {
            assert!(
                out.stderr.contains(part),
                "{case}: {part:?} missing from:\n{}",
                out.stderr
            );
        }
        if !password.is_empty() {
            assert!(
                !out.stderr.contains(&password),
                "{case}: the password leaked"
            );
        }
    }

    // A host outside the `net` grant is denied, and named.
    let source = format!("{}tables = [\"t\"]\n", db.connection());
    let text =
        pipeline(1000, &source, file_sink).replace(&pg::net_grant(), "net = [\"127.0.0.1:6543\"]");
    scratch.write("pipeline.toml", &text);
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("127.0.0.1:5432"), "{}", out.stderr);
    assert!(out.stderr.contains("net"), "{}", out.stderr);

    // With `unknown_types = "text"` the column is read as text.
    let source = format!(
        "{}tables = [\"t\"]\nunknown_types = \"text\"\n",
        db.connection()
    );
    db.sql("INSERT INTO t VALUES (1, '(1.5,2)')");
    scratch.write("pipeline.toml", pipeline(1000, &source, file_sink));
    let out = scratch.host(&["run", "pipeline.toml"]);
    out.assert_ok();
    assert!(
        out.stderr.contains("reading its text form"),
        "{}",
        out.stderr
    );
    assert!(pretty(&read_parquet(&parquet_files(&scratch.path("out/t"))[0])).contains("(1.5,2)"));
}

#[test]
fn scram_authentication_with_a_granted_secret_reads_the_table() {
    let db = TestDb::new("scram");
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');");
    db.sql(&format!("GRANT SELECT ON t TO {}", pg::SCRAM_USER));
    let scratch = Scratch::new();
    let source = format!(
        "host = \"{}\"\nuser = \"{}\"\ndatabase = \"{}\"\npassword_secret = \"pg\"\ntables = [\"t\"]\n",
        pg::HOST,
        pg::SCRAM_USER,
        db.name
    );
    let file_sink = "[[sink]]\nname = \"lake\"\nplugin = \"builtin:file\"\nfs = [\"out:rw\"]\n[sink.config]\npath = \"out\"\nformat = \"jsonl\"\n";
    let text = pipeline(1000, &source, file_sink)
        .replace(
            "[[source]]",
            "[secrets]\npg = { env = \"TEST_PG_PASSWORD\" }\n\n[[source]]",
        )
        .replace("batch_rows = 1000", "batch_rows = 1000\nsecrets = [\"pg\"]");
    scratch.write("pipeline.toml", &text);
    let mut command = scratch.command(&["run", "pipeline.toml"]);
    command.env("TEST_PG_PASSWORD", pg::SCRAM_PASSWORD);
    let out = output(command);
    out.assert_ok();
    assert!(!out.stderr.contains(pg::SCRAM_PASSWORD));
    assert_eq!(json_lines(&scratch.path("out/t")).len(), 2);
}

fn read_parquet(path: &Path) -> Vec<arrow::array::RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every value of `batches` as text, one line per row, ` | ` between columns.
fn pretty(batches: &[arrow::array::RecordBatch]) -> String {
    use arrow::array::AsArray;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut out = String::new();
    for batch in batches {
        // Timestamps in UTC are shown as UTC instants (`Z`), without a time-zone database.
        let columns: Vec<arrow::array::ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                arrow::datatypes::DataType::Timestamp(_, Some(_)) => {
                    let naive = c
                        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                        .clone()
                        .with_timezone_opt(None::<String>);
                    std::sync::Arc::new(naive) as arrow::array::ArrayRef
                }
                _ => c.clone(),
            })
            .collect();
        let formatters: Vec<ArrayFormatter> = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            let values: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            out.push_str(&values.join(" | "));
            out.push('\n');
        }
    }
    out
}

#[test]
fn rows_the_target_refuses_go_to_the_dead_letter_queue_and_the_rest_commits() {
    let db = TestDb::new("refused");
    db.sql(ORDERS);
    fill_orders(&db, 1, 500, "new");
    // A source column the target declares NOT NULL, with NULLs in every 50th row.
    db.sql("ALTER TABLE orders ALTER COLUMN customer DROP NOT NULL");
    db.sql("UPDATE orders SET customer = NULL WHERE id % 50 = 0");
    db.sql(
        "CREATE TABLE orders_copy (id bigint PRIMARY KEY, customer text NOT NULL, \
         amount numeric(12,2), status text, updated_at timestamptz)",
    );
    for protocol in ["prepared", "staging"] {
        db.sql("TRUNCATE orders_copy; DROP TABLE IF EXISTS _ingest_epochs");
        let scratch = Scratch::new();
        let sink = pg_sink(
            &db,
            "write_mode = \"upsert\"\nprimary_key = [\"id\"]\non_error = \"dlq\"",
            &format!("table = \"orders_copy\"\ncommit = \"{protocol}\"\n"),
        );
        let source = format!("{}tables = [\"orders\"]\n", db.connection());
        let text = pipeline(200, &source, &sink)
            .replace("[checkpoint]", "[dlq]\nprotect = \"raw\"\n\n[checkpoint]");
        scratch.write("pipeline.toml", &text);
        let out = scratch.host(&["run", "pipeline.toml"]);
        out.assert_ok();
        assert!(
            out.stdout
                .contains("10 rejected (10 to the dead-letter queue)"),
            "{}",
            out.stdout
        );
        assert_eq!(
            db.value("SELECT count(*) FROM orders_copy"),
            "490",
            "{protocol}"
        );
        let letters = dead_letters(&scratch.path(""), "pg", "orders");
        assert_eq!(letters.len(), 10, "{protocol}: {letters:?}");
        for letter in &letters {
            assert_eq!(
                letter["plugin"], "sink \"warehouse\" (builtin:postgres)",
                "{letter}"
            );
            assert_eq!(
                letter["reason"],
                "null value in column \"customer\" of relation \"orders_copy\" violates not-null constraint"
            );
            let row: serde_json::Value =
                serde_json::from_str(letter["record"].as_str().unwrap()).unwrap();
            assert_eq!(row["id"].as_i64().unwrap() % 50, 0, "{row}");
        }
    }
}

/// `pipeline` with `readers` instances reading the source's splits.
fn with_readers(pipeline: String, readers: u32) -> String {
    let text = pipeline.replace(
        "batch_rows = 1000\n",
        &format!("batch_rows = 1000\nreaders = {readers}\n"),
    );
    assert!(
        text.contains("readers = "),
        "the source table of `pipeline` changed"
    );
    text
}

/// The `j` of the rows a concurrent writer inserted while a run read the table (`id`
/// 10,000,000 + j for odd j, -j for even j), in order.
fn inserted_while_reading(db: &TestDb, table: &str) -> Vec<i64> {
    db.lines(&format!(
        "SELECT CASE WHEN id < 0 THEN -id ELSE id - 10000000 END AS j FROM {table} \
         WHERE id < 0 OR id > 10000000 ORDER BY j"
    ))
    .iter()
    .map(|l| l.parse().unwrap())
    .collect()
}

#[test]
fn key_ranges_read_in_parallel_see_one_instant_of_a_table_being_written() {
    let db = TestDb::new("ranges");
    db.sql(ORDERS);
    fill_orders(&db, 1, 30_000, "new");
    // A writer that commits one row at a time, alternately below the first key range and
    // above the last: ranges read from different snapshots would see a set of its rows
    // with a gap, one snapshot sees the rows up to some j, with none missing.
    db.sql(
        "CREATE PROCEDURE keep_inserting() LANGUAGE plpgsql AS $$ \
         BEGIN FOR j IN 1..1000000 LOOP \
           INSERT INTO orders VALUES (CASE WHEN j % 2 = 1 THEN 10000000 + j ELSE -j END, 'w', 0, 'new', now()); \
           COMMIT; PERFORM pg_sleep(0.0002); \
         END LOOP; END $$",
    );
    let mut writer = std::process::Command::new("psql")
        .args(["-h", pg::HOST, "-U", "postgres", "-d", &db.name, "-X", "-q"])
        .args([
            "-c",
            "SET synchronous_commit = off",
            "-c",
            "CALL keep_inserting()",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.value("SELECT count(*) FROM orders WHERE id > 10000000") == "0" {
        assert!(
            Instant::now() < deadline,
            "the concurrent writer does not write"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for readers in [1, 3] {
        let scratch = Scratch::new();
        let copy = format!("orders_copy_{readers}");
        let sink = pg_sink(&db, "", &format!("table = \"{copy}\"\n"));
        let source = format!(
            "{}tables = [\"orders\"]\nsplit_rows = 14000\n",
            db.connection()
        );
        scratch.write(
            "pipeline.toml",
            with_readers(pipeline(2_000, &source, &sink), readers),
        );
        scratch.host(&["run", "pipeline.toml"]).assert_ok();
        let state = scratch.host(&["state", "show", "pipeline.toml"]);
        assert!(
            state.stdout.contains("keys-3-of-3") && !state.stdout.contains("keys-4"),
            "readers = {readers}: read in 3 key ranges: {}",
            state.stdout
        );
        assert_eq!(
            db.value(&format!("SELECT count(*) - count(DISTINCT id) FROM {copy}")),
            "0",
            "readers = {readers}: a row was read twice"
        );
        assert_eq!(
            db.value(&format!(
                "SELECT count(*) FROM orders WHERE id BETWEEN 1 AND 30000 AND id NOT IN (SELECT id FROM {copy})"
            )),
            "0",
            "readers = {readers}: a row was lost"
        );
        let seen = inserted_while_reading(&db, &copy);
        let expected: Vec<i64> = (1..=seen.len() as i64).collect();
        assert!(
            seen == expected,
            "readers = {readers}: the ranges saw the writer's rows {:?} … {:?} ({} rows), not rows 1 to {}",
            &seen[..seen.len().min(5)],
            &seen[seen.len().saturating_sub(5)..],
            seen.len(),
            seen.len()
        );
        assert!(!seen.is_empty());
    }
    writer.kill().unwrap();
    writer.wait().unwrap();
    let written: usize = db
        .value("SELECT count(*) FROM orders WHERE id < 0 OR id > 10000000")
        .parse()
        .unwrap();
    assert!(
        written > inserted_while_reading(&db, "orders_copy_3").len(),
        "the writer wrote nothing while the runs read"
    );
}

#[test]
fn a_run_killed_while_reading_key_ranges_resumes_the_same_ranges() {
    let db = TestDb::new("range_kills");
    db.sql(ORDERS);
    fill_orders(&db, 1, 200_000, "new");
    let scratch = Scratch::new();
    let sink = pg_sink(&db, "", "table = \"orders_copy\"\n");
    let source = format!(
        "{}tables = [\"orders\"]\nsplit_rows = 50000\n",
        db.connection()
    );
    scratch.write(
        "pipeline.toml",
        with_readers(pipeline(10_000, &source, &sink), 2),
    );
    // Kill runs until one finishes on its own (another would read the table again).
    let mut killed = 0;
    let mut kept_plans = 0;
    let mut finished = false;
    let epochs = || -> u64 {
        db.value("SELECT count(*) FROM _ingest_epochs")
            .parse()
            .unwrap_or(0)
    };
    db.sql("CREATE TABLE IF NOT EXISTS _ingest_epochs (pipeline text NOT NULL, stream text NOT NULL, \
            epoch bigint NOT NULL, nonce text NOT NULL, rows bigint NOT NULL, \
            committed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, stream, epoch))");
    for (n, after) in [0, 60, 120, 30, 90].into_iter().enumerate() {
        // Kill each run soon after it commits an epoch, in the middle of its ranges.
        let committed = epochs();
        let mut child = start(&scratch);
        let deadline = Instant::now() + Duration::from_secs(30);
        while epochs() == committed && Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if !wait_or_kill(&mut child, Duration::from_millis(after)) {
            finished = true;
            break;
        }
        killed += 1;
        let state = scratch.host(&["state", "show", "pipeline.toml"]);
        if state.stdout.contains("read part-way in ") {
            kept_plans += 1;
        }
        // Planning again now would cut other ranges: rows come and go at both ends.
        db.sql(&format!(
            "DELETE FROM orders WHERE id <= {}",
            (n as i64 + 1) * 3_000
        ));
        fill_orders(
            &db,
            300_000 + n as i64 * 20_000,
            319_999 + n as i64 * 20_000,
            "late",
        );
    }
    assert!(
        killed >= 3,
        "only {killed} runs were killed before they finished"
    );
    if !finished {
        scratch.host(&["run", "pipeline.toml"]).assert_ok();
    }
    assert_eq!(
        db.value("SELECT count(*) - count(DISTINCT id) FROM orders_copy"),
        "0",
        "a row was delivered twice"
    );
    // Every row that stayed in the table is there; rows deleted after a range was read
    // may be too (the copy is of the moments each range was read).
    assert_eq!(
        db.value("SELECT count(*) FROM orders WHERE id <= 200000 AND id NOT IN (SELECT id FROM orders_copy)"),
        "0",
        "a row was lost"
    );
    assert!(
        kept_plans > 0,
        "no killed run left key ranges part-way read for the next to resume"
    );
    let state = scratch.host(&["state", "show", "pipeline.toml"]);
    assert!(state.stdout.contains("keys-1-of-"), "{}", state.stdout);
    assert!(!state.stdout.contains("read part-way"), "{}", state.stdout);
}

/// The CA that issued the server's certificate (made by `scripts/postgres-setup`).
const TEST_CA: &str = "/var/lib/ingest-test-tls/ca.pem";

#[test]
fn tls_require_and_verify_full_read_and_write_and_an_untrusted_server_is_refused() {
    let db = TestDb::new("tls");
    db.sql(ORDERS);
    fill_orders(&db, 1, 5_000, "new");
    let scratch = Scratch::new();
    let ca = std::fs::read(TEST_CA).unwrap_or_else(|e| {
        panic!("{TEST_CA}: {e}; run scripts/postgres-setup, which makes the test CA")
    });
    scratch.write("certs/ca.pem", &ca);
    // The server's own certificate is no CA: nothing chains to it.
    scratch.write(
        "certs/other.pem",
        std::fs::read("/var/lib/ingest-test-tls/server.pem").unwrap(),
    );
    // `ingest_tls` is let in over TLS only: a run that reads and writes as it went
    // through TLS on both sides.
    let connection = db.connection().replace(
        "user = \"postgres\"",
        &format!("user = \"{}\"", pg::TLS_USER),
    );
    let tls_pipeline = |source_tls: &str, sink_tls: &str| {
        let sink = format!(
            "[[sink]]\nname = \"warehouse\"\nplugin = \"builtin:postgres\"\n{}\n[sink.config]\n{connection}table = \"orders_copy\"\n{sink_tls}\n",
            pg::net_grant(),
        );
        let source = format!("{connection}tables = [\"orders\"]\n{source_tls}\n");
        pipeline(2_000, &source, &sink)
            .replace("batch_rows = 1000", "batch_rows = 1000\nfs = [\"certs\"]")
    };
    scratch.write(
        "pipeline.toml",
        tls_pipeline(
            "sslmode = \"verify-full\"\nsslrootcert = \"certs/ca.pem\"",
            "sslmode = \"require\"",
        ),
    );
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_same_ids(&db, "orders", "orders_copy");

    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "sslmode = \"disable\"",
            "plain text",
            &["source \"db\"", "no encryption"],
        ),
        (
            "sslmode = \"verify-full\"\nsslrootcert = \"certs/other.pem\"",
            "a certificate the CA file does not vouch for",
            &["source \"db\"", "TLS", "certificate", "UnknownIssuer"],
        ),
        (
            "sslmode = \"verify-full\"\nsslrootcert = \"elsewhere/ca.pem\"",
            "a CA file outside the grant",
            &["source \"db\"", "sslrootcert", "elsewhere/ca.pem", "`fs`"],
        ),
    ];
    for (source_tls, case, expected) in cases {
        scratch.write(
            "pipeline.toml",
            tls_pipeline(source_tls, "sslmode = \"require\""),
        );
        let out = scratch.host(&["run", "pipeline.toml"]);
        assert_ne!(out.code, 0, "{case}: {}", out.stdout);
        for part in expected {
            assert!(
                out.stderr.contains(part),
                "{case}: `{part}` missing from {}",
                out.stderr
            );
        }
    }
}

#[test]
fn overwrite_replaces_the_table_at_once_with_the_rows_of_the_run() {
    for protocol in ["prepared", "staging"] {
        overwrites(protocol);
    }
}

fn overwrites(protocol: &str) {
    let db = TestDb::new(&format!("overwrite_{protocol}"));
    db.sql(ORDERS);
    fill_orders(&db, 1, 1_000, "new");
    let scratch = Scratch::new();
    let sink = pg_sink(
        &db,
        "write_mode = \"replace\"",
        &format!("table = \"orders_copy\"\ncommit = \"{protocol}\"\n"),
    );
    let source = format!("{}tables = [\"orders\"]\n", db.connection());
    scratch.write("pipeline.toml", pipeline(300, &source, &sink));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(json_rows(&db, "orders_copy"), json_rows(&db, "orders"));

    // Rows deleted at the source are gone from the copy after the next run, and no
    // shadow table is left.
    db.sql(
        "DELETE FROM orders WHERE id % 4 = 0; UPDATE orders SET status = 'paid' WHERE id % 5 = 0",
    );
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(json_rows(&db, "orders_copy"), json_rows(&db, "orders"));
    assert_eq!(
        db.value("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%\\_\\_ingest\\_new'"),
        "0"
    );

    // A run killed part-way leaves the copy as the last finished run made it; the next
    // run finishes the replacement.
    let before = json_rows(&db, "orders_copy");
    fill_orders(&db, 1_001, 200_000, "late");
    scratch.write("pipeline.toml", pipeline(10_000, &source, &sink));
    let epochs = || db.value("SELECT count(*) FROM _ingest_epochs");
    let committed = epochs();
    let mut child = start(&scratch);
    let deadline = Instant::now() + Duration::from_secs(30);
    while epochs() == committed && Instant::now() < deadline && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        wait_or_kill(&mut child, Duration::from_millis(50)),
        "{protocol}: the run ended before it could be killed"
    );
    assert_eq!(
        json_rows(&db, "orders_copy"),
        before,
        "{protocol}: a killed run changed the copy"
    );
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(
        db.value(
            "SELECT count(*) FROM ((SELECT * FROM orders EXCEPT SELECT * FROM orders_copy) \
                  UNION ALL (SELECT * FROM orders_copy EXCEPT SELECT * FROM orders)) AS d"
        ),
        "0",
        "{protocol}: the copy differs from the source"
    );
    assert_eq!(
        db.value("SELECT count(*) FROM orders_copy"),
        db.value("SELECT count(*) FROM orders")
    );
}

#[test]
fn rows_a_check_a_foreign_key_or_a_unique_key_refuses_go_to_the_dead_letter_queue() {
    let db = TestDb::new("constraints");
    db.sql(ORDERS);
    fill_orders(&db, 1, 2_000, "new");
    // Every 100th row has a negative amount (CHECK), every 150th a status the lookup
    // table lacks (foreign key), every 250th repeats a time that must be unique; the rows are spread over several batches and epochs.
    db.sql("UPDATE orders SET amount = -1 WHERE id % 100 = 0");
    db.sql("UPDATE orders SET status = 'lost' WHERE id % 150 = 0");
    db.sql("UPDATE orders SET updated_at = '2020-01-01' WHERE id % 250 = 0");
    db.sql("CREATE TABLE statuses (status text PRIMARY KEY); INSERT INTO statuses VALUES ('new'), ('paid')");
    let refused = |db: &TestDb| -> Vec<i64> {
        db.lines(
            "SELECT id FROM orders WHERE amount < 0 OR status = 'lost' \
             OR (updated_at = '2020-01-01' AND id <> (SELECT min(id) FROM orders WHERE updated_at = '2020-01-01')) ORDER BY id",
        )
        .iter()
        .map(|l| l.parse().unwrap())
        .collect()
    };
    let expected = refused(&db);
    for mode in ["append", "upsert"] {
        db.sql(
            "DROP TABLE IF EXISTS orders_copy; DROP TABLE IF EXISTS _ingest_epochs; \
             CREATE TABLE orders_copy (id bigint PRIMARY KEY, customer text NOT NULL, \
             amount numeric(12,2) CHECK (amount >= 0), status text REFERENCES statuses, updated_at timestamptz UNIQUE)",
        );
        let scratch = Scratch::new();
        let extra = match mode {
            "append" => "write_mode = \"append\"\non_error = \"dlq\"",
            _ => "write_mode = \"upsert\"\nprimary_key = [\"id\"]\non_error = \"dlq\"",
        };
        let sink = pg_sink(&db, extra, "table = \"orders_copy\"\n");
        let source = format!("{}tables = [\"orders\"]\n", db.connection());
        let text = pipeline(700, &source, &sink)
            .replace("[checkpoint]", "[dlq]\nprotect = \"raw\"\n\n[checkpoint]");
        scratch.write("pipeline.toml", &text);
        let out = scratch.host(&["run", "pipeline.toml"]);
        out.assert_ok();
        let letters = dead_letters(&scratch.path(""), "pg", "orders");
        let mut ids: Vec<i64> = letters
            .iter()
            .map(|l| {
                let row: serde_json::Value =
                    serde_json::from_str(l["record"].as_str().unwrap()).unwrap();
                row["id"].as_i64().unwrap()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, expected, "{mode}: the refused rows");
        for letter in &letters {
            let reason = letter["reason"].as_str().unwrap();
            assert!(
                [
                    "violates check constraint",
                    "violates foreign key constraint",
                    "duplicate key value violates unique constraint"
                ]
                .iter()
                .any(|r| reason.contains(r))
                    && reason.contains("SQLSTATE 23"),
                "{mode}: {reason}"
            );
        }
        // Everything else arrived, once.
        assert_eq!(
            db.value(&format!(
                "SELECT count(*) FROM orders WHERE id NOT IN ({}) AND id NOT IN (SELECT id FROM orders_copy)",
                expected.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
            )),
            "0",
            "{mode}: a row that fits is missing"
        );
        assert_eq!(
            db.value("SELECT count(*) FROM orders_copy")
                .parse::<usize>()
                .unwrap(),
            2_000 - expected.len(),
            "{mode}"
        );
    }
}

/// Example `name`, copied into `scratch` (without what runs leave in it), its pipeline
/// pointed at `db` instead of database `postgres`.
fn example_in(name: &str, db: &TestDb, scratch: &Scratch) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    copy_tree(&dir, &scratch.path(""), &|p| named(p, &["out", ".state"]));
    let text = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
    assert!(text.contains("database = \"postgres\""), "{name}");
    let text = text.replace(
        "database = \"postgres\"",
        &format!("database = \"{}\"", db.name),
    );
    scratch.write("pipeline.toml", text);
}

#[test]
fn example_07_reads_its_query_into_parquet_by_day_and_a_second_run_reads_nothing() {
    let db = TestDb::new("example_07");
    let scratch = Scratch::new();
    example_in("07-postgres-to-parquet", &db, &scratch);
    let out = scratch.host(&["run", "pipeline.toml"]);
    out.assert_ok();
    let files = parquet_files(&scratch.path("out/orders"));
    // 10,000 orders a minute apart from 2026-01-01: seven days of them.
    let days: std::collections::BTreeSet<String> = files
        .iter()
        .map(|f| {
            let day = f.parent().unwrap().file_name().unwrap();
            day.to_string_lossy().to_string()
        })
        .collect();
    let expected: Vec<String> = (1..=7)
        .map(|d| format!("updated_at_day=2026-01-0{d}"))
        .collect();
    assert_eq!(days.into_iter().collect::<Vec<_>>(), expected);
    let mut ids: Vec<i64> = files
        .iter()
        .flat_map(|f| read_parquet(f))
        .flat_map(|b| {
            use arrow::array::AsArray;
            let ids = b
                .column_by_name("id")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int32Type>()
                .clone();
            ids.values().iter().map(|v| *v as i64).collect::<Vec<_>>()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=10_000).collect::<Vec<i64>>());

    let again = scratch.host(&["run", "pipeline.toml"]);
    again.assert_ok();
    assert!(again.stdout.contains(": 0 rows read"), "{}", again.stdout);
    assert_eq!(parquet_files(&scratch.path("out/orders")), files);
}

#[test]
fn example_08_upserts_its_csv_so_the_last_row_per_key_wins_and_deletes_delete() {
    let db = TestDb::new("example_08");
    let scratch = Scratch::new();
    example_in("08-csv-to-postgres-upsert", &db, &scratch);
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let table = || {
        db.lines("SELECT order_id || ' ' || customer || ' ' || status FROM example_orders ORDER BY order_id")
    };
    let expected = [
        "1001 Ada Lovelace new",
        "1002 Grace Hopper shipped",
        "1004 Edsger Dijkstra new",
    ];
    assert_eq!(table(), expected);
    assert_eq!(db.value("SELECT count(*) FROM _ingest_epochs"), "1");
    // A second run finds nothing new in the file and changes nothing.
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(table(), expected);
    assert_eq!(db.value("SELECT count(*) FROM _ingest_epochs"), "1");
}
