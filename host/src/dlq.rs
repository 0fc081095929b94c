//! The dead-letter queue: records that a plugin rejected, with why and where, written as
//! JSON Lines and published with the epoch they belong to — so the queue is exactly-once
//! like any committing sink. Layout: `<dlq dir>/<stream>/epoch-<E>.jsonl`; records of the
//! open epoch are staged in `<dlq dir>/.staging/`.
//!
//! Records hold the data as it was before the rejecting plugin ran, which may include
//! values a later transform would have masked; keep the queue where the raw input may be.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::sync_dir;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was rejected (RFC 3339, UTC).
    pub time: String,
    pub pipeline: String,
    /// The plugin that rejected it.
    pub plugin: String,
    pub stream: String,
    /// Where the record came from (`file:line`), when known.
    pub location: Option<String>,
    pub reason: String,
    /// The record: the raw text a source could not parse, or the row as a JSON object.
    pub record: String,
}

#[derive(Debug, thiserror::Error)]
#[error("dead-letter queue {}: cannot {action}: {source}", .path.display())]
pub struct DlqError {
    action: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

/// What `commit` needs to publish one epoch's dead letters: the staged file to publish,
/// and (after a replay) the published files the epoch replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    #[serde(default)]
    staged: Option<PathBuf>,
    #[serde(default)]
    published: Option<PathBuf>,
    #[serde(default)]
    remove: Vec<PathBuf>,
}

impl Token {
    /// Also remove `files` when the epoch commits: they were replayed.
    pub fn replacing(mut self, files: Vec<PathBuf>) -> Self {
        self.remove.extend(files);
        self
    }
}

/// The published dead-letter files of `stream`, oldest first.
pub fn published_files(dir: &Path, stream: &str) -> Result<Vec<PathBuf>, DlqError> {
    let dir = dir.join(stream);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err("list", &dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(err("list", &dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("epoch-") && name.ends_with(".jsonl") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The dead letters in one published file.
pub fn read(path: &Path) -> Result<Vec<DeadLetter>, DlqError> {
    let text = std::fs::read_to_string(path).map_err(err("read", path))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| DlqError {
                action: "read",
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("line {} is not a dead letter: {e}", i + 1),
                ),
            })
        })
        .collect()
}

/// Writes dead letters of the open epoch for one stream.
pub struct DeadLetters {
    dir: PathBuf,
    stream: String,
    open: Option<(BufWriter<File>, PathBuf)>,
    pub staged_rows: u64,
}

fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DlqError + 'a {
    move |source| DlqError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl DeadLetters {
    pub fn new(dir: &Path, stream: &str) -> Self {
        DeadLetters {
            dir: dir.to_path_buf(),
            stream: stream.to_string(),
            open: None,
            staged_rows: 0,
        }
    }

    fn current(&self) -> PathBuf {
        self.dir
            .join(".staging")
            .join(format!("{}.current.jsonl", self.stream))
    }

    /// Stage one dead letter in the open epoch.
    pub fn write(&mut self, letter: &DeadLetter) -> Result<(), DlqError> {
        if self.open.is_none() {
            let path = self.current();
            std::fs::create_dir_all(path.parent().unwrap())
                .map_err(err("create a directory for", &path))?;
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .map_err(err("create", &path))?;
            self.open = Some((BufWriter::new(file), path));
        }
        let (writer, path) = self.open.as_mut().unwrap();
        let mut line = serde_json::to_vec(letter).expect("dead letters serialize");
        line.push(b'\n');
        writer.write_all(&line).map_err(err("write", path))?;
        self.staged_rows += 1;
        Ok(())
    }

    /// Make the open epoch's dead letters durable; `None` when there were none.
    pub fn prepare(&mut self, epoch: u64) -> Result<Option<Token>, DlqError> {
        let Some((writer, current)) = self.open.take() else {
            return Ok(None);
        };
        self.staged_rows = 0;
        let file = writer.into_inner().map_err(|e| DlqError {
            action: "flush",
            path: current.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(err("sync", &current))?;
        let staged = self
            .dir
            .join(".staging")
            .join(format!("{}.epoch-{epoch:010}.jsonl", self.stream));
        std::fs::rename(&current, &staged).map_err(err("stage", &staged))?;
        sync_dir(staged.parent().unwrap()).map_err(err("sync", &staged))?;
        Ok(Some(Token {
            staged: Some(staged),
            published: Some(
                self.dir
                    .join(&self.stream)
                    .join(format!("epoch-{epoch:010}.jsonl")),
            ),
            remove: Vec::new(),
        }))
    }

    /// Drop what was staged in the open epoch.
    pub fn abort(&mut self) {
        self.open = None;
        self.staged_rows = 0;
        let _ = std::fs::remove_file(self.current());
    }
}

/// Publish a prepared epoch's dead letters and remove the files it replaces; a repeat is a
/// no-op.
pub fn commit(token: &Token) -> Result<(), DlqError> {
    if let (Some(staged), Some(published)) = (&token.staged, &token.published) {
        if staged.exists() {
            let dir = published.parent().unwrap();
            std::fs::create_dir_all(dir).map_err(err("create", dir))?;
            std::fs::rename(staged, published).map_err(err("publish", published))?;
            sync_dir(dir).map_err(err("sync", dir))?;
        } else if !published.exists() {
            return Err(DlqError {
                action: "publish",
                path: staged.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "staged dead letters are missing",
                ),
            });
        }
    }
    for path in &token.remove {
        match std::fs::remove_file(path) {
            Ok(()) => sync_dir(path.parent().unwrap()).map_err(err("sync", path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("remove the replayed", path)(e)),
        }
    }
    Ok(())
}

/// Now as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(n: u32) -> DeadLetter {
        DeadLetter {
            time: now_rfc3339(),
            pipeline: "p".into(),
            plugin: "source".into(),
            stream: "orders".into(),
            location: Some(format!("orders.csv:{n}")),
            reason: "expected 3 fields, found 4".into(),
            record: "a,b,c,d".into(),
        }
    }

    #[test]
    fn dead_letters_appear_only_when_their_epoch_commits_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut dlq = DeadLetters::new(dir.path(), "orders");
        dlq.write(&letter(1)).unwrap();
        dlq.write(&letter(2)).unwrap();
        let token = dlq.prepare(1).unwrap().unwrap();
        let published = dir.path().join("orders/epoch-0000000001.jsonl");
        assert!(!published.exists());
        commit(&token).unwrap();
        commit(&token).unwrap();
        let text = std::fs::read_to_string(published).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(
            dlq.prepare(2).unwrap().is_none(),
            "an epoch without rejects stages nothing"
        );
    }

    #[test]
    fn aborted_dead_letters_disappear() {
        let dir = tempfile::tempdir().unwrap();
        let mut dlq = DeadLetters::new(dir.path(), "orders");
        dlq.write(&letter(1)).unwrap();
        dlq.abort();
        assert!(dlq.prepare(1).unwrap().is_none());
        assert!(!dir.path().join("orders").exists());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
