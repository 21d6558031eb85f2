//! The allocator the server runs with, and glibc's settings for the C
//! code that still uses glibc's.

/// The global allocator of the `edgeserve` binary and the bench, which
/// declare it with `#[global_allocator]`. mimalloc's thread-local free
/// lists make the many small, short-lived allocations of a request (body,
/// decoded tensors, response) cheaper than glibc's malloc, whose calls were
/// a tenth of the server's CPU time on a small model's requests
/// (bench/RESULTS.md, "HTTP path").
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h` enum; the Rust
/// binding names no constant for it).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The delay [`purge_after`] is given unless the deployer chooses. Freed
/// pages are handed back lazily ([`purge_after`]), so they count in RSS
/// either way until the kernel needs them; the delay decides only how often
/// the server pays for handing them back. At mimalloc's own 10 ms a request
/// that runs longer than that handed back megabytes it was about to reuse,
/// each time interrupting the other cores to flush their TLBs: MobileNetV2
/// at batch 1 took 1.21× the time it takes with this delay, and a Mish CNN
/// at batch 8 1.21× (bench/RESULTS.md, "Session 41"). Returning freed pages
/// at once (0) keeps RSS lowest in soaks (122 against 139 MiB at the end of
/// a 3-minute one), but every large tensor of a batched transformer request
/// is then faulted in afresh: all-MiniLM-L6-v2 at batch 32 took 138–140 ms
/// against 107–116 ms with a delay (bench/RESULTS.md, "Freed memory
/// returned after 10 ms").
pub const DEFAULT_PURGE_MS: u32 = 1000;

/// mimalloc's `mi_option_purge_decommits` (likewise unnamed there).
const PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;

/// Has [`Allocator`] hand freed pages back to the OS `ms` milliseconds
/// after they are freed. Call it first.
///
/// After a delay, pages are handed back lazily (`MADV_FREE`): the kernel
/// takes them when it needs memory (a container's cgroup reclaims them
/// before it would kill), and until then they count in RSS. A large tensor
/// written again before that faults no zero-filled page in: MobileNetV2,
/// whose request frees and allocates megabytes op by op for 30–40 ms, ran
/// 12–20% faster than with mimalloc's default of unmapping them; the mixed
/// soak's RSS then stays at its high-water mark (639 MiB, against 129–282
/// MiB unmapped; bench/RESULTS.md, "Session 34"). With 0 they are unmapped at once,
/// holding the least memory. The deployer's `MIMALLOC_PURGE_DECOMMITS`
/// wins over either choice.
pub fn purge_after(ms: u32) {
    let ours = std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_none();
    // SAFETY: setting an option is a plain store mimalloc reads on its next
    // purge; both are options it defines, and it accepts any delay and a
    // 0/1 flag.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, ms.into());
        if ours {
            libmimalloc_sys::mi_option_set_enabled(PURGE_DECOMMITS, ms == 0);
        }
    }
}

/// Caps glibc at two malloc arenas (`ARENAS`), unless the deployer set
/// `MALLOC_ARENA_MAX`, for the C libraries that still allocate through it
/// (the Vulkan driver). glibc gives each thread that finds an arena locked
/// one of its own (up to 8 per core) and keeps their freed memory: when
/// all of the server allocated through glibc, its RSS grew under load in
/// steps that never came back (+12% in a 10-minute soak), and with two
/// arenas it stayed flat (bench/RESULTS.md, "Soak and chaos"). Call it
/// before starting threads.
pub fn cap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt sets an allocator parameter under glibc's own
        // lock, and this runs before the threads that allocate much exist.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) } != 1 {
            tracing::warn!("could not cap glibc's malloc arenas");
        }
    }
}

/// See [`cap_arenas`].
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

#[cfg(test)]
mod tests {
    use super::*;

    /// A delay hands pages back lazily; none unmaps them at once.
    #[test]
    fn a_purge_delay_resets_pages_and_none_unmaps_them() {
        if std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_some() {
            return;
        }
        // SAFETY (both): reading an option is a plain load.
        purge_after(DEFAULT_PURGE_MS);
        assert!(!unsafe { libmimalloc_sys::mi_option_is_enabled(PURGE_DECOMMITS) });
        purge_after(0);
        assert!(unsafe { libmimalloc_sys::mi_option_is_enabled(PURGE_DECOMMITS) });
        purge_after(DEFAULT_PURGE_MS);
    }
}
