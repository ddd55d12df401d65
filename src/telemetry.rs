//! Structured logs through `tracing`: text for people or JSON lines for pipelines.

use crate::config::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG`, when set, takes precedence over the configured level.
/// Text logs are coloured only on a terminal: redirected to a file or a pipe they are plain.
pub fn init(settings: &LogSettings) {
    use std::io::IsTerminal as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(std::io::stdout().is_terminal());
    let result = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        // Tests build several applications in one process; the first subscriber stays.
        tracing::debug!(error = %e, "tracing subscriber already installed");
    }
}
