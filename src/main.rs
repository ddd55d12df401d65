//! `ocpp-css serve [--config FILE]`: runs the central system. `ocpp-css check-config [--config FILE]`:
//! checks the settings (unknown keys are errors) and prints the effective ones, secrets redacted.

use clap::{Parser, Subcommand};
use ocpp_css::config::Settings;
use ocpp_css::startup::Application;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "ocpp-css", version, about = "An OCPP Central System offered as a service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTP API, OCPP WebSocket endpoint, metrics).
    Serve {
        /// A TOML file layered over the built-in defaults (see config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check the settings (defaults, --config file, OCPP_CSS__ variables) and print the effective
    /// ones as TOML, a password in cluster.redis_url redacted; exits non-zero on an unknown key or
    /// a bad value.
    CheckConfig {
        /// A TOML file layered over the built-in defaults (see config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// glibc raises its mmap threshold each time a large block is freed, after which blocks of several
/// MiB (each argon2 password check allocates its memory cost) come from the heap and stay there:
/// provisioning 5,000 stations left 600 MiB resident. A fixed 1 MiB threshold makes every large
/// block an mmap that is returned on free (measured: 30 MiB after the same 5,000).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets an allocator parameter; it has no memory-safety preconditions.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    if ok != 1 {
        tracing::warn!("could not fix the allocator's mmap threshold");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            ocpp_css::telemetry::init(&settings.log);
            // Every station holds a socket: take all the file descriptors the hard limit allows.
            match rlimit::increase_nofile_limit(u64::MAX) {
                Ok(limit) => tracing::info!(limit, "open files limit"),
                Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
            }
            let app = Application::build(settings).await?;
            app.run_until_stopped().await?;
        }
        Command::CheckConfig { config } => {
            use std::io::Write as _;
            let shown = Settings::load(config.as_deref())?.to_redacted_toml()?;
            std::io::stdout().write_all(shown.as_bytes())?;
        }
    }
    Ok(())
}
