//! `ocpp-css serve [--config FILE]`: runs the central system.

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
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
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
    }
    Ok(())
}
