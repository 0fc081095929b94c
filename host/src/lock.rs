//! One writer per pipeline state. `host run`, `host dlq replay` and `host state reset` hold
//! an exclusive OS file lock on `<state dir>/<pipeline>/lock` while they work, so two of them
//! never share the staging area, the dead-letter staging or the checkpoint. The operating
//! system releases the lock when its process ends, however it ends (`kill -9` included), so a
//! lock is never left behind. The file also holds who took it (pid, host, start time and
//! command), for the error a second writer sees; those lines are only information, the OS
//! lock alone decides.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock's file name inside a pipeline's state directory.
pub const FILE_NAME: &str = "lock";

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "pipeline `{pipeline}` is in use: {holder} holds its state lock ({path}); wait for it \
         to end or stop it, then try again"
    )]
    Held {
        pipeline: String,
        path: PathBuf,
        holder: Box<Holder>,
    },
    /// The lock file could not be created, opened, locked or written.
    #[error("cannot lock the state of pipeline `{pipeline}` at {path}: {source}")]
    Io {
        pipeline: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Who holds a lock, as its holder wrote it down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub host: Option<String>,
    pub started: Option<String>,
    pub command: Option<String>,
}

impl Holder {
    /// This process, running `command`.
    fn this_process(command: &str) -> Self {
        Holder {
            pid: Some(std::process::id()),
            host: Some(host_name()),
            started: Some(crate::dlq::now_rfc3339()),
            command: Some(command.to_string()),
        }
    }

    fn to_text(&self) -> String {
        let mut text = String::new();
        let lines = [
            ("pid", self.pid.map(|p| p.to_string())),
            ("host", self.host.clone()),
            ("started", self.started.clone()),
            ("command", self.command.clone()),
        ];
        for (key, value) in lines {
            if let Some(value) = value {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        text
    }

    /// Reads what `to_text` wrote; unknown or malformed lines are skipped, since a holder
    /// may have been stopped half-way through writing them.
    fn parse(text: &str) -> Self {
        let mut holder = Holder::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(" = ") else {
                continue;
            };
            let value = value.trim().to_string();
            match key.trim() {
                "pid" => holder.pid = value.parse().ok(),
                "host" => holder.host = Some(value),
                "started" => holder.started = Some(value),
                "command" => holder.command = Some(value),
                _ => {}
            }
        }
        holder
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Some(command) => write!(f, "`host {command}`")?,
            None => write!(f, "another process")?,
        }
        match self.pid {
            Some(pid) => write!(f, " (pid {pid}")?,
            None => write!(f, " (pid not yet written")?,
        }
        if let Some(host) = &self.host {
            write!(f, " on {host}")?;
        }
        if let Some(started) = &self.started {
            write!(f, ", started {started}")?;
        }
        write!(f, ")")
    }
}

/// A held lock; dropping it (or ending the process) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock of `pipeline`'s state under `state_dir` for `command` (as the user typed
/// it, e.g. `run pipeline.toml`), without waiting.
pub fn acquire(state_dir: &Path, pipeline: &str, command: &str) -> Result<StateLock, LockError> {
    let dir = state_dir.join(pipeline);
    let path = dir.join(FILE_NAME);
    let io = |source| LockError::Io {
        pipeline: pipeline.to_string(),
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    // Never truncated on open: the holder's lines must survive a second writer's attempt.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            // What the holder wrote; a read error leaves the holder unnamed, not the lock free.
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                pipeline: pipeline.to_string(),
                path,
                holder: Box::new(Holder::parse(&text)),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let text = Holder::this_process(command).to_text();
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(StateLock { _file: file, path })
}

/// Who holds the lock of `pipeline`'s state under `state_dir` now, if anyone: the lock is
/// tried shared for an instant (never taken for writing), and the holder's lines read when
/// it is held.
pub fn holder(state_dir: &Path, pipeline: &str) -> std::io::Result<Option<Holder>> {
    let path = state_dir.join(pipeline).join(FILE_NAME);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Ok(Some(Holder::parse(&text)))
        }
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// This machine's name, for the holder's description.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "an unknown host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_seen_without_taking_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            holder(dir.path(), "orders").unwrap(),
            None,
            "no lock file yet"
        );
        let held = acquire(dir.path(), "orders", "run pipeline.toml").unwrap();
        let seen = holder(dir.path(), "orders").unwrap().expect("held");
        assert_eq!(seen.command.as_deref(), Some("run pipeline.toml"));
        drop(held);
        assert_eq!(holder(dir.path(), "orders").unwrap(), None, "released");
        // Looking did not take it.
        acquire(dir.path(), "orders", "run pipeline.toml").unwrap();
    }

    #[test]
    fn a_second_writer_is_refused_and_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), "orders", "run pipeline.toml").unwrap();
        assert_eq!(held.path(), dir.path().join("orders").join("lock"));

        let err = acquire(dir.path(), "orders", "dlq replay pipeline.toml").unwrap_err();
        let LockError::Held { holder, .. } = &err else {
            panic!("expected Held, got {err:?}");
        };
        assert_eq!(holder.pid, Some(std::process::id()));
        assert_eq!(holder.command.as_deref(), Some("run pipeline.toml"));
        assert!(holder.started.as_deref().is_some_and(|s| s.contains('T')));
        let message = err.to_string();
        assert!(
            message.contains("`host run pipeline.toml`")
                && message.contains(&format!("pid {}", std::process::id()))
                && message.contains("started"),
            "{message}"
        );
    }

    #[test]
    fn the_lock_is_free_again_once_its_holder_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        drop(acquire(dir.path(), "orders", "run a.toml").unwrap());
        let again = acquire(dir.path(), "orders", "state reset a.toml").unwrap();
        let text = std::fs::read_to_string(again.path()).unwrap();
        assert!(text.contains("command = state reset a.toml"), "{text}");
        assert!(!text.contains("run a.toml"), "{text}");
    }

    #[test]
    fn pipelines_sharing_a_state_directory_lock_separately() {
        let dir = tempfile::tempdir().unwrap();
        let _a = acquire(dir.path(), "orders", "run a.toml").unwrap();
        let _b = acquire(dir.path(), "customers", "run b.toml").unwrap();
    }

    #[test]
    fn a_holder_stopped_while_writing_its_lines_is_still_a_holder() {
        let holder = Holder::parse("pid = 12\nhost = box\nstar");
        assert_eq!(holder.pid, Some(12));
        assert_eq!(holder.host.as_deref(), Some("box"));
        assert_eq!(holder.started, None);
        assert_eq!(
            holder.to_string(),
            "another process (pid 12 on box)",
            "a partial description still names what it knows"
        );
        assert_eq!(
            Holder::parse("").to_string(),
            "another process (pid not yet written)"
        );
    }
}
