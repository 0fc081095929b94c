//! MariaDB in: tables and queries read in full and incrementally, and a table's changes
//! from the binary log (a snapshot, then every change, as a replica), streamed into
//! Postgres (applied by key) and into Parquet (the changelog), exactly once under
//! SIGKILLs, with clear errors for what cannot go on.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, UInt64Type};

use crate::cdc::{
    batches, changelog, sigterm, snapshot_committed, start, start_piped, wait_for, Change,
    PARQUET_SINK,
};
use crate::maria::{self, MyDb};
use crate::pg::{self, TestDb};
use crate::support::*;

/// The source table, its audit trail (every change in commit order, written by triggers in
/// the changing transaction: the truth the changelog is checked against), and 1,000 rows.
const ITEMS: &str = "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text); \
    CREATE TABLE audit (seq bigint AUTO_INCREMENT PRIMARY KEY, op varchar(8) NOT NULL, id int NOT NULL, qty int, note text); \
    CREATE TRIGGER audit_insert AFTER INSERT ON items FOR EACH ROW INSERT INTO audit (op, id, qty, note) VALUES ('insert', NEW.id, NEW.qty, NEW.note); \
    CREATE TRIGGER audit_update AFTER UPDATE ON items FOR EACH ROW INSERT INTO audit (op, id, qty, note) VALUES ('update', NEW.id, NEW.qty, NEW.note); \
    CREATE TRIGGER audit_delete AFTER DELETE ON items FOR EACH ROW INSERT INTO audit (op, id) VALUES ('delete', OLD.id); \
    INSERT INTO items SELECT seq, seq % 17, CONCAT('first ', seq) FROM seq_1_to_1000;";

/// A procedure that, for `seconds`, commits transactions of 50 random inserts (upserts),
/// updates and deletes over keys 1..3000, paced to `rate` changes a second.
const WRITER: &str = "DELIMITER //
CREATE PROCEDURE writer(seconds INT, rate INT)
BEGIN
  DECLARE t0 DOUBLE DEFAULT UNIX_TIMESTAMP(SYSDATE(6));
  DECLARE done BIGINT DEFAULT 0;
  DECLARE i INT;
  DECLARE k INT;
  DECLARE r INT;
  WHILE UNIX_TIMESTAMP(SYSDATE(6)) < t0 + seconds DO
    START TRANSACTION;
    SET i = 0;
    WHILE i < 50 DO
      SET k = 1 + FLOOR(RAND() * 3000);
      SET r = FLOOR(RAND() * 3);
      IF r = 0 THEN
        INSERT INTO items VALUES (k, 1, MD5(RAND())) ON DUPLICATE KEY UPDATE qty = qty + 1, note = VALUES(note);
      ELSEIF r = 1 THEN
        UPDATE items SET qty = qty + 1, note = MD5(RAND()) WHERE id = k;
      ELSE
        DELETE FROM items WHERE id = k;
      END IF;
      SET i = i + 1;
    END WHILE;
    COMMIT;
    SET done = done + 50;
    DO SLEEP(GREATEST(0, done / rate - (UNIX_TIMESTAMP(SYSDATE(6)) - t0)));
  END WHILE;
END//
DELIMITER ;
";

/// A stream-mode pipeline reading `items` from the binary log as replica `server_id`,
/// into `sink`.
fn cdc_pipeline(db: &MyDb, server_id: u32, sink: &str) -> String {
    format!(
        r#"[pipeline]
name = "mariadb-cdc"
mode = "stream"

[retry]
max_attempts = 5
initial_backoff = "50ms"
max_backoff = "500ms"

[[source]]
name = "db"
plugin = "builtin:mariadb"
{grant}
[source.config]
{conn}tables = ["items"]
[source.config.streams.items]
sync = "cdc"
server_id = {server_id}

{sink}"#,
        grant = maria::net_grant(),
        conn = db.connection()
    )
}

fn pg_sink(target: &TestDb) -> String {
    format!(
        "[[sink]]\nname = \"warehouse\"\nplugin = \"builtin:postgres\"\n{}\nwrite_mode = \"upsert\"\nprimary_key = [\"id\"]\n[sink.config]\n{}table = \"items_copy\"\n",
        pg::net_grant(),
        target.connection()
    )
}

