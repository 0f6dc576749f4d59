//! `ecamp`: pre-train ECAMP medical vision-language models from datasets on object storage.

#![warn(missing_docs)]

mod cmd;

use std::process::ExitCode;

use clap::Parser;

/// Keeps freed large buffers (row groups, batches) from lingering in glibc's heaps: glibc raises
/// its mmap threshold after the first large free, after which multi-MB buffers are carved from
/// arenas and RSS drifts well above the loader's byte budget. A fixed threshold returns them.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = cmd::Cli::parse();
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
