//! Logs: one JSON object per line, warnings and errors on stderr, everything else on stdout; level
//! from `RUST_LOG` (default `info`).
//!
//! Why two streams: the Functions host records every stdout line at Information level, and a
//! stderr line as Warning when it contains "warn" and as Error otherwise (so Application
//! Insights sees the app's own severity). A JSON `WARN` line always contains "WARN"; an `ERROR`
//! line is an Error unless its text happens to mention "warn".

use tracing::Level;
use tracing_subscriber::{
    EnvFilter, fmt,
    fmt::writer::{BoxMakeWriter, MakeWriterExt},
};

/// Where each level goes: `WARN` and `ERROR` to stderr, `INFO`, `DEBUG` and `TRACE` to stdout.
fn writer() -> BoxMakeWriter {
    BoxMakeWriter::new(std::io::stderr.with_max_level(Level::WARN).or_else(std::io::stdout))
}

/// Installs the global subscriber once; later calls do nothing.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(writer()).with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    } else {
        builder.compact().try_init()
    };
}
