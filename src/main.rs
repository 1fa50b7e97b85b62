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
    if args.is_bulk_import() {
        return_large_allocations_when_freed();
    }
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

/// For a bulk import: has glibc map every allocation of 1 MiB or more on
/// its own, so that freeing it gives the memory back. Left alone, glibc
/// raises its mmap threshold to the largest block freed so far (up to
/// 32 MiB), and from then on an import's batch buffers and merge runs come
/// from the heap, where freed ones stay: the peak RSS of the same 10M-row
/// NDJSON load varied from 272 to 315 MB (heap peak 194 MB). With the
/// threshold fixed it is 245–248 MB (2-column CSV 233 MB, 5 attributes
/// 229–231 MB), for about 0.5 s more system time faulting in fresh pages.
/// Not for other commands: a full sync's page bodies (about 1 MB each,
/// one per request) then cost 0.3–0.8 s of page faults for no memory
/// saved (220–230 MB either way).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_large_allocations_when_freed() {
    // SAFETY: `mallopt` only sets an allocator tunable, which glibc
    // allows at any time from any thread; a refusal (0) leaves glibc's
    // default, which is only a memory cost.
    let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_allocations_when_freed() {}
