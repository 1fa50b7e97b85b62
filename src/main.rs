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
        return_large_allocations_when_freed(1 << 20, None);
    } else {
        return_large_allocations_when_freed(4 << 20, Some(64 << 20));
    }
    install_release();
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

/// Has glibc map every allocation of `bytes` or more on its own, so that
/// freeing it gives the memory back. Left alone, glibc raises its mmap
/// threshold to the largest block freed so far (up to 32 MiB), and from
/// then on buffers of that size come from the heaps of its per-thread
/// arenas, where freed ones stay.
///
/// A bulk import: 1 MiB. The peak RSS of the same 10M-row NDJSON load
/// varied from 272 to 315 MB (heap peak 194 MB); fixed, it is 245–248 MB
/// (2-column CSV 233 MB, 5 attributes 229–231 MB), for about 0.5 s more
/// system time faulting in fresh pages.
///
/// Everything else (`serve`, `bench`, syncs): 4 MiB, above a full sync's
/// page bodies (about 1 MB each, one per request), below an import's
/// blocks and its fingerprint table; and heaps trimmed only past 64 MiB
/// free at their top (`trim`). A process that runs imports among other
/// work kept what they freed in its arenas: `segsync bench --users
/// 1000000` held 77–92 MB at the start of its full sync, and 121–145 MB
/// once the table loaded on three threads (each new thread that allocates
/// may get an arena of its own); with both set, 96 MB. Fixing the
/// threshold alone leaves glibc's trim threshold at 128 KiB: a 10M-user
/// `sync run` then gave back and faulted in its page buffers again and
/// again, 0.52–0.71 s of system time against 0.23–0.33 s (and at a 1 MiB
/// threshold, its page bodies cost 0.3–0.8 s of faults); with both set,
/// 0.28–0.29 s.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_large_allocations_when_freed(bytes: i32, trim: Option<i32>) {
    // SAFETY: `mallopt` only sets allocator tunables, which glibc allows
    // at any time from any thread; a refusal (0) leaves glibc's default,
    // which is only a memory cost.
    unsafe {
        let _ = libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
        if let Some(trim) = trim {
            let _ = libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_allocations_when_freed(_bytes: i32, _trim: Option<i32>) {}

/// Lets the library give glibc's free memory back once bulk work ends
/// (`segsync::allocator`): what each thread's arena keeps, and free pages
/// inside the heaps, which the trim threshold alone never returns.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn install_release() {
    segsync::allocator::set_release(|| {
        // SAFETY: `malloc_trim` takes each arena's lock while it walks it;
        // it may be called from any thread at any time.
        let _ = unsafe { libc::malloc_trim(0) };
    });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn install_release() {}
