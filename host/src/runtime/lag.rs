//! End-to-end lag (source commit → sink commit) kept as a histogram of fixed size: a
//! stream that runs for days keeps the same few kilobytes, and the quantiles the summary
//! prints are within 2% of the exact ones (the maximum is exact).

/// Each bucket's upper bound is this factor above the one before.
const GROWTH: f64 = 1.02;

/// Buckets from 1 µs up to about 5.8 hours (`GROWTH`^1200 µs); longer lags share the last.
const BUCKETS: usize = 1200;

/// A histogram of lags, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lags {
    /// Counts per bucket (empty until the first lag).
    counts: Vec<u64>,
    total: u64,
    max_us: i64,
}

impl Lags {
    /// Record one change's lag; a negative one (clocks apart) counts as zero.
    pub fn record(&mut self, lag_us: i64) {
        let lag = lag_us.max(0);
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        self.counts[bucket(lag)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(lag);
    }

    /// Add what `other` recorded.
    pub fn merge(&mut self, other: &Lags) {
        if other.total == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// How many lags were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0 to 1) in seconds: the upper bound of its bucket, never above
    /// the largest lag recorded. Zero when nothing was recorded.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return upper(index).min(self.max_us as f64) / 1e6;
            }
        }
        self.max_seconds()
    }

    /// The largest lag recorded, in seconds.
    pub fn max_seconds(&self) -> f64 {
        self.max_us as f64 / 1e6
    }
}

/// The bucket of a lag of `us` microseconds: bucket 0 holds lags under 1 µs, bucket i
/// those up to `GROWTH`^i µs.
fn bucket(us: i64) -> usize {
    if us < 1 {
        return 0;
    }
    let index = ((us as f64).ln() / GROWTH.ln()).ceil() as usize;
    index.min(BUCKETS - 1)
}

/// The largest lag bucket `index` holds, in microseconds.
fn upper(index: usize) -> f64 {
    GROWTH.powi(index as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_two_percent_and_the_maximum_is_exact() {
        let mut lags = Lags::default();
        // 1 ms to 10 s, evenly.
        let values: Vec<i64> = (1..=10_000).map(|ms| ms * 1000).collect();
        for v in &values {
            lags.record(*v);
        }
        for q in [0.5, 0.9, 0.99] {
            let exact = values[(q * values.len() as f64).ceil() as usize - 1] as f64 / 1e6;
            let got = lags.quantile(q);
            assert!(
                (got - exact).abs() <= exact * 0.02,
                "q {q}: {got} against {exact}"
            );
        }
        assert_eq!(lags.max_seconds(), 10.0);
        assert_eq!(lags.count(), 10_000);
    }

    #[test]
    fn merging_two_histograms_is_recording_into_one() {
        let (mut a, mut b, mut both) = (Lags::default(), Lags::default(), Lags::default());
        for v in [5, 500, 50_000] {
            a.record(v);
            both.record(v);
        }
        for v in [7, 7_000_000, -3] {
            b.record(v);
            both.record(v);
        }
        a.merge(&b);
        assert_eq!(a, both);
        assert_eq!(Lags::default().quantile(0.5), 0.0);
    }
}
