//! `host tap`: samples of the rows leaving one stage of a running pipeline, as the sink
//! would see them.
//!
//! A run serves taps on a Unix socket in its state directory (`<state>/<pipeline>/tap.sock`,
//! readable by its owner only), for as long as it holds the run lock. A client sends one
//! request line, `{"stage":"NAME","rows":N}`; the run answers `ok` (or `error: WHY`) and then
//! one JSON object per sampled row, and closes the connection after N rows or when the run
//! ends.
//!
//! The stage that a tap names takes up to N rows from the batches it passes on, as JSON,
//! and sends them down the pipeline as a [`Message::Tap`](crate::runtime::Message) in
//! order with the data. Every `builtin:pii-mask` stage after it masks them as it masks the
//! data, other transforms pass them by, and the sink stage hands them to the tap with every
//! secret value redacted: a tap shows no more than the sink receives. While nobody taps, a
//! stage pays one atomic load per batch.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

/// The socket's file name in the pipeline's state directory.
pub const SOCKET: &str = "tap.sock";

/// Rows one tap may ask for at most.
pub const MAX_ROWS: usize = 10_000;

/// The taps of this process.
#[derive(Default)]
pub struct Hub {
    taps: Mutex<Vec<Tap>>,
    /// How many taps are open: while none is, stages skip the lock.
    open: AtomicUsize,
    next_id: AtomicUsize,
}

/// One client's tap.
struct Tap {
    id: usize,
    stage: String,
    /// Rows the tapped stage has yet to sample for it.
    unsampled: usize,
    /// Rows it has yet to receive.
    left: usize,
    rows: mpsc::UnboundedSender<String>,
}

/// The process's taps.
pub fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(Hub::default)
}

impl Hub {
    /// How many rows `stage` should sample from a batch of `available` rows for the taps
    /// on it (none while nobody taps it); the rows are counted as sampled.
    pub fn take(&self, stage: &str, available: usize) -> usize {
        if self.open.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut taps = self.taps.lock().expect("tap lock");
        let mut most = 0;
        for tap in taps.iter_mut().filter(|t| t.stage == stage) {
            let n = tap.unsampled.min(available);
            tap.unsampled -= n;
            most = most.max(n);
        }
        most
    }

    /// Hand `rows` (JSON objects) sampled at `stage` to its taps, each secret value
    /// redacted; a tap that has all it asked for, or whose client left, is closed.
    pub fn deliver(&self, stage: &str, rows: &[String]) {
        let mut taps = self.taps.lock().expect("tap lock");
        taps.retain_mut(|tap| {
            if tap.stage != stage {
                return true;
            }
            for row in rows.iter().take(tap.left) {
                if tap.rows.send(crate::secrets::redact(row)).is_err() {
                    return false;
                }
                tap.left -= 1;
            }
            tap.left > 0
        });
        self.open.store(taps.len(), Ordering::Relaxed);
    }

    fn add(&self, stage: String, rows: usize) -> (usize, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut taps = self.taps.lock().expect("tap lock");
        taps.push(Tap {
            id,
            stage,
            unsampled: rows,
            left: rows,
            rows: tx,
        });
        self.open.store(taps.len(), Ordering::Relaxed);
        (id, rx)
    }

    fn remove(&self, id: usize) {
        let mut taps = self.taps.lock().expect("tap lock");
        taps.retain(|t| t.id != id);
        self.open.store(taps.len(), Ordering::Relaxed);
    }

    /// Close every tap (the run ends).
    fn close_all(&self) {
        let mut taps = self.taps.lock().expect("tap lock");
        taps.clear();
        self.open.store(0, Ordering::Relaxed);
    }
}

/// The socket of `pipeline`'s taps under `state_dir`.
pub fn socket_path(state_dir: &Path, pipeline: &str) -> PathBuf {
    state_dir.join(pipeline).join(SOCKET)
}

/// Serves taps while it lives; dropping it closes every tap and removes the socket.
pub struct Server {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Listen at `path` for taps on any of `stages`. The caller holds the run lock, so a
    /// socket file left there is a dead run's and is replaced.
    pub fn start(path: PathBuf, stages: Vec<String>) -> std::io::Result<Server> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let stages = std::sync::Arc::new(stages);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, stages.clone()));
            }
        });
        Ok(Server { path, task })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        hub().close_all();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a client asks for.
#[derive(serde::Serialize, serde::Deserialize)]
struct Request {
    stage: String,
    rows: usize,
}

