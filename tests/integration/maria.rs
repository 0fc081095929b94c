//! The MariaDB on this machine (127.0.0.1:3306, root without a password, its binary log in
//! row format by scripts/mariadb-setup): a database per test, created on demand and
//! dropped after, reached with the `mariadb` client so that what the tests check is read
//! by an independent client.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::RwLockReadGuard;
use std::time::{Duration, Instant};

use crate::support::{Exclusive, ServerLock};

pub const HOST: &str = "127.0.0.1";
pub const PORT: u16 = 3306;

/// Tests share the server; one that restarts it or purges its log has it to itself.
static SERVER: ServerLock = ServerLock::new();

/// The server to this thread alone, until dropped.
pub fn exclusive() -> Exclusive {
    SERVER.exclusive()
}

fn shared() -> Option<RwLockReadGuard<'static, ()>> {
    SERVER.shared()
}

/// The `mariadb` client with `args`, as root.
fn client() -> Command {
    let mut c = Command::new("mariadb");
    c.args(["-h", HOST, "-P", &PORT.to_string(), "-u", "root"]);
    c
}

fn run(database: Option<&str>, sql: &str) -> Result<String, String> {
    let mut c = client();
    c.args(["-N", "-B", "--connect-timeout=5", "-e", sql]);
    if let Some(db) = database {
        c.arg(db);
    }
    let out = c
        .output()
        .map_err(|e| format!("mariadb does not run ({e}); install MariaDB's client"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Restart the server and wait until it answers again. Needs [`exclusive`].
pub fn restart_server(_exclusive: &Exclusive) {
    let out = Command::new("mariadb-admin")
        .args([
            "-h",
            HOST,
            "-P",
            &PORT.to_string(),
            "-u",
            "root",
            "shutdown",
        ])
        .output()
        .expect("mariadb-admin runs");
    assert!(
        out.status.success(),
        "shutdown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    while Command::new("pgrep")
        .args(["-x", "mariadbd"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "mariadbd does not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/mariadbd",
        ])
        .status()
        .expect("start-stop-daemon runs");
    assert!(status.success());
    while run(None, "SELECT 1").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "MariaDB does not answer 60 s after a restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A database of its own for one test; dropped when dropped.
pub struct MyDb {
    pub name: String,
    _server: Option<RwLockReadGuard<'static, ()>>,
}

impl MyDb {
    /// A fresh database named after `tag`.
    pub fn new(tag: &str) -> MyDb {
        let server = shared();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ingest_{tag}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(e) = run(None, "SELECT 1") {
            panic!(
                "MariaDB does not answer on {HOST}:{PORT} as root: {e}\nrun scripts/mariadb-setup"
            );
        }
        run(
            None,
            &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"),
        )
        .unwrap();
        MyDb {
            name,
            _server: server,
        }
    }

    /// Run `sql` (several statements may be given); panics with the server's message on an
    /// error. Returns the rows, tab-separated, a line each.
    pub fn sql(&self, sql: &str) -> String {
        run(Some(&self.name), sql).unwrap_or_else(|e| panic!("{sql}\nfailed: {e}"))
    }

    /// The single value `sql` returns.
    pub fn value(&self, sql: &str) -> String {
        self.sql(sql).trim().to_string()
    }

    /// The rows `sql` returns, one string per row.
    pub fn lines(&self, sql: &str) -> Vec<String> {
        self.sql(sql).lines().map(str::to_string).collect()
    }

    /// Run `sql` in the background, in this database.
    pub fn spawn(&self, sql: &str) -> Child {
        client()
            .args(["-N", "-B", "-e", sql, &self.name])
            .stdout(Stdio::null())
            .spawn()
            .expect("mariadb runs")
    }

    /// The `[source.config]` connection keys for this database.
    pub fn connection(&self) -> String {
        format!(
            "host = \"{HOST}\"\nport = {PORT}\nuser = \"root\"\ndatabase = \"{}\"\n",
            self.name
        )
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = run(None, &format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

/// The grant that lets a plugin reach the server.
pub fn net_grant() -> String {
    format!("net = [\"{HOST}:{PORT}\"]")
}

/// Where the server writes its binary log now (file, offset).
pub fn log_position() -> (String, u64) {
    let out = run(None, "SHOW MASTER STATUS").unwrap();
    let mut parts = out.split('\t');
    let file = parts.next().unwrap_or_default().to_string();
    let offset = parts
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    (file, offset)
}

/// A replica id no other test uses at the same time.
pub fn server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    1_000_000 + (std::process::id() % 10_000) * 100 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Set a global variable of the server (for tests that hold it [`exclusive`]ly).
pub fn set_global(name: &str, value: &str) {
    run(None, &format!("SET GLOBAL {name} = '{value}'")).unwrap();
}

/// Start a new binary log file and purge every older one. The server keeps a file while
/// crash recovery may need it, for a moment after the switch: the purge is repeated until
/// the older files are gone. Needs [`exclusive`].
pub fn purge_logs(_exclusive: &Exclusive) {
    run(None, "FLUSH BINARY LOGS").unwrap();
    let (current, _) = log_position();
    let started = Instant::now();
    loop {
        run(None, &format!("PURGE BINARY LOGS TO '{current}'")).unwrap();
        let files = run(None, "SHOW BINARY LOGS").unwrap();
        if files.lines().count() == 1 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server keeps older binary logs: {files}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
