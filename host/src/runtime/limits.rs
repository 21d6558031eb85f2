//! Caps on an instance's linear memory and tables.

use wasmtime::{ResourceLimiter, StoreLimits};

/// Linear-memory and table caps that remember when they were hit, so a trap
/// can be reported as "memory limit" rather than a bare trap.
pub struct Limiter {
    limits: StoreLimits,
    memory_limit: usize,
    /// Set when a memory growth was refused.
    pub memory_exceeded: bool,
}

impl Limiter {
    /// Caps linear memory at `memory_limit` bytes.
    pub fn new(memory_limit: usize) -> Limiter {
        Limiter {
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .table_elements(1 << 20)
                .instances(64)
                .tables(64)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            memory_limit,
            memory_exceeded: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
        }
        self.limits.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}
