//! The log subscriber: `tracing` events (the server's) to stderr, as text or JSON lines,
//! filtered by `RUST_LOG` (default: flowrun's own events from `info`, other crates' from
//! `warn`, so commands that open a database do not chat about its migrations).

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::exit::Exit;

/// The filter without `RUST_LOG`.
const DEFAULT: &str = "warn,flowrun=info,flowrun_server=info";

/// Installs the global subscriber; a malformed `RUST_LOG` is a usage error.
pub fn install(format: LogFormat) -> Result<(), Exit> {
    let given = std::env::var("RUST_LOG").unwrap_or_default();
    let directives = if given.trim().is_empty() {
        DEFAULT
    } else {
        given.as_str()
    };
    let filter = EnvFilter::builder().parse(directives).map_err(|e| {
        crate::commands::error(
            &format!("`RUST_LOG` is not a valid log filter: {e}"),
            Some("give levels like `info` or `warn,flowrun_server=debug`"),
        );
        Exit::Usage
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(crate::style::color_stderr()).try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    // Already installed (cannot happen in the binary): keep the first.
    let _ = installed;
    Ok(())
}
