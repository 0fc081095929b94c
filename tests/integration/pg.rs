//! The PostgreSQL on this machine (127.0.0.1:5432, trust auth for role `postgres`, set up
//! by scripts/postgres-setup): a database per test, created on demand and dropped after,
//! reached with `psql` so that what the tests check is read by an independent client.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::RwLockReadGuard;
use std::time::{Duration, Instant};

use crate::support::{Exclusive, ServerLock};

pub const HOST: &str = "127.0.0.1";
pub const PORT: u16 = 5432;
/// A role that authenticates with SCRAM-SHA-256 (scripts/postgres-setup).
pub const SCRAM_USER: &str = "ingest_scram";
pub const SCRAM_PASSWORD: &str = "ingest-scram-test-password";
/// The role `scripts/postgres-setup` lets in over TLS only.
pub const TLS_USER: &str = "ingest_tls";

/// Tests share the server; the one that restarts it has it to itself.
static SERVER: ServerLock = ServerLock::new();

/// A hold on the server that keeps it from being restarted; `None` when this thread has
/// it exclusively already.
pub fn shared() -> Option<RwLockReadGuard<'static, ()>> {
    SERVER.shared()
}

/// The server to this thread alone, until dropped: no other test uses it meanwhile.
pub fn exclusive() -> Exclusive {
    SERVER.exclusive()
}

/// Restart the server (fast shutdown: sessions are ended, open transactions roll back,
/// prepared ones stay), and wait until it answers again. Needs [`exclusive`].
pub fn restart_server(_exclusive: &Exclusive) {
    let version = psql("postgres", "SHOW server_version_num").unwrap();
    let major = version.trim().get(..2).unwrap_or_default().to_string();
    let out = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &major, "main", "restart"])
        .output()
        .unwrap_or_else(|e| panic!("pg_ctlcluster does not run ({e}); it restarts the server"));
    assert!(
        out.status.success(),
        "pg_ctlcluster {major} main restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    while psql("postgres", "SELECT 1").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "PostgreSQL does not answer 30 s after a restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A database of its own for one test; dropped (with whatever it holds) when dropped.
pub struct TestDb {
    pub name: String,
    /// Keeps the server from being restarted under the test (released after the drop).
    _server: Option<RwLockReadGuard<'static, ()>>,
}

fn psql(database: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-h",
            HOST,
            "-p",
            &PORT.to_string(),
            "-U",
            "postgres",
            "-d",
            database,
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-tA", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .map_err(|e| format!("psql does not run ({e}); install PostgreSQL's client"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl TestDb {
    /// A fresh database named after `tag`.
    pub fn new(tag: &str) -> TestDb {
        let server = shared();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ingest_{tag}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(e) = psql("postgres", "SELECT 1") {
            panic!(
                "PostgreSQL does not answer on {HOST}:{PORT} as role postgres: {e}\n\
                 run scripts/postgres-setup, or start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
            );
        }
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .unwrap();
        psql("postgres", &format!("CREATE DATABASE {name}")).unwrap();
        TestDb {
            name,
            _server: server,
        }
    }

    /// Run `sql`; panics with the server's message on an error. Returns psql's unaligned
    /// output (`|` between columns, a line per row).
    pub fn sql(&self, sql: &str) -> String {
        psql(&self.name, sql).unwrap_or_else(|e| panic!("{sql}\nfailed: {e}"))
    }

    /// The single value `sql` returns.
    pub fn value(&self, sql: &str) -> String {
        self.sql(sql).trim().to_string()
    }

    /// The rows `sql` returns, one string per row.
    pub fn lines(&self, sql: &str) -> Vec<String> {
        self.sql(sql).lines().map(str::to_string).collect()
    }

    /// The `[source.config]`/`[sink.config]` connection keys for this database.
    pub fn connection(&self) -> String {
        format!(
            "host = \"{HOST}\"\nport = {PORT}\nuser = \"postgres\"\ndatabase = \"{}\"\n",
            self.name
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// The grant that lets a plugin reach the server.
pub fn net_grant() -> String {
    format!("net = [\"{HOST}:{PORT}\"]")
}
