//! The progress line of `host run` on a terminal: rows and bytes read, the read rate, rows
//! committed and the last committed epoch, and for bounded sources that report their size
//! the share read and an estimate of the time left, redrawn five times a second from the
//! run's metrics ([`crate::metrics`]). It is drawn only when stderr is a terminal and `--quiet`
//! is not given, and cleared before the summary line.

use std::collections::VecDeque;
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
            let mut rate = Rate::default();
            loop {
                drawn.set_message(line(started.elapsed(), &mut rate));
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
fn line(elapsed: Duration, rate: &mut Rate) -> String {
    let m = crate::metrics::get();
    let rows = m.totals.rows_read.load(Ordering::Relaxed);
    let bytes = m.totals.bytes_read.load(Ordering::Relaxed);
    let written = m.totals.rows_written.load(Ordering::Relaxed);
    let epoch = m.last_epoch.get();
    let secs = elapsed.as_secs_f64().max(0.001);
    let size = m.totals.work_bytes.load(Ordering::Relaxed).max(0) as u64;
    let left = m
        .totals
        .work_left
        .load(Ordering::Relaxed)
        .clamp(0, size as i64) as u64;
    let share = if size == 0 {
        String::new()
    } else {
        let eta = match rate.seconds_left(Instant::now(), size - left, left) {
            Some(s) => format!(
                ", ETA {}",
                humantime::format_duration(Duration::from_secs(s))
            ),
            None => String::new(),
        };
        format!(
            ", {}% of {} read{eta}",
            (size - left) * 100 / size,
            crate::sandbox::show_bytes(size)
        )
    };
    format!(
        "{} rows read ({}/s), {} as Arrow, {} rows committed, epoch {epoch}{share}, {}",
        group(rows),
        group((rows as f64 / secs) as u64),
        crate::sandbox::show_bytes(bytes),
        group(written),
        humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
    )
}

/// How fast the sources' bytes are read, over the last [`Rate::WINDOW`]: a resumed run,
/// which skips what it read before, or a slow start weighs only while it is recent.
#[derive(Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    const WINDOW: Duration = Duration::from_secs(10);

    /// Seconds until `left` more bytes are read, with `done` read by `now`; none until
    /// there is a rate to go by.
    fn seconds_left(&mut self, now: Instant, done: u64, left: u64) -> Option<u64> {
        // A split's reader that resumes reports its place at once: a jump back in `done`
        // (a split re-planned) starts the window over.
        if self.samples.back().is_some_and(|&(_, d)| d > done) {
            self.samples.clear();
        }
        self.samples.push_back((now, done));
        while self.samples.len() > 2 && now.duration_since(self.samples[0].0) > Self::WINDOW {
            self.samples.pop_front();
        }
        let &(then, before) = self.samples.front()?;
        let span = now.duration_since(then).as_secs_f64();
        if span < 1.0 || done <= before {
            return None;
        }
        let per_second = (done - before) as f64 / span;
        Some((left as f64 / per_second).ceil() as u64)
    }
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
    fn the_time_left_follows_the_recent_rate() {
        let mut rate = Rate::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        // No estimate before a second of samples.
        assert_eq!(rate.seconds_left(at(0), 0, 1000), None);
        // 100 bytes a second, 800 left: 8 s.
        assert_eq!(rate.seconds_left(at(2), 200, 800), Some(8));
        // Only the last ten seconds count: a stall long ago does not slow the estimate.
        for s in 3..=30 {
            rate.seconds_left(at(s), 200 + (s - 2) * 10, 10_000);
        }
        assert_eq!(rate.seconds_left(at(31), 490, 100), Some(10));
        // Nothing read in the window: no estimate.
        let mut stalled = Rate::default();
        stalled.seconds_left(at(0), 50, 50);
        assert_eq!(stalled.seconds_left(at(5), 50, 50), None);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(5_000_000), "5,000,000");
    }
}
