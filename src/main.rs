//! `ecamp`: pre-train ECAMP medical vision-language models from datasets on object storage.

#![warn(missing_docs)]

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
