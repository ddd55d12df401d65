//! Command-line interface.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::IpAddr;
use std::path::PathBuf;

/// Station password set when provisioning with `--provision-api` and no `--password` is given.
pub const DEFAULT_PROVISION_PASSWORD: &str = "bench-password-0001";

#[derive(Debug, Parser)]
#[command(name = "ocpp-bench", version, about = "Load harness for OCPP-J 1.6 central systems")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Durable-event throughput: every station boots, starts one transaction, then sends MeterValues
    /// (or StatusNotification) calls one after the other; reports events/s and ack latency.
    Events(EventsArgs),
}

/// Which CALL the stations repeat during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MessageKind {
    /// MeterValues with an increasing Energy.Active.Import.Register reading.
    MeterValues,
    /// StatusNotification alternating Charging / SuspendedEV.
    Status,
}

impl MessageKind {
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::MeterValues => "meter-values",
            MessageKind::Status => "status",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Station WebSocket URL; `{id}` becomes the station id and `{tenant}` the --tenant slug
    /// [default: ws://127.0.0.1:8180/ocpp/{tenant}/{id}, or the --provision-api host]
    #[arg(long, value_name = "URL")]
    pub url_template: Option<String>,

    /// Number of stations, i.e. of concurrent connections (each has one call in flight at a time)
    #[arg(long, visible_alias = "concurrency", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub stations: u32,

    /// Station ids are {prefix}{index:06}, index from 1 (unused with --credentials)
    #[arg(long, default_value = "BENCH")]
    pub id_prefix: String,

    /// Password of every station (HTTP Basic auth, user = station id); with --provision-api, the
    /// password given to the stations it creates [default there: bench-password-0001]
    #[arg(long)]
    pub password: Option<String>,

    /// Stations and their passwords, one per line: CSV `id,password` or JSON `{"id":…,"password":…}`;
    /// the first --stations lines are used
    #[arg(long, value_name = "FILE", conflicts_with_all = ["password", "provision_api"])]
    pub credentials: Option<PathBuf>,

    /// ocpp-css only: create (or reuse) the --tenant account and the stations through this API
    /// before the run, e.g. http://127.0.0.1:8180/api/v1
    #[arg(long, value_name = "URL")]
    pub provision_api: Option<String>,

    /// Tenant slug: `{tenant}` in the URL template, and the account that --provision-api uses
    #[arg(long, default_value = "bench")]
    pub tenant: String,

    /// Account e-mail for --provision-api [default: bench@{tenant}.example.com]
    #[arg(long)]
    pub email: Option<String>,

    /// Account password for --provision-api
    #[arg(long, default_value = "bench-account-password")]
    pub account_password: String,

    /// idTag of the StartTransaction (--provision-api registers it as Accepted)
    #[arg(long, default_value = "BENCH-TAG")]
    pub id_tag: String,

    /// Measured time, seconds (after the warmup)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,

    /// Time before measuring, seconds; calls sent (or scheduled) then are not counted
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,

    /// The CALL the stations repeat
    #[arg(long, value_enum, default_value_t = MessageKind::MeterValues)]
    pub message: MessageKind,

    /// Open loop: total calls per second over all stations, each station on a fixed schedule;
    /// latency counts from the scheduled send time. Default: closed loop (send on each answer)
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,

    /// Limit, seconds, on every wait: connect, each call's answer, close
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,

    /// Bind client sockets to these source addresses, round-robin (e.g. 127.0.0.1,127.0.0.2)
    #[arg(long, value_delimiter = ',', value_name = "IP,IP,…")]
    pub source_ips: Vec<IpAddr>,

    /// Also write the summary as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Most connection handshakes (connect and BootNotification) in progress at once
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub connect_concurrency: u32,

    /// Longest wait, seconds, for all stations to be connected before the warmup starts anyway
    #[arg(long, default_value_t = 60)]
    pub setup_timeout: u64,

    /// Runtime worker threads [default: one per core]
    #[arg(long)]
    pub threads: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_a_full_command_line() {
        let cli = Cli::try_parse_from([
            "ocpp-bench",
            "events",
            "--url-template",
            "ws://h:1/ocpp/t/{id}",
            "--concurrency",
            "7",
            "--message",
            "status",
            "--rate",
            "100",
            "--source-ips",
            "127.0.0.1,127.0.0.2",
        ])
        .unwrap();
        let Command::Events(a) = cli.command;
        assert_eq!(a.stations, 7);
        assert_eq!(a.message, MessageKind::Status);
        assert_eq!(a.rate, Some(100.0));
        assert_eq!(a.source_ips.len(), 2);
        assert_eq!(a.duration, 20);
        assert_eq!(a.warmup, 3);
    }

    #[test]
    fn credentials_file_excludes_a_shared_password() {
        let r = Cli::try_parse_from(["ocpp-bench", "events", "--credentials", "f.csv", "--password", "x"]);
        assert!(r.is_err());
    }
}
