//! A request to end training early and cleanly: [`fit`](super::fit) finishes the optimizer step
//! in progress, saves a checkpoint and returns, so that `--resume` continues exactly. The CLI
//! requests it from its SIGINT/SIGTERM handler; the library installs no handler of its own.

use std::sync::atomic::{AtomicI32, Ordering};

/// 0 while training may go on; otherwise the number of the signal that asked it to stop.
static REQUESTED: AtomicI32 = AtomicI32::new(0);

/// Asks running and future `fit` calls of this process to stop at the next optimizer step;
/// `why` is reported back by [`requested`] (a signal number, or any non-zero code).
/// Async-signal-safe: one atomic store.
pub fn request(why: i32) {
    REQUESTED.store(why.max(1), Ordering::SeqCst);
}

/// The reason given to [`request`], if a stop was requested.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        why => Some(why),
    }
}
