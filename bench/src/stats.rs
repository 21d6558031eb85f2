//! Timing samples and their summaries.

use std::time::{Duration, Instant};

/// Durations of repeated runs of one operation, sorted ascending.
#[derive(Clone, Debug)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Sorts `durations` into a sample set.
    pub fn new(mut durations: Vec<Duration>) -> Samples {
        assert!(!durations.is_empty(), "a sample set needs samples");
        durations.sort_unstable();
        Samples(durations)
    }

    /// Runs `f` `warmup` times untimed, then `n` times timed one by one.
    pub fn measure<T>(
        warmup: usize,
        n: usize,
        mut f: impl FnMut() -> anyhow::Result<T>,
    ) -> anyhow::Result<Samples> {
        for _ in 0..warmup {
            std::hint::black_box(f()?);
        }
        let mut durations = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let out = f()?;
            durations.push(started.elapsed());
            // Dropping the result is not part of the operation.
            drop(std::hint::black_box(out));
        }
        Ok(Samples::new(durations))
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q`-quantile (0 ≤ q ≤ 1), nearest-rank.
    pub fn quantile(&self, q: f64) -> Duration {
        let rank = (q * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    /// The median.
    pub fn median(&self) -> Duration {
        self.quantile(0.5)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

/// The median of `values` with its 95% confidence interval, distribution-free
/// (from the order statistics): (median, low, high). With 7 values or
/// fewer the interval is their whole range.
pub fn median_with_ci(values: &[f64]) -> (f64, f64, f64) {
    assert!(!values.is_empty(), "a median needs values");
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    // Ranks n/2 ∓ 1.96·√n/2, the normal approximation to the binomial.
    let half = 1.96 * (n as f64).sqrt() / 2.0;
    let low = ((n as f64 / 2.0 - half).floor().max(0.0)) as usize;
    let high = ((n as f64 / 2.0 + half).ceil() as usize).min(n - 1);
    (median, sorted[low], sorted[high])
}

/// A duration with a unit that keeps three significant-ish digits.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// `a / b` as a ratio, e.g. `12.3×`.
pub fn ratio(a: f64, b: f64) -> String {
    let r = a / b;
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// `ratio` of two durations.
pub fn duration_ratio(a: Duration, b: Duration) -> String {
    ratio(a.as_secs_f64(), b.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let s = Samples::new((1..=100).rev().map(Duration::from_micros).collect());
        assert_eq!(s.median(), Duration::from_micros(50));
        assert_eq!(s.p99(), Duration::from_micros(99));
        assert_eq!(s.quantile(0.0), Duration::from_micros(1));
        assert_eq!(s.quantile(1.0), Duration::from_micros(100));
    }

    #[test]
    fn median_interval_brackets_the_median() {
        let values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let (median, low, high) = median_with_ci(&values);
        assert_eq!(median, 50.5);
        // Ranks 40 and 60 (0-based) of 1..=100.
        assert_eq!((low, high), (41.0, 61.0));
        assert_eq!(median_with_ci(&[3.0]), (3.0, 3.0, 3.0));
        assert_eq!(median_with_ci(&[2.0, 1.0, 3.0]), (2.0, 1.0, 3.0));
    }
}
