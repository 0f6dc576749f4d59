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

/// One line for an error: the whole context chain, where a cause its error already spells
/// out (`"cannot read X: {source}"`) is not repeated.
fn error_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain().map(|e| e.to_string()) {
        if !parts.last().is_some_and(|p| p.ends_with(&cause)) {
            parts.push(cause);
        }
    }
    parts.join(": ")
}

/// A closed stdout (`ecamp snapshot list | head -1`) ends the process quietly, as for other
/// Unix tools, instead of a "failed printing to stdout" panic: Rust ignores SIGPIPE by default.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
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
            eprintln!("error: {}", ecamp_store::redact::scrub(&error_line(&err)));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::error_line;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read labels.csv: {source}")]
    struct Spelled {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_its_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let err = anyhow::Error::new(Spelled { source: io }).context("cannot load the labels");
        assert_eq!(error_line(&err), "cannot load the labels: cannot read labels.csv: No such file or directory");
        let plain = anyhow::anyhow!("disk full").context("cannot write x");
        assert_eq!(error_line(&plain), "cannot write x: disk full");
    }
}
