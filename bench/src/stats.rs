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
}
