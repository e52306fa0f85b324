//! The tracing subscriber of every binary: human-readable events on stderr, filtered by
//! `RUST_LOG` (default: warnings and errors only, so command output stays clean), coloured
//! only when stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset or unparsable.
const DEFAULT_FILTER: &str = "warn";

/// Whether log lines on stderr may carry colour codes: only on a terminal, never into a file
/// or a pipe.
pub fn stderr_colours() -> bool {
    std::io::stderr().is_terminal()
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // A second installation (tests calling init twice) is harmless: keep the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(stderr_colours())
        .with_writer(std::io::stderr)
        .try_init();
}
