//! ocpp-bench: the load harness for OCPP-J 1.6 and 2.0.1 central systems.
//!
//! `ocpp-bench events` measures durable events per second and their ack latency: N stations each
//! boot, start a transaction and then send MeterValues (or StatusNotification) calls, closed loop
//! or at a fixed total rate (open loop).
//!
//! `ocpp-bench fleet` holds a fleet of connections (up to 100k from one machine, over several
//! source addresses): a ramp at a set connect rate, a hold with open-loop Heartbeats and
//! transactions, an optional reconnect storm, and the server's RSS and CPU alongside.
//!
//! `ocpp-bench hostile` attacks the central system the way a hostile user would (huge or endless
//! frames, sockets never read, held connections, floods of events, sign-ups and wrong passwords,
//! reconnect loops, unsolicited answers) while a small legitimate fleet beside it measures the
//! latency, and the server's RSS, open files and CPU are sampled.
//!
//! `ocpp-bench listen` is the other end of ocpp-css's event feed: N Server-Sent Events clients and
//! M webhook receivers (registered through the API) count events per second and their lag from the
//! event's time, while a `fleet` makes them.
//!
//! All speak plain OCPP-J 1.6, `fleet` and `events` also OCPP 2.0.1 (`--protocol`, see [`v201`]), so
//! any central system can be the target; `--provision-api` also creates the account and stations on
//! an ocpp-css server.

mod attacks;
mod cli;
mod commands;
mod conn;
mod events;
mod fleet;
mod hostile;
mod hostile_report;
mod listen;
mod merge;
mod messages;
mod outcomes;
mod provision;
mod rawws;
mod report;
mod scenario;
mod scenario_run;
mod schedule;
mod shard;
mod stations;
mod stats;
mod sys;
mod tls;
mod v201;

use clap::Parser;
use cli::{Cli, Command};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

fn runtime(threads: Option<usize>) -> Option<tokio::runtime::Runtime> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        rt.worker_threads(n.max(1));
    }
    match rt.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("ocpp-bench: cannot start the runtime: {e}");
            None
        }
    }
}

/// Prints the table, writes the JSON; false if the JSON could not be written.
fn report<S: Serialize>(table: String, summary: &S, json_path: Option<PathBuf>) -> bool {
    // A closed stdout (`| head`) must not turn into a panic.
    let _ = std::io::stdout().write_all(table.as_bytes());
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(summary).expect("summary serializes");
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("ocpp-bench: writing {}: {e}", path.display());
            return false;
        }
    }
    true
}

/// Runs one scenario on its own runtime, prints its table and writes its JSON: the summary, or None
/// (the reason printed) when the run failed or its JSON could not be written. With `background`,
/// tasks still running at the end (all were joined or aborted) are not waited for.
fn scenario<S: Serialize>(
    threads: Option<usize>,
    json_path: Option<PathBuf>,
    background: bool,
    run: impl std::future::Future<Output = anyhow::Result<S>>,
    render: fn(&S) -> String,
) -> Option<S> {
    let rt = runtime(threads)?;
    let summary = match rt.block_on(run) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ocpp-bench: {e:#}");
            return None;
        }
    };
    if background {
        rt.shutdown_background();
    }
    report(render(&summary), &summary, json_path).then_some(summary)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Events(args) => {
            let (threads, json) = (args.threads, args.json.clone());
            let Some(summary) = scenario(threads, json, false, events::run(args), stats::render_table) else {
                return ExitCode::FAILURE;
            };
            if summary.stations_ready == 0 {
                eprintln!("ocpp-bench: no station got through setup");
                return ExitCode::FAILURE;
            }
        }
        Command::Fleet(args) => {
            let (threads, json) = (args.threads, args.json.clone());
            let Some(summary) = scenario(threads, json, true, fleet::run(args), report::render_table) else {
                return ExitCode::FAILURE;
            };
            if summary.ramp.booted == 0 {
                eprintln!("ocpp-bench: no station booted");
                return ExitCode::FAILURE;
            }
        }
        Command::Hostile(args) => {
            let (threads, json) = (args.threads, args.json.clone());
            if scenario(threads, json, true, hostile::run(args), hostile_report::render_table).is_none() {
                return ExitCode::FAILURE;
            }
        }
        Command::Listen(args) => {
            let (threads, json) = (args.threads, args.json.clone());
            if scenario(threads, json, true, listen::run(args), listen::render_table).is_none() {
                return ExitCode::FAILURE;
            }
        }
        Command::Scenario(args) => {
            let (threads, json) = (args.threads, args.json.clone());
            let Some(summary) = scenario(threads, json, true, scenario_run::run(args), scenario_run::render_table)
            else {
                return ExitCode::FAILURE;
            };
            if summary.overall.booted == 0 {
                eprintln!("ocpp-bench: no station booted");
                return ExitCode::FAILURE;
            }
        }
        Command::Merge(args) => {
            let written = match merge::merge_any(&args.files, args.allow_missing) {
                Ok(merge::Merged::Fleet(s)) => report(report::render_table(&s), &*s, args.json),
                Ok(merge::Merged::Events(s)) => report(stats::render_table(&s), &*s, args.json),
                Ok(merge::Merged::Scenario(s)) => report(scenario_run::render_table(&s), &*s, args.json),
                Err(e) => {
                    eprintln!("ocpp-bench merge: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            if !written {
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
