//! Progress for long work: an indicatif bar when stderr is a terminal,
//! nothing otherwise (callers log a structured summary with `tracing`).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar, or nothing when not on a terminal.
#[derive(Debug)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A byte-count bar of `total` bytes, shown only if `enabled` and stderr
    /// is a terminal.
    pub fn bytes(total: u64, enabled: bool, what: &str) -> Progress {
        Self::new(
            total,
            enabled,
            what,
            "{bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
    }

    /// A count bar of `total` items.
    pub fn items(total: u64, enabled: bool, what: &str) -> Progress {
        Self::new(total, enabled, what, "{pos}/{len} ({per_sec}, eta {eta})")
    }

    fn new(total: u64, enabled: bool, what: &str, counts: &str) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new(total);
        let template = format!("{what} [{{bar:40}}] {counts}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress(Some(bar))
    }

    /// Sets the position.
    pub fn set(&self, pos: u64) {
        if let Some(b) = &self.0 {
            b.set_position(pos);
        }
    }

    /// Advances by `n`.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