/// The audit trail: every key's changes in commit order.
fn audit(db: &MyDb) -> BTreeMap<i32, Vec<Change>> {
    let mut out: BTreeMap<i32, Vec<Change>> = BTreeMap::new();
    for line in db
        .lines("SELECT id, op, COALESCE(qty, ''), COALESCE(note, '<null>') FROM audit ORDER BY seq")
    {
        let parts: Vec<&str> = line.splitn(4, '\t').collect();
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

fn audit_count(db: &MyDb) -> usize {
    db.value("SELECT count(*) FROM audit").parse().unwrap()
}

fn changes_in(scratch: &Scratch) -> usize {
    changelog(&scratch.path("out")).values().map(Vec::len).sum()
}

/// The rows of the source table and of the Postgres target, as `id|qty|note` lines.
fn source_rows(db: &MyDb) -> Vec<String> {
    db.lines("SELECT CONCAT_WS('|', id, qty, COALESCE(note, '<null>')) FROM items ORDER BY id")
}

fn target_rows(target: &TestDb) -> Vec<String> {
    target.lines(
        "SELECT concat_ws('|', id, qty, coalesce(note, '<null>')) FROM items_copy ORDER BY id",
    )
}

/// Wait for a stream run that must stop by itself (on an error) to end; kill it and panic
/// with `what` if it goes on for 60 s.
fn wait_for_failure(mut run: Child, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            run.kill().unwrap();
            panic!("{what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    finished(run.wait_with_output().unwrap())
}

/// Run the pipeline in `scratch`, which must fail by itself.
fn run_to_its_end(scratch: &Scratch) -> Output {
    wait_for_failure(
        start_piped(scratch),
        "the run went on where it should have stopped",
    )
}

fn drain(run: &mut Child) {
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

#[test]
fn twenty_sigkills_while_a_writer_changes_the_table_lose_and_repeat_no_change() {
    let db = MyDb::new("binlog_kills");
    db.sql(ITEMS);
    db.sql(WRITER);
    let target = TestDb::new("binlog_kills_target");
    target.sql("CREATE TABLE items_copy (id int PRIMARY KEY, qty int NOT NULL, note text)");
    let to_pg = Scratch::new();
    to_pg.write(
        "pipeline.toml",
        cdc_pipeline(&db, maria::server_id(), &pg_sink(&target)),
    );
    let to_lake = Scratch::new();
    to_lake.write(
        "pipeline.toml",
        cdc_pipeline(&db, maria::server_id(), PARQUET_SINK),
    );

    // Both take their snapshot (the first 1,000 rows) before the writer starts.
    let mut runs = [start(&to_pg), start(&to_lake)];
    wait_for(Duration::from_secs(60), "both snapshots committed", || {
        snapshot_committed(&to_lake) && target.value("SELECT count(*) FROM items_copy") == "1000"
    });

    let mut writing = db.spawn("CALL writer(30, 5000)");
    let started = Instant::now();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
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
    assert!(writing.wait().unwrap().success(), "the writer failed");
    let wrote_for = started.elapsed();
    let changes = audit_count(&db) - 1000;
    assert!(
        changes as f64 >= 3000.0 * wrote_for.as_secs_f64() * 0.5,
        "the writer made only {changes} changes in {wrote_for:?}"
    );

    // Both catch up; then a SIGTERM drains each within about one epoch.
    let truth_rows = source_rows(&db);
    wait_for(
        Duration::from_secs(120),
        "the Postgres target caught up",
        || target_rows(&target) == truth_rows,
    );
    let total = changes + 1000;
    wait_for(Duration::from_secs(120), "the changelog caught up", || {
        changes_in(&to_lake) >= total
    });
    for run in &mut runs {
        drain(run);
    }
    assert_eq!(
        target_rows(&target),
        truth_rows,
        "the target equals the table"
    );

    // The changelog holds every change once, in commit order per key.
    let truth = audit(&db);
    let log = changelog(&to_lake.path("out"));
    assert_eq!(
        log.values().map(Vec::len).sum::<usize>(),
        total,
        "changes in the changelog"
    );
    for (id, expected) in &truth {
        assert_eq!(log.get(id), Some(expected), "the changes of key {id}");
    }
    assert_eq!(log.len(), truth.len(), "keys in the changelog");
}

#[test]
fn changes_carry_their_place_gtid_time_and_before_image_and_a_key_move_is_a_delete_and_an_insert() {
    let db = MyDb::new("binlog_shape");
    db.sql(ITEMS);
    let scratch = Scratch::new();
    scratch.write(
        "pipeline.toml",
        cdc_pipeline(&db, maria::server_id(), PARQUET_SINK),
    );
    let run = start_piped(&scratch);
    wait_for(Duration::from_secs(60), "the snapshot committed", || {
        snapshot_committed(&scratch)
    });
    db.sql("UPDATE items SET qty = 99 WHERE id = 2");
    db.sql("UPDATE items SET id = 5000 WHERE id = 1");
    db.sql("DELETE FROM items WHERE id = 3");
    wait_for(Duration::from_secs(60), "the changes committed", || {
        changes_in(&scratch) >= 1004
    });

    // DDL that adds a column stops the run before the first change that carries it.
    db.sql("ALTER TABLE items ADD COLUMN colour varchar(10)");
    db.sql("INSERT INTO items VALUES (6000, 1, 'after', 'red')");
    let out = wait_for_failure(run, "the run went on past a column it cannot carry");
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

    // The next run takes the new column and goes on from the last committed change.
    let mut run = start(&scratch);
    wait_for(
        Duration::from_secs(60),
        "the run after the change caught up",
        || changes_in(&scratch) >= 1005,
    );
    drain(&mut run);

    let log = changelog(&scratch.path("out"));
    let ops = |id: i32| log[&id].iter().map(|c| c.op.clone()).collect::<Vec<_>>();
    assert_eq!(ops(1), ["insert", "delete"], "the old key is deleted");
    assert_eq!(ops(5000), ["update"], "the new key holds the row");
    assert_eq!(ops(3), ["insert", "delete"]);
    assert_eq!(log[&6000][0].note.as_deref(), Some("after"));

    let mut places = Vec::new();
    for batch in batches(&scratch.path("out")) {
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int32Type>();
        let ops = batch.column_by_name("_op").unwrap().as_string::<i32>();
        let pos = batch.column_by_name("_pos").unwrap().as_string::<i32>();
        let gtid = batch.column_by_name("_gtid").unwrap().as_string::<i32>();
        let ts = batch.column_by_name("_commit_ts").unwrap();
        let before = batch.column_by_name("_before").unwrap().as_struct();
        let before_qty = before
            .column_by_name("qty")
            .unwrap()
            .as_primitive::<Int32Type>();
        for row in 0..batch.num_rows() {
            places.push(pos.value(row).to_string());
            if ops.value(row) == "insert" && ids.value(row) < 2000 {
                // The snapshot: no transaction, no time, no before-image.
                assert!(gtid.is_null(row) && ts.is_null(row) && before.is_null(row));
                continue;
            }
            assert!(!gtid.is_null(row), "a change without its GTID");
            assert_eq!(gtid.value(row).split('-').count(), 3, "{}", gtid.value(row));
            assert!(!ts.is_null(row), "a change without its time");
            match (ids.value(row), ops.value(row)) {
                (2, "update") => {
                    assert_eq!(before_qty.value(row), 2, "the row as it was before");
                }
                (3, "delete") => assert_eq!(before_qty.value(row), 3),
                _ => {}
            }
        }
    }
    let mut sorted = places.clone();
    sorted.sort();
    assert_eq!(places, sorted, "places sort in log order");
}

#[test]
fn a_server_restart_is_resumed_and_a_purged_log_or_statement_logging_are_clear_errors() {
    // Purging the log and restarting the server would break other tests: this one has the
    // server alone.
    let server = maria::exclusive();
    let db = MyDb::new("binlog_restart");
    db.sql(ITEMS);
    let scratch = Scratch::new();
    let text = cdc_pipeline(&db, maria::server_id(), PARQUET_SINK)
        .replace("max_attempts = 5", "max_attempts = 30")
        .replace("max_backoff = \"500ms\"", "max_backoff = \"1s\"");
    scratch.write("pipeline.toml", &text);
    let run = start_piped(&scratch);
    wait_for(Duration::from_secs(60), "the snapshot committed", || {
        snapshot_committed(&scratch)
    });
    db.sql("UPDATE items SET qty = qty + 1 WHERE id <= 100");
    maria::restart_server(&server);
    db.sql("UPDATE items SET qty = qty + 1 WHERE id > 900");
    db.sql("DELETE FROM items WHERE id BETWEEN 400 AND 409");
    let total = audit_count(&db);
    wait_for(
        Duration::from_secs(60),
        "the stream caught up after the restart",
        || changes_in(&scratch) >= total,
    );
    sigterm(&run);
    let out = finished(run.wait_with_output().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("retrying from the last checkpoint"),
        "the broken stream was retried: {}",
        out.stderr
    );
    assert_eq!(
        changelog(&scratch.path("out")),
        audit(&db),
        "every change once, in order per key"
    );

    // The log the pipeline stands in is purged: the next run says so, and how to go on.
    maria::purge_logs(&server);
    let out = run_to_its_end(&scratch);
    assert_ne!(out.code, 0, "{}", out.stderr);
    for part in [
        "purged past this pipeline's position",
        "take a new snapshot",
    ] {
        assert!(
            out.stderr.contains(part),
            "{part} missing from: {}",
            out.stderr
        );
    }

    // A server that logs statements rather than rows: the error names the setting.
    struct RowFormat;
    impl Drop for RowFormat {
        fn drop(&mut self) {
            maria::set_global("binlog_format", "ROW");
        }
    }
    let _restore = RowFormat;
    maria::set_global("binlog_format", "MIXED");
    let fresh = Scratch::new();
    fresh.write("pipeline.toml", &text);
    let out = run_to_its_end(&fresh);
    assert_ne!(out.code, 0, "{}", out.stderr);
    for part in ["binlog_format is MIXED", "binlog_format = ROW"] {
        assert!(
            out.stderr.contains(part),
            "{part} missing from: {}",
            out.stderr
        );
    }
}

#[test]
fn a_table_is_read_in_full_then_incrementally_without_losing_rows_that_share_a_cursor() {
    let db = MyDb::new("maria_batch");
    db.sql(
        "CREATE TABLE orders (id bigint unsigned PRIMARY KEY, amount decimal(10,2), \
         status enum('new','paid'), placed datetime(6), stamp timestamp(6) NULL, note text); \
         INSERT INTO orders SELECT seq, seq / 100, IF(seq % 2, 'new', 'paid'), \
           '2026-12-01 00:00:00' + INTERVAL (seq DIV 1000) HOUR, '2026-12-01 10:00:00', NULL \
           FROM seq_1_to_5000;",
    );
    let scratch = Scratch::new();
    let text = format!(
        "[pipeline]\nname = \"maria-batch\"\n\n[[source]]\nname = \"db\"\nplugin = \"builtin:mariadb\"\n{}\nbatch_rows = 700\n[source.config]\n{}tables = [\"orders\"]\n[[source.config.queries]]\nname = \"paid\"\nsql = \"SELECT id, amount * 2 AS doubled FROM orders WHERE status = 'paid'\"\n[source.config.streams.orders]\nsync = \"incremental\"\ncursor = \"placed\"\n\n{PARQUET_SINK}",
        maria::net_grant(),
        db.connection()
    );
    scratch.write("pipeline.toml", &text);
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let read = |dir: &str| -> Vec<u64> {
        let mut ids = Vec::new();
        for batch in batches(&scratch.path(dir)) {
            let c = batch
                .column_by_name("id")
                .unwrap()
                .as_primitive::<UInt64Type>();
            ids.extend(c.values().iter().copied());
        }
        ids.sort();
        ids
    };
    assert_eq!(read("out/orders"), (1..=5000).collect::<Vec<u64>>());
    assert_eq!(read("out/paid").len(), 2500);
    let first = batches(&scratch.path("out/orders"));
    let schema = first[0].schema();
    let kinds: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        kinds,
        [
            "id: UInt64",
            "amount: Decimal128(10, 2)",
            "status: Utf8",
            "placed: Timestamp(µs)",
            "stamp: Timestamp(µs, \"+00:00\")",
            "note: Utf8"
        ]
    );

    // More rows arrive at the last cursor value already read, and after it: only they
    // are read next time.
    db.sql(
        "INSERT INTO orders SELECT seq, 1, 'new', '2026-12-01 05:00:00', NULL, 'late' FROM seq_6001_to_6100; \
         INSERT INTO orders SELECT seq, 1, 'new', '2026-12-01 06:00:00', NULL, 'later' FROM seq_6101_to_6150;",
    );
    let before: usize = batches(&scratch.path("out/orders"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let after: usize = batches(&scratch.path("out/orders"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(after - before, 150, "only the new rows are read");
    let mut all = read("out/orders");
    all.dedup();
    assert_eq!(all.len(), 5150, "no row twice");
}

#[test]
fn a_cdc_stream_needs_a_server_id_and_a_source_of_its_own() {
    let db = MyDb::new("binlog_refused");
    db.sql(ITEMS);
    let scratch = Scratch::new();
    let text = cdc_pipeline(&db, maria::server_id(), PARQUET_SINK);
    // A change stream never ends: other streams of the same source would never be read.
    scratch.write(
        "pipeline.toml",
        text.replace("tables = [\"items\"]", "tables = [\"items\", \"audit\"]"),
    );
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("a source with a `cdc` stream must have only that one"),
        "{}",
        out.stderr
    );
    // Without a server id there is no replica to register.
    scratch.write(
        "pipeline.toml",
        text.replace("server_id = ", "# server_id = "),
    );
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("needs a `server_id`"), "{}", out.stderr);
}

#[test]
fn example_10_streams_a_mariadb_table_into_postgres() {
    let db = MyDb::new("example_10");
    let target = TestDb::new("example_10_target");
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/10-mariadb-binlog-to-postgres");
    db.sql(&std::fs::read_to_string(dir.join("setup.sql")).unwrap());
    let scratch = Scratch::new();
    let text = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
    assert!(text.contains("database = \"example\"") && text.contains("database = \"postgres\""));
    let text = text
        .replace(
            "database = \"example\"",
            &format!("database = \"{}\"", db.name),
        )
        .replace(
            "database = \"postgres\"",
            &format!("database = \"{}\"", target.name),
        )
        .replace(
            "server_id = 1010",
            &format!("server_id = {}", maria::server_id()),
        );
    scratch.write("pipeline.toml", text);
    let mut run = start(&scratch);
    let count = || target.value("SELECT count(*) FROM example_items");
    wait_for(Duration::from_secs(60), "the snapshot committed", || {
        target.value("SELECT count(*) FROM pg_tables WHERE tablename = 'example_items'") == "1"
            && count() == "1000"
    });
    db.sql("UPDATE example_items SET qty = qty + 1 WHERE id <= 3");
    db.sql("DELETE FROM example_items WHERE id = 10");
    wait_for(Duration::from_secs(60), "the changes committed", || {
        count() == "999"
            && target.value("SELECT qty FROM example_items WHERE id = 1")
                == db.value("SELECT qty FROM example_items WHERE id = 1")
    });
    drain(&mut run);
    let source = db.lines("SELECT CONCAT_WS('|', id, name, qty) FROM example_items ORDER BY id");
    let copied =
        target.lines("SELECT concat_ws('|', id, name, qty) FROM example_items ORDER BY id");
    assert_eq!(copied, source);
}

#[test]
fn a_user_with_the_documented_grants_and_a_password_from_a_secret_streams_changes() {
    let db = MyDb::new("binlog_grants");
    db.sql(ITEMS);
    let user = format!("ingest_cdc_{}", std::process::id());
    let password = "a-replica-password-for-tests";
    // What the README asks for: SELECT, REPLICATION SLAVE and BINLOG MONITOR.
    db.sql(&format!(
        "DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; \
         GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%'; \
         GRANT SELECT ON {}.* TO '{user}'@'%';",
        db.name
    ));
    struct DropUser(String);
    impl Drop for DropUser {
        fn drop(&mut self) {
            let _ = std::process::Command::new("mariadb")
                .args(["-h", maria::HOST, "-u", "root", "-e"])
                .arg(format!("DROP USER IF EXISTS '{}'@'%'", self.0))
                .output();
        }
    }
    let _user = DropUser(user.clone());
    let text = cdc_pipeline(&db, maria::server_id(), PARQUET_SINK)
        .replace(
            "user = \"root\"",
            &format!("user = \"{user}\"\npassword_secret = \"my\""),
        )
        .replace(
            "[[source]]",
            "[secrets]\nmy = { env = \"TEST_MY_PASSWORD\" }\n\n[[source]]",
        )
        .replace(
            "plugin = \"builtin:mariadb\"",
            "plugin = \"builtin:mariadb\"\nsecrets = [\"my\"]",
        );
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", &text);

    // A wrong password is refused with the server's words, and not retried for long.
    let mut command = scratch.command(&["run", "pipeline.toml"]);
    command.env("TEST_MY_PASSWORD", "not-the-password");
    let out = output(command);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("Access denied for user"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(password));

    let mut command = scratch.command(&["run", "pipeline.toml"]);
    command
        .env("TEST_MY_PASSWORD", password)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut run = command.spawn().unwrap();
    wait_for(Duration::from_secs(60), "the snapshot committed", || {
        snapshot_committed(&scratch)
    });
    db.sql("UPDATE items SET qty = 42 WHERE id = 7");
    wait_for(Duration::from_secs(60), "the change committed", || {
        changes_in(&scratch) >= 1001
    });
    drain(&mut run);
    let log = changelog(&scratch.path("out"));
    assert_eq!(log[&7].last().unwrap().qty, Some(42));
    assert_eq!(log, audit(&db));
}
