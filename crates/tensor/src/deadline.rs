//! Request deadlines that bind host work.
//!
//! wasmtime's epoch interruption stops guest code at a request's deadline,
//! but not a host kernel the guest called: one huge matmul would run on
//! long past it. So the runtime states the deadline around each call into
//! a guest ([`within`]), and the tensor operations it makes honour it:
//! [`Ops`](crate::Ops) refuses to start an operation once it has passed,
//! CPU kernels check it between blocks of work, and a GPU backend waits
//! for its results no longer than it ([`current`]). An operation stopped
//! this way fails with [`TensorError::DeadlineExceeded`], which the runtime
//! turns into a trap, as it does an epoch interrupt.
//!
//! Work the server does once, on whichever request first needs it (a GPU
//! backend building a kernel's pipeline the first time it runs, which takes
//! a software Vulkan driver up to a second), is not the request's: the
//! backend [`postpone`]s the deadline by what it took. Such work is
//! bounded (each pipeline is built once per device), so a handler cannot
//! buy itself unbounded time this way.
//!
//! A CPU kernel stops by unwinding from the block that found the deadline
//! passed back to `run`, which [`Ops`](crate::Ops) wraps around every
//! kernel: the kernel's partly written output is dropped unread, so no
//! kernel needs an error path of its own for it, and none can hand out a
//! half-initialised buffer. Builds with `panic = "abort"` cannot unwind;
//! there the deadline is checked only between operations.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

use crate::{Result, TensorError};

thread_local! {
    /// The deadline of the request this thread is serving.
    static REQUEST: Cell<Option<Instant>> = const { Cell::new(None) };
    /// The deadline the kernel running on this thread stops at: set only
    /// inside [`run`], which catches the unwind that stops it.
    static KERNEL: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Puts a thread-local back as it was when dropped, unwinding included.
struct Restore {
    cell: &'static std::thread::LocalKey<Cell<Option<Instant>>>,
    previous: Option<Instant>,
}

impl Restore {
    fn set(
        cell: &'static std::thread::LocalKey<Cell<Option<Instant>>>,
        value: Option<Instant>,
    ) -> Restore {
        Restore {
            cell,
            previous: cell.replace(value),
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        self.cell.set(self.previous);
    }
}

/// The unwind payload of a kernel stopped at its deadline.
struct Expired;

/// Runs `f` with `deadline` bounding every tensor operation it makes on
/// this thread, kernels included.
pub fn within<R>(deadline: Instant, f: impl FnOnce() -> R) -> R {
    let _restore = Restore::set(&REQUEST, Some(deadline));
    f()
}

/// [`within`] for a future: `deadline` bounds the tensor operations it makes
/// in each poll, on whichever thread polls it (an async call into a guest
/// may resume on another thread after a yield, and must not leave its
/// deadline behind on the one it left). What a poll [`postpone`]d it by
/// carries into the next poll and back to the caller's `deadline`.
pub async fn within_polls<F: Future>(deadline: &mut Instant, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let _restore = Restore::set(&REQUEST, Some(*deadline));
        let poll = future.as_mut().poll(cx);
        *deadline = REQUEST.get().unwrap_or(*deadline);
        poll
    })
    .await
}

/// Moves the deadline of the request this thread is serving (and of the
/// kernel running on it) `by` later: for one-time work of the server's that
/// this request happened to be the first to need (see the module docs).
pub fn postpone(by: Duration) {
    for cell in [&REQUEST, &KERNEL] {
        cell.set(cell.get().map(|d| d + by));
    }
}

/// The deadline of the request this thread is serving, if any: what a
/// device backend waits for results no longer than.
pub fn current() -> Option<Instant> {
    REQUEST.get()
}

/// The error of `op` stopped at, or refused after, the request's deadline.
pub fn exceeded(op: &str) -> TensorError {
    TensorError::DeadlineExceeded(format!("{op} stopped at the request's deadline"))
}

