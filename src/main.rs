//! The `segsync` binary: parse arguments, set up logging, run, map errors to
//! exit codes (0 ok, 1 failure, 2 usage or bad input).

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    segsync::cli::exit_quietly_on_broken_pipe();
    let args = match segsync::cli::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SEGSYNC_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = segsync::cli::run(args) {
        // A command a server ran has printed its own messages.
        if let Some(segsync::cli::Exit(code)) = err.downcast_ref() {
            std::process::exit(*code);
        }
        eprintln!("error: {err:#}");
        std::process::exit(segsync::cli::exit_code(&err));
    }
}
