//! The progress line of `host run` on a terminal: rows and bytes read, the read rate, rows
//! committed and the last committed epoch, redrawn five times a second from the run's
//! metrics ([`crate::metrics`]). It is drawn only when stderr is a terminal and `--quiet`
//! is not given, and cleared before the summary line.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress line being drawn; [`Progress::finish`] clears it.
pub struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Start drawing, unless `quiet` or stderr is not a terminal.
    pub fn start(quiet: bool) -> Option<Progress> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .expect("a valid template")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
        );
        let drawn = bar.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            loop {
                drawn.set_message(line(started.elapsed()));
                drawn.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Some(Progress { bar, task })
    }

    /// Stop drawing and clear the line.
    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// What the line says after `elapsed`.
fn line(elapsed: Duration) -> String {
    let m = crate::metrics::get();
    let rows = m.totals.rows_read.load(Ordering::Relaxed);
    let bytes = m.totals.bytes_read.load(Ordering::Relaxed);
    let written = m.totals.rows_written.load(Ordering::Relaxed);
    let epoch = m.last_epoch.get();
    let secs = elapsed.as_secs_f64().max(0.001);
    format!(
        "{} rows read ({}/s), {} as Arrow, {} rows committed, epoch {epoch}, {}",
        group(rows),
        group((rows as f64 / secs) as u64),
        crate::sandbox::show_bytes(bytes),
        group(written),
        humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
    )
}

/// `n` with thousands separated by commas.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(5_000_000), "5,000,000");
    }
}
