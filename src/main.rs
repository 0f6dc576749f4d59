//! `ecamp`: pre-train ECAMP medical vision-language models from datasets on object storage.

#![warn(missing_docs)]

mod cmd;

use std::process::ExitCode;

use clap::Parser;

/// Sets glibc's allocator for the command's memory pattern.
///
/// Data commands: keep freed large buffers (row groups, batches) from lingering in glibc's heaps.
/// glibc raises its mmap threshold after the first large free, after which multi-MB buffers are
/// carved from arenas and RSS drifts well above the loader's byte budget; a fixed 128 KiB
/// threshold returns them.
///
/// Training: the opposite. Every step allocates and frees the same tensors; served by mmap each
/// of them costs fresh zeroed pages (a third of a tiny CPU step went to page faults), so large
/// blocks stay in the heap and the heap is not trimmed back.
fn tune_allocator(training: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        if training {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        } else {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
    let _ = training;
}

/// Shows ecamp's own warnings (skipped samples, retried reads, an unusable kernel cache) on
/// stderr; `ECAMP_LOG` (error, warn, info, debug, trace) sets the level, default warn. Other
/// crates' events (delta-rs logs a missing table as an error while one is being created) stay
/// silent: ecamp reports what matters from them as errors with context.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let level = std::env::var("ECAMP_LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(tracing::Level::WARN);
    let ours = tracing_subscriber::filter::Targets::new().with_target("ecamp", level);
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(false);
    let _ = tracing_subscriber::registry().with(format).with(ours).try_init();
}

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    init_logging();
    tune_allocator(cli.is_training());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            // One line: the whole context chain, secrets masked.
            let line = err.chain().map(|e| e.to_string()).collect::<Vec<_>>().join(": ");
            eprintln!("error: {}", ecamp_store::redact::scrub(&line));
            ExitCode::from(2)
        }
    }
}