/// Refuses to start `op` once the request's deadline has passed.
pub(crate) fn check(op: &str) -> Result<()> {
    match REQUEST.get() {
        Some(deadline) if Instant::now() >= deadline => Err(exceeded(op)),
        _ => Ok(()),
    }
}

/// Runs the kernel of `op` under the request's deadline: a kernel block
/// that finds it passed ([`stop_if_passed`]) unwinds back here, and the
/// operation fails with [`TensorError::DeadlineExceeded`].
pub(crate) fn run<R>(op: &str, kernel: impl FnOnce() -> Result<R>) -> Result<R> {
    let deadline = REQUEST.get();
    if deadline.is_none() || cfg!(not(panic = "unwind")) {
        return kernel();
    }
    let outcome = {
        let _armed = Restore::set(&KERNEL, deadline);
        // The kernel's state is its own output and scratch, all dropped on
        // the way out: nothing half-updated outlives the unwind.
        catch_unwind(AssertUnwindSafe(kernel))
    };
    match outcome {
        Ok(result) => result,
        Err(payload) if payload.is::<Expired>() => Err(exceeded(op)),
        Err(payload) => resume_unwind(payload),
    }
}

/// The deadline the kernel on this thread stops at, to hand to the threads
/// it fans out to; `None` outside [`run`] and on rayon's workers, whose
/// thread-locals belong to no request.
pub(crate) fn kernel() -> Option<Instant> {
    match rayon::current_thread_index() {
        None => KERNEL.get(),
        Some(_) => None,
    }
}

/// Unwinds out of the running kernel, back to [`run`], once `deadline` (from
/// [`kernel`]) has passed.
pub(crate) fn stop_if_passed(deadline: Option<Instant>) {
    if deadline.is_some_and(|d| Instant::now() >= d) {
        // `resume_unwind`, not `panic!`: no panic hook, no log line.
        resume_unwind(Box::new(Expired));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_deadline_is_scoped_to_its_call() {
        assert_eq!(current(), None);
        let deadline = Instant::now() + Duration::from_secs(60);
        within(deadline, || {
            assert_eq!(current(), Some(deadline));
            assert!(check("matmul").is_ok());
        });
        assert_eq!(current(), None);
        assert!(check("matmul").is_ok(), "no deadline outside a request");
    }

    #[test]
    fn a_kernel_that_finds_its_deadline_passed_fails_its_op() {
        let past = Instant::now();
        let result = within(past, || {
            run("matmul", || {
                stop_if_passed(kernel());
                Ok(1)
            })
        });
        assert!(
            matches!(&result, Err(TensorError::DeadlineExceeded(m)) if m.starts_with("matmul")),
            "{result:?}"
        );
        assert_eq!(KERNEL.get(), None, "the kernel deadline is disarmed");
    }

    #[test]
    fn a_postponed_deadline_carries_across_polls_and_back() {
        let start = Instant::now() + Duration::from_secs(60);
        let mut deadline = start;
        let seen = pollster::block_on(within_polls(&mut deadline, async {
            postpone(Duration::from_secs(5));
            let first = current();
            // A yield: the next poll starts from the postponed deadline.
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if yielded {
                    std::task::Poll::Ready(())
                } else {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            })
            .await;
            postpone(Duration::from_secs(1));
            (first, current())
        }));
        assert_eq!(seen.0, Some(start + Duration::from_secs(5)));
        assert_eq!(seen.1, Some(start + Duration::from_secs(6)));
        assert_eq!(deadline, start + Duration::from_secs(6));
        assert_eq!(current(), None, "restored outside the call");
    }

    #[test]
    fn other_panics_pass_through() {
        let caught = catch_unwind(|| {
            within(Instant::now(), || {
                run("add", || -> Result<()> { panic!("a bug") })
            })
        });
        assert!(caught.is_err());
    }
}
