//! The bytes of request bodies the server holds at once, over every request
//! and protocol. `--max-body-bytes` bounds one body; without a bound on all
//! of them, a few hundred clients each sending a large body together would
//! take the node's memory, and the kernel would end the server for everyone.
//! A body counts from its first byte until its request is answered; one that
//! would take the total past the limit is refused (503 with Retry-After on
//! REST, RESOURCE_EXHAUSTED on gRPC) and the others go on.

use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

/// The limit on request body bytes held at once, and what is held.
#[derive(Clone)]
pub struct BodyMemory {
    limit: usize,
    /// Bytes held now; the metric is the count itself.
    held: Gauge,
}

/// A body that would take the bytes held past [`BodyMemory`]'s limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server is holding as many bytes of request bodies as it may ({limit}, \
     --max-body-memory-bytes); try again shortly"
)]
pub struct OverBudget {
    /// The limit, in bytes.
    pub limit: usize,
}

impl BodyMemory {
    /// At most `limit` bytes of bodies held at once, shown in `metrics`.
    pub fn new(limit: usize, metrics: &Metrics) -> Self {
        // The gauges count in i64.
        let limit = limit.min(i64::MAX as usize);
        metrics.body_memory_limit_bytes.set(limit as i64);
        BodyMemory {
            limit,
            held: metrics.body_memory_bytes.clone(),
        }
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A count of one request body's bytes, given back when it is dropped.
    pub fn tally(&self) -> Tally {
        Tally {
            memory: self.clone(),
            counted: AtomicUsize::new(0),
        }
    }
}

/// One request body's bytes, counted against its [`BodyMemory`] until
/// dropped.
pub struct Tally {
    memory: BodyMemory,
    counted: AtomicUsize,
}

impl Tally {
    /// Counts `bytes` more of this body, unless that takes the total past
    /// the limit.
    pub fn take(&self, bytes: usize) -> Result<(), OverBudget> {
        let limit = self.memory.limit;
        let before = self.memory.held.inc_by(bytes as i64) as usize;
        if before.saturating_add(bytes) > limit {
            self.memory.held.dec_by(bytes as i64);
            return Err(OverBudget { limit });
        }
        self.counted.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.memory.held.dec_by(*self.counted.get_mut() as i64);
    }
}

/// The default `--max-body-memory-bytes`: a quarter of the memory the
/// process may use, and at least one body of `max_body` bytes.
pub fn default_limit(max_body: usize) -> usize {
    let quarter = available_memory().map_or(usize::MAX, |bytes| (bytes / 4) as usize);
    quarter.max(max_body)
}

/// The memory the process may use: its cgroup's limit where one is set
/// (a container's), else the machine's.
fn available_memory() -> Option<u64> {
    let read = |path| std::fs::read_to_string(path).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|limit| limit.trim().parse::<u64>().ok());
    let machine = read("/proc/meminfo").and_then(|text| mem_total(&text));
    match (cgroup, machine) {
        (Some(cgroup), Some(machine)) => Some(cgroup.min(machine)),
        (cgroup, machine) => cgroup.or(machine),
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib = line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_count_until_dropped_and_one_past_the_limit_is_refused() {
        let metrics = Metrics::new();
        let memory = BodyMemory::new(100, &metrics);
        let first = memory.tally();
        first.take(60).unwrap();
        let second = memory.tally();
        second.take(30).unwrap();
        let refused = second.take(20).unwrap_err();
        assert_eq!(refused.limit, 100);
        assert!(refused.to_string().contains("--max-body-memory-bytes"));
        // The refused bytes were not kept.
        assert_eq!(metrics.body_memory_bytes.get(), 90);
        second.take(10).unwrap();
        drop(first);
        assert_eq!(metrics.body_memory_bytes.get(), 40);
        drop(second);
        assert_eq!(metrics.body_memory_bytes.get(), 0);
        assert_eq!(metrics.body_memory_limit_bytes.get(), 100);
    }

    #[test]
    fn the_default_is_a_quarter_of_memory_and_at_least_one_body() {
        let meminfo = "MemTotal:        8026088 kB\nMemFree:         1 kB\n";
        assert_eq!(mem_total(meminfo), Some(8_026_088 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        let quarter = (available_memory().unwrap() / 4) as usize;
        assert_eq!(default_limit(1), quarter);
        assert_eq!(default_limit(usize::MAX), usize::MAX);
    }
}
