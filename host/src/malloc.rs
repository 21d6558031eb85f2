//! The allocator settings the server runs with.

/// Caps glibc at [`ARENAS`] malloc arenas, unless the deployer set
/// `MALLOC_ARENA_MAX`. glibc gives each thread that finds an arena locked
/// one of its own (up to 8 per core) and keeps their freed memory, so under
/// load the server's RSS grew in steps that never came back (+12% in a
/// 10-minute soak); with two arenas it stays flat at the same throughput
/// (bench/RESULTS.md, "Soak and chaos"). Call it before starting threads.
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
