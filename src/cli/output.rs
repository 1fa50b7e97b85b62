//! Where a command's output goes. Normally stdout and stderr; while `serve`
//! runs a command for a CLI client ([`capture`]), into buffers sent back in
//! the answer, so the client prints exactly what the command would have.
//! The store a command opens can likewise be the one `serve` holds.

use std::cell::RefCell;
use std::sync::Arc;

use crate::store::Store;

thread_local! {
    static CAPTURE: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
    static SHARED_STORE: RefCell<Option<Arc<Store>>> = const { RefCell::new(None) };
}

/// Makes a closed stdout (`segsync sync list --json | head -1`) end the
/// process quietly with status 141, what a C tool killed by SIGPIPE gives
/// (a shell's pipeline ignores it; a supervisor of `serve` still sees a
/// failure), instead of a panic message and 101: Rust ignores SIGPIPE, so
/// `println!` panics on the broken pipe.
pub fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Writes a line of the command's output.
pub(crate) fn out_line(line: std::fmt::Arguments<'_>) {
    let captured = CAPTURE.with(|c| {
        if let Some((out, _)) = c.borrow_mut().as_mut() {
            use std::fmt::Write;
            let _ = writeln!(out, "{line}");
            true
        } else {
            false
        }
    });
    if !captured {
        println!("{line}");
    }
}

/// Writes a line of the command's messages (stderr).
pub(crate) fn err_line(line: std::fmt::Arguments<'_>) {
    let captured = CAPTURE.with(|c| {
        if let Some((_, err)) = c.borrow_mut().as_mut() {
            use std::fmt::Write;
            let _ = writeln!(err, "{line}");
            true
        } else {
            false
        }
    });
    if !captured {
        eprintln!("{line}");
    }
}

/// The store `serve` lent to the command running on this thread, if any.
pub(crate) fn shared_store() -> Option<Arc<Store>> {
    SHARED_STORE.with(|s| s.borrow().clone())
}

/// Runs `f` with its output captured and `store` as the store it opens;
/// returns what it printed on stdout and stderr.
pub(crate) fn capture<T>(store: Arc<Store>, f: impl FnOnce() -> T) -> (T, String, String) {
    CAPTURE.with(|c| *c.borrow_mut() = Some((String::new(), String::new())));
    SHARED_STORE.with(|s| *s.borrow_mut() = Some(store));
    let r = f();
    SHARED_STORE.with(|s| *s.borrow_mut() = None);
    let (out, err) = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, out, err)
}

/// `println!` for command output: captured when `serve` runs the command.
macro_rules! say {
    () => { $crate::cli::output::out_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::output::out_line(format_args!($($arg)*)) };
}

/// `eprintln!` for command messages: captured when `serve` runs the command.
macro_rules! warn_user {
    ($($arg:tt)*) => { $crate::cli::output::err_line(format_args!($($arg)*)) };
}

pub(crate) use say;
pub(crate) use warn_user;
