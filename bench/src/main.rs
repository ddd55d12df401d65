//! ocpp-bench: the load harness for OCPP-J 1.6 central systems.
//!
//! `ocpp-bench events` measures durable events per second and their ack latency: N stations each
//! boot, start a transaction and then send MeterValues (or StatusNotification) calls, closed loop
//! or at a fixed total rate (open loop). It speaks plain OCPP-J 1.6, so any central system can be
//! the target; `--provision-api` also creates the account and stations on an ocpp-css server.

mod cli;
mod conn;
mod events;
mod messages;
mod provision;
mod stations;
mod stats;

use clap::Parser;
use cli::{Cli, Command};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Events(args) = cli.command;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ocpp-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json_path = args.json.clone();
    let summary = match rt.block_on(events::run(args)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ocpp-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // A closed stdout (`| head`) must not turn into a panic.
    let _ = std::io::stdout().write_all(stats::render_table(&summary).as_bytes());
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&summary).expect("summary serializes");
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("ocpp-bench: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if summary.stations_ready == 0 {
        eprintln!("ocpp-bench: no station got through setup");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