/// Serve one client: its request, then its rows as they come.
async fn serve(socket: UnixStream, stages: std::sync::Arc<Vec<String>>) {
    let (read, mut write) = socket.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(4096));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let request = match serde_json::from_str::<Request>(&line) {
        Ok(r) if !stages.contains(&r.stage) => Err(format!(
            "the pipeline has no stage `{}`; its stages are {}",
            r.stage,
            stages.join(", ")
        )),
        Ok(r) if r.rows == 0 || r.rows > MAX_ROWS => {
            Err(format!("ask for 1 to {MAX_ROWS} rows, not {}", r.rows))
        }
        Ok(r) => Ok(r),
        Err(e) => Err(format!("a tap request is one line of JSON: {e}")),
    };
    let request = match request {
        Ok(r) => r,
        Err(why) => {
            let _ = write.write_all(format!("error: {why}\n").as_bytes()).await;
            return;
        }
    };
    if write.write_all(b"ok\n").await.is_err() {
        return;
    }
    let (id, mut rows) = hub().add(request.stage, request.rows);
    let mut gone = [0u8; 1];
    let mut read = reader.into_inner().into_inner();
    loop {
        tokio::select! {
            row = rows.recv() => {
                let Some(row) = row else { break };
                if write.write_all(format!("{row}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
            // The client hung up (or sent more than it should): stop sampling for it.
            _ = read.read(&mut gone) => break,
        }
    }
    hub().remove(id);
    let _ = write.shutdown().await;
}

/// Why a tap could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "pipeline `{pipeline}` has no run in progress to tap (nothing listens at {}); start it with `host run`",
        .path.display()
    )]
    NotRunning { pipeline: String, path: PathBuf },
    #[error("tap of pipeline `{pipeline}`: {message}")]
    Refused { pipeline: String, message: String },
    #[error("tap of pipeline `{pipeline}` at {}: {source}", .path.display())]
    Io {
        pipeline: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Tap `stage` of the run of `pipeline` whose socket is `path`: each sampled row (a JSON
/// object) goes to `row` as it arrives. Returns how many came before the tap closed.
pub async fn tap(
    path: &Path,
    pipeline: &str,
    stage: &str,
    rows: usize,
    mut row: impl FnMut(&str),
) -> Result<usize, TapError> {
    let io = |source| TapError::Io {
        pipeline: pipeline.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let socket = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(TapError::NotRunning {
                pipeline: pipeline.to_string(),
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io(e)),
    };
    let (read, mut write) = socket.into_split();
    let request = serde_json::to_string(&Request {
        stage: stage.to_string(),
        rows,
    })
    .expect("a request serializes");
    write
        .write_all(format!("{request}\n").as_bytes())
        .await
        .map_err(io)?;
    let mut lines = BufReader::new(read).lines();
    match lines.next_line().await.map_err(io)? {
        Some(answer) if answer == "ok" => {}
        Some(answer) => {
            return Err(TapError::Refused {
                pipeline: pipeline.to_string(),
                message: answer
                    .strip_prefix("error: ")
                    .unwrap_or(&answer)
                    .to_string(),
            })
        }
        None => {
            return Err(TapError::NotRunning {
                pipeline: pipeline.to_string(),
                path: path.to_path_buf(),
            })
        }
    }
    let mut got = 0;
    while let Some(line) = lines.next_line().await.map_err(io)? {
        row(&line);
        got += 1;
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_takes_what_it_asked_for_and_no_more() {
        let hub = Hub::default();
        assert_eq!(hub.take("mask", 100), 0, "nobody taps");
        let (_, mut rows) = hub.add("mask".into(), 3);
        assert_eq!(hub.take("orders", 100), 0, "another stage");
        assert_eq!(hub.take("mask", 2), 2);
        assert_eq!(hub.take("mask", 100), 1);
        assert_eq!(hub.take("mask", 100), 0, "all sampled");
        hub.deliver("mask", &["{\"a\":1}".into(), "{\"a\":2}".into()]);
        hub.deliver("mask", &["{\"a\":3}".into(), "{\"a\":4}".into()]);
        let mut got = Vec::new();
        while let Ok(row) = rows.try_recv() {
            got.push(row);
        }
        assert_eq!(got, ["{\"a\":1}", "{\"a\":2}", "{\"a\":3}"]);
        assert_eq!(hub.open.load(Ordering::Relaxed), 0, "closed once served");
    }
}
