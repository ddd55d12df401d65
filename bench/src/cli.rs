//! Command-line interface.

use crate::v201::{Protocol, ProtocolMix};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::IpAddr;
use std::path::PathBuf;

/// Station password set when provisioning with `--provision-api` and no `--password` is given.
pub const DEFAULT_PROVISION_PASSWORD: &str = "bench-password-0001";

/// Password of the account `--provision-api` creates (and `listen` signs in with by default).
pub const DEFAULT_ACCOUNT_PASSWORD: &str = "bench-account-password";

#[derive(Debug, Parser)]
#[command(name = "ocpp-bench", version, about = "Load harness for OCPP-J 1.6 and 2.0.1 central systems")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Durable-event throughput: every station boots, starts one transaction, then sends MeterValues
    /// (or StatusNotification) calls one after the other; reports events/s and ack latency.
    Events(EventsArgs),
    /// Fleet: ramp N connections up at a set rate (connect, BootNotification, StatusNotification per
    /// connector), hold them with open-loop Heartbeats and transactions, optionally drop them all
    /// at once and measure the reconnect storm, then close cleanly. Reports connect/boot/per-action
    /// latency, failures, and the server's RSS and CPU with --server-pid.
    Fleet(FleetArgs),
    /// Hostile: a small legitimate fleet sends open-loop Heartbeats through a quiet phase and then
    /// through an attack (--attack), while the server's RSS, open files and CPU are sampled. Reports
    /// the legitimate latency of both phases, probes of sign-in/connect/API latency, and what the
    /// server did to the attack (close codes, HTTP statuses, resets), counted by kind.
    Hostile(HostileArgs),
    /// Merge the --json outputs of a distributed `fleet` or `events` run (one per --shard I/N) into one report:
    /// counts summed, histograms added (percentiles from the merged histograms), rates over the
    /// shards' combined windows. Prints the same table as a single run; --json writes the same JSON.
    Merge(MergeArgs),
    /// Listen: the receiving end of ocpp-css's event feed while something else (a `fleet`) makes the
    /// events. Opens --sse-clients streams of GET /api/v1/events and starts --webhooks HTTP receivers
    /// on this machine, each registered as a webhook (deleted at the end); reports events and
    /// deliveries per second and in total, the lag from each event's time to its receipt, and each
    /// receiver's duplicates and order.
    Listen(ListenArgs),
    /// Scenario: a fleet of station classes described in a TOML file (shares of the fleet, each with
    /// its protocol, connectors, heartbeat, sessions, flaky connections and offline periods whose
    /// messages are queued and replayed on reconnect). Reports per class and overall.
    Scenario(ScenarioArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ScenarioArgs {
    /// The scenario file (TOML: [run] and [[class]] tables; see bench/README.md)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Run length in seconds from the first connect, instead of the file's duration_secs
    #[arg(long, value_parser = parse_positive, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Divide every class time (heartbeat, sessions, meter values, flaky, offline) by this, instead of
    /// the file's time_scale (default 1: real time), e.g. 60 to play an hour in a minute
    #[arg(long, value_parser = parse_positive, value_name = "FACTOR")]
    pub time_scale: Option<f64>,

    /// Seed of the stations' random draws, instead of the file's seed (default 1)
    #[arg(long)]
    pub seed: Option<u64>,

    /// Limit, seconds, on every wait: connect, each call's answer, close
    #[arg(long, default_value_t = 10.0, value_name = "SECS", value_parser = parse_positive)]
    pub timeout: f64,

    /// Bind client sockets to these source addresses, round-robin (as for fleet)
    #[arg(long, value_parser = parse_source_ips, value_name = "IPS")]
    pub source_ips: Option<SourceIps>,

    /// Also write the summary as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Runtime worker threads [default: one per core]
    #[arg(long)]
    pub threads: Option<usize>,

    /// Distributed run: this process is shard I of N (1-based). The file's stations and connect_rate
    /// are the whole run's; this shard runs stations (I-1)·N/n+1 … I·N/n with the classes the whole
    /// run gives them, and writes its histograms into --json for `ocpp-bench merge`
    #[arg(long, value_parser = crate::shard::parse_shard, value_name = "I/N")]
    pub shard: Option<crate::shard::Shard>,
}

#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// The server, e.g. http://127.0.0.1:8180 (`/api/v1` is added unless the URL ends with it)
    #[arg(long, default_value = "http://127.0.0.1:8180", value_name = "URL")]
    pub api: String,

    /// Account e-mail to sign in with (POST /api/v1/sessions) [default: bench@{tenant}.example.com,
    /// the account `fleet --provision-api` creates]
    #[arg(long, conflicts_with = "token")]
    pub email: Option<String>,

    /// Account password (the default is the one `fleet --provision-api` gives the account)
    #[arg(long, default_value = DEFAULT_ACCOUNT_PASSWORD, conflicts_with = "token")]
    pub password: String,

    /// Tenant slug: names the default --email, as `fleet --tenant` does
    #[arg(long, default_value = "bench")]
    pub tenant: String,

    /// A bearer token of the account, instead of signing in
    #[arg(long)]
    pub token: Option<String>,

    /// Event streams (GET /api/v1/events, every type) held open at once; the server allows
    /// limits.event_streams_per_tenant (default 10) per tenant
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub sse_clients: u32,

    /// Webhook receivers: each an HTTP/1.1 server on --receiver-ip answering 200, registered as one
    /// webhook (every type) and deleted at the end. The server must allow loopback destinations
    /// (webhooks.allow_private_destinations) and M webhooks (webhooks.max_per_account, default 10)
    #[arg(long, default_value_t = 0, value_name = "M")]
    pub webhooks: u32,

    /// Address the receivers listen on (the webhooks' URLs name it)
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub receiver_ip: IpAddr,

    /// Measured time, seconds (after the warmup)
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,

    /// Seconds after setup before measuring (the server starts a new webhook's worker within ~2 s)
    #[arg(long, default_value_t = 3, value_name = "SECS")]
    pub warmup: u64,

    /// After the window, seconds the receivers are given to reach the newest event the SSE clients
    /// had seen (reports how far behind each webhook was)
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub drain: u64,

    /// Longest wait, seconds, for every event stream to open before the warmup starts anyway
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub setup_timeout: u64,

    /// Sample this process (the server): its CPU over the window in the summary
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Also write the summary as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Runtime worker threads [default: one per core]
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// The shards' --json files (all shards of one run, each once)
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Merge even if some shards of the run are missing (the report says which were merged)
    #[arg(long)]
    pub allow_missing: bool,

    /// Also write the merged summary as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// How the storm drops its connections (neither sends a WebSocket close).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StormClose {
    /// Abortive close: RST, as after a NAT or middlebox reset; leaves no TIME_WAIT behind.
    Rst,
    /// Orderly TCP close (FIN) without a WebSocket close frame.
    Fin,
}

/// `--source-ips` as parsed: a list of addresses (ranges expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps(pub Vec<IpAddr>);

fn parse_source_ips(s: &str) -> Result<SourceIps, String> {
    crate::schedule::parse_source_ips(s).map(SourceIps)
}

fn parse_protocol(s: &str) -> Result<ProtocolMix, String> {
    ProtocolMix::parse(s)
}

fn parse_one_protocol(s: &str) -> Result<Protocol, String> {
    match s.trim() {
        "1.6" => Ok(Protocol::V16),
        "2.0.1" => Ok(Protocol::V201),
        other => Err(format!("{other:?}: expected 1.6 or 2.0.1 (mixed fleets: `fleet --protocol`)")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r >= 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("{s:?} is not a rate (a number ≥ 0)")),
    }
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// What the hostile scenario does to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum AttackKind {
    /// Authenticated WebSocket, then a text frame declaring 2^40 bytes, streamed as fast as possible.
    BigFrame,
    /// Authenticated WebSocket, then a text message that never ends: continuation frames of 16 KiB.
    Fragments,
    /// Authenticated WebSocket with a 4 KiB receive buffer that is never read; Heartbeats flat out.
    NoRead,
    /// One Authorize with a ~65,000-character idTag, id "A", then `[2,"A","Authorize",{}]` flat out,
    /// never reading.
    ReplayAmplify,
    /// `POST /api/v1/sessions` with Content-Length 100000 and no body, as many as possible, held.
    StalledBody,
    /// Plain TCP connections that send nothing, as many as possible, held.
    ConnFlood,
    /// DataTransfer CALLs just under the frame limit, each sent once the previous is answered.
    EventFlood,
    /// WebSocket handshakes for an existing station with a fresh wrong password each time.
    AuthBrute,
    /// `POST /api/v1/accounts` with fresh e-mails and slugs.
    SignupFlood,
    /// One station connecting, booting and disconnecting in a tight loop.
    ReconnectLoop,
    /// CALLRESULTs `[3,"<random id>",{}]` for calls the server never made.
    Unsolicited,
}

/// The legitimate probes an attack is measured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProbeKind {
    /// `GET /api/v1/account` with the legitimate tenant's token, on a new connection.
    ApiAccount,
    /// A station of the legitimate tenant that never connected before: connect and BootNotification.
    NewStation,
    /// `POST /api/v1/sessions` of the legitimate account.
    SignIn,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::ApiAccount => "api_get_account",
            ProbeKind::NewStation => "new_station_connect",
            ProbeKind::SignIn => "sign_in",
        }
    }
}

impl AttackKind {
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::BigFrame => "big-frame",
            AttackKind::Fragments => "fragments",
            AttackKind::NoRead => "no-read",
            AttackKind::ReplayAmplify => "replay-amplify",
            AttackKind::StalledBody => "stalled-body",
            AttackKind::ConnFlood => "conn-flood",
            AttackKind::EventFlood => "event-flood",
            AttackKind::AuthBrute => "auth-brute",
            AttackKind::SignupFlood => "signup-flood",
            AttackKind::ReconnectLoop => "reconnect-loop",
            AttackKind::Unsolicited => "unsolicited",
        }
    }

    /// Parallel attack clients when --attackers is not given: one for the reconnect loop (one
    /// station), eight otherwise.
    pub fn default_attackers(self) -> u32 {
        match self {
            AttackKind::ReconnectLoop => 1,
            _ => 8,
        }
    }

    /// Which probes run beside the attack, and how often (milliseconds).
    pub fn probes(self) -> &'static [(ProbeKind, u64)] {
        match self {
            AttackKind::StalledBody | AttackKind::ConnFlood => {
                &[(ProbeKind::ApiAccount, 1000), (ProbeKind::NewStation, 1000)]
            }
            AttackKind::AuthBrute | AttackKind::SignupFlood => {
                &[(ProbeKind::NewStation, 500), (ProbeKind::SignIn, 2000)]
            }
            _ => &[],
        }
    }

    /// Holds thousands of connections (sized by --max-conns).
    pub fn floods_connections(self) -> bool {
        matches!(self, AttackKind::StalledBody | AttackKind::ConnFlood)
    }

    /// Needs the account API (not only the station endpoint).
    pub fn needs_api(self) -> bool {
        matches!(self, AttackKind::SignupFlood)
    }

    /// Connects as attacker-tenant stations (one per attack client).
    pub fn uses_stations(self) -> bool {
        !matches!(self, AttackKind::StalledBody | AttackKind::ConnFlood | AttackKind::SignupFlood)
    }
}

#[derive(Debug, Clone, Args)]
pub struct HostileArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// The attack
    #[arg(long, value_enum)]
    pub attack: AttackKind,

    /// Seconds the attack runs (after the quiet phase)
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,

    /// Seconds of legitimate traffic alone before the attack: the baseline
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub quiet: u64,

    /// Legitimate stations: connected and booted first, then open-loop Heartbeats through both phases
    #[arg(long, default_value_t = 200, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub legit_stations: u32,

    /// Legitimate Heartbeats per second, all stations together (open loop; latency counts from the
    /// scheduled send)
    #[arg(long, default_value_t = 200.0, value_parser = parse_rate, value_name = "MSGS_PER_SEC")]
    pub legit_rate: f64,

    /// Parallel attack clients [default: 1 for reconnect-loop, else 8]; the connection floods run
    /// 32 connects in flight per client
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub attackers: Option<u32>,

    /// Slug of the attacker's own tenant (--provision-api creates it, with one station per attacker)
    #[arg(long, default_value = "hostile", value_name = "SLUG")]
    pub attacker_tenant: String,

    /// Attacker station ids are {prefix}{index:06}
    #[arg(long, default_value = "EVIL", value_name = "PREFIX")]
    pub attacker_prefix: String,

    /// Password of the attacker's stations [default with --provision-api: bench-password-0001]
    #[arg(long)]
    pub attacker_password: Option<String>,

    /// API base for the API attacks and probes, e.g. http://127.0.0.1:8180/api/v1 [default: --provision-api]
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,

    /// Bind the legitimate fleet's and the probes' sockets to these addresses, round-robin
    #[arg(long, value_parser = parse_source_ips, value_name = "IPS")]
    pub source_ips: Option<SourceIps>,

    /// Bind the attack's sockets to these addresses, round-robin, e.g. 127.0.0.2-127.0.0.9
    #[arg(long, value_parser = parse_source_ips, value_name = "IPS")]
    pub attack_source_ips: Option<SourceIps>,

    /// stalled-body, conn-flood: most attack connections held at once (also capped by the harness's
    /// own open-file limit)
    #[arg(long, default_value_t = 19_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_conns: u64,

    /// event-flood: the server's largest message, bytes; DataTransfer frames are made just under it
    #[arg(long, default_value_t = 65_536, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(256..=1_048_000))]
    pub frame_limit: u64,

    /// Worker threads of the attack's own runtime, apart from the legitimate fleet's
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub attack_threads: u32,

    /// Sample this process (the server) every second: RSS, open files, CPU
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// End the run early when the server's RSS passes this many MiB, before it takes the machine
    /// down with it (0: no limit)
    #[arg(long, default_value_t = 8192, value_name = "MIB")]
    pub server_rss_limit: u64,

    /// The server's log file: report how much it grew during the attack
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,

    /// The server's data directory: report how much it grew during the attack
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Limit, seconds, on every wait: connect, each call's answer, a stalled write
    #[arg(long, default_value_t = 10.0, value_name = "SECS", value_parser = parse_positive)]
    pub timeout: f64,

    /// Seed of the legitimate stations' random schedule offsets
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Also write the summary as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Worker threads of the legitimate fleet's runtime [default: one per core]
    #[arg(long)]
    pub threads: Option<usize>,
}

impl HostileArgs {
    pub fn attackers(&self) -> u32 {
        self.attackers.unwrap_or_else(|| self.attack.default_attackers())
    }

    /// The API base: --api, else --provision-api.
    pub fn api(&self) -> Option<&str> {
        self.api.as_deref().or(self.target.provision_api.as_deref())
    }
}

#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Number of stations, i.e. of connections held
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub stations: u32,

    /// Ramp: new connections per second (token-bucket schedule)
    #[arg(long, default_value_t = 500.0, value_parser = parse_positive, value_name = "PER_SEC")]
    pub connect_rate: f64,

    /// Ramp: most stations connecting and booting at once
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub connect_concurrency: u32,

    /// OCPP version of the stations: 1.6, 2.0.1, mix (half each), or shares in percent summing to
    /// 100, e.g. 1.6=70,2.0.1=30 (the 2.0.1 stations are spread evenly over the fleet)
    #[arg(long, default_value = "1.6", value_parser = parse_protocol, value_name = "VERSION")]
    pub protocol: ProtocolMix,

    /// Connectors per station: each gets one StatusNotification (Available) after the boot (2.0.1:
    /// one EVSE per connector, each with connector 1)
    #[arg(long, default_value_t = 1, value_name = "C", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connectors: u32,

    /// Also send a StatusNotification for connector 0 (the charge point itself; 1.6 stations only)
    #[arg(long)]
    pub connector_zero: bool,

    /// Hold: seconds all connections are held after the ramp (0: none)
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub hold: u64,

    /// Hold: total Heartbeats per second over all stations, open loop (each station on a fixed
    /// period with a random offset; latency from the scheduled time). 0: idle hold
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, value_name = "MSGS_PER_SEC")]
    pub heartbeat_rate: f64,

    /// Hold: total transactions started per second over all stations, open loop; each is a
    /// StartTransaction, --meter-values MeterValues and a StopTransaction, --meter-interval apart
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, value_name = "TX_PER_SEC")]
    pub transaction_rate: f64,

    /// MeterValues per transaction
    #[arg(long, default_value_t = 3, value_name = "K")]
    pub meter_values: u32,

    /// Seconds between the messages of one transaction
    #[arg(long, default_value_t = 1.0, value_parser = parse_rate, value_name = "SECS")]
    pub meter_interval: f64,

    /// After the hold, drop every connection at once (no WebSocket close) and have every station
    /// reconnect and boot again; measures the storm's rate, latency and failures
    #[arg(long)]
    pub storm: bool,

    /// Storm: reconnects per second (token bucket) instead of all at once
    #[arg(long, value_parser = parse_positive, value_name = "PER_SEC", requires = "storm")]
    pub storm_rate: Option<f64>,

    /// Storm: seconds between the drop and the first reconnect
    #[arg(long, default_value_t = 1.0, value_parser = parse_rate, value_name = "SECS")]
    pub storm_pause: f64,

    /// Storm: how the connections are dropped
    #[arg(long, value_enum, default_value_t = StormClose::Rst)]
    pub storm_close: StormClose,

    /// Storm: seconds from the first reconnect after which stations stop retrying
    #[arg(long, default_value_t = 120, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub storm_timeout: u64,

    /// Limit, seconds, on every wait: connect, each call's answer, close
    #[arg(long, default_value_t = 10.0, value_name = "SECS", value_parser = parse_positive)]
    pub timeout: f64,

    /// Bind client sockets to these source addresses, round-robin: a list and/or ranges, e.g.
    /// 127.0.0.1,127.0.0.2 or 127.0.0.1-127.0.0.8 (each address has ~28k ephemeral ports)
    #[arg(long, value_parser = parse_source_ips, value_name = "IPS")]
    pub source_ips: Option<SourceIps>,

    /// Sample this process (the server) every second: RSS and CPU in the summary
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Seed of the stations' random schedule offsets
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Also write the summary as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Runtime worker threads [default: one per core]
    #[arg(long)]
    pub threads: Option<usize>,

    /// Distributed run: this process is shard I of N (1-based, e.g. 2/4). --stations and the rates
    /// (--connect-rate, --connect-concurrency, --heartbeat-rate, --transaction-rate, --storm-rate)
    /// are the whole fleet's; this shard runs stations (I-1)·N/n+1 … I·N/n and its share of the
    /// rates, provisions only its own stations, and writes its histograms into --json for
    /// `ocpp-bench merge`
    #[arg(long, value_parser = crate::shard::parse_shard, value_name = "I/N")]
    pub shard: Option<crate::shard::Shard>,

    /// Begin the ramp at this wall-clock time, seconds since the Unix epoch (after provisioning),
    /// so that the shards of a distributed run start together: e.g. --start-at $(($(date +%s) + 15))
    #[arg(long, value_name = "UNIX_SECS")]
    pub start_at: Option<u64>,

    #[command(flatten)]
    pub answers: AnswerArgs,

    #[command(flatten)]
    pub commands: CommandArgs,
}

/// How the simulated stations answer the central system's calls.
#[derive(Debug, Clone, Args)]
pub struct AnswerArgs {
    /// Wait this long before answering each call of the central system, milliseconds: MS, or
    /// MIN-MAX (uniform) [default: answer at once]
    #[arg(long, value_parser = crate::commands::parse_answer_delay, value_name = "MS|MIN-MAX")]
    pub answer_delay: Option<crate::commands::AnswerDelay>,

    /// Answer the action with this JSON object instead of the schema-valid default (repeatable), e.g.
    /// --answer Reset='{"status":"Rejected"}'. Any action name is taken, vendor ones too; it is not
    /// checked against the OCPP schemas
    #[arg(long = "answer", value_parser = crate::commands::parse_answer, value_name = "ACTION=JSON")]
    pub answers: Vec<(String, serde_json::Value)>,
}

/// Commands sent through an HTTP API during the hold.
#[derive(Debug, Clone, Args)]
pub struct CommandArgs {
    /// Commands per second during the hold (open loop, spread over the stations round-robin from a
    /// --seed offset; with --shard the fleet's, each shard sending its share); 0: none
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, value_name = "PER_SEC")]
    pub command_rate: f64,

    /// A command of the mix: ACTION or ACTION=JSON payload (default payload {}); repeatable, sent
    /// round-robin in the order given (repeat one to weight it)
    #[arg(long = "command", value_parser = crate::commands::parse_command, value_name = "ACTION[=JSON]")]
    pub commands: Vec<crate::commands::CommandSpec>,

    /// Where a command goes: POST to this URL, {id} the station id, {action} the action [default with
    /// --provision-api: {api}/stations/{id}/commands/{action} with the account's bearer token]
    #[arg(long, value_name = "URL")]
    pub command_url_template: Option<String>,

    /// A header of every command request, 'Name: value' (repeatable), e.g. 'Authorization: Bearer …'
    #[arg(long = "command-header", value_parser = crate::commands::parse_header, value_name = "NAME: VALUE")]
    pub command_headers: Vec<(String, String)>,

    /// Most command requests in flight at once; one not sent within --timeout of its due time is unsent
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub command_concurrency: u32,
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

/// Which central system, which stations, and how they authenticate: shared by all scenarios.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Station WebSocket URL; `{id}` becomes the station id and `{tenant}` the --tenant slug
    /// [default: ws://127.0.0.1:8180/ocpp/{tenant}/{id}, or the --provision-api host]
    #[arg(long, value_name = "URL")]
    pub url_template: Option<String>,

    /// Station ids are {prefix}{index:06}, index from 1 (unused with --credentials)
    #[arg(long, default_value = "BENCH")]
    pub id_prefix: String,

    /// Password of every station (HTTP Basic auth, user = station id); with --provision-api, the
    /// password given to the stations it creates [default there: none, the server generates one per
    /// station (ocpp-css checks those with a fast keyed hash; a chosen one costs an argon2 run at
    /// each station's first connection); `hostile` gives bench-password-0001]
    #[arg(long)]
    pub password: Option<String>,

    /// Write the run's stations and passwords to FILE (CSV `id,password`), e.g. the passwords
    /// --provision-api had generated, for a later run's --credentials
    #[arg(long, value_name = "FILE")]
    pub save_credentials: Option<PathBuf>,

    /// Stations and their passwords, one per line: CSV `id,password` or JSON `{"id":…,"password":…}`;
    /// the first --stations lines are used
    #[arg(long, value_name = "FILE", conflicts_with_all = ["password", "provision_api"])]
    pub credentials: Option<PathBuf>,

    /// ocpp-css only: create (or reuse) the --tenant account and the stations through this API
    /// before the run, e.g. http://127.0.0.1:8180/api/v1 (uses POST /stations/bulk when the server
    /// has it, else one POST /stations per station)
    #[arg(long, value_name = "URL")]
    pub provision_api: Option<String>,

    /// Tenant slug: `{tenant}` in the URL template, and the account that --provision-api uses
    #[arg(long, default_value = "bench")]
    pub tenant: String,

    /// Account e-mail for --provision-api [default: bench@{tenant}.example.com]
    #[arg(long)]
    pub email: Option<String>,

    /// Account password for --provision-api
    #[arg(long, default_value = DEFAULT_ACCOUNT_PASSWORD)]
    pub account_password: String,

    /// idTag of the StartTransaction (--provision-api registers it as Accepted)
    #[arg(long, default_value = "BENCH-TAG")]
    pub id_tag: String,

    /// wss:// only: trust the server certificates signed by these PEM CA certificates [default: the
    /// system bundle, $SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt and the like]
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// wss:// only (profile 3): station `{id}` presents the chain `DIR/{id}.pem` (leaf first) and the key
    /// `DIR/{id}.key` (PEM, PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["client_ca", "client_ca_key"])]
    pub client_cert_dir: Option<PathBuf>,

    /// wss:// only (profile 3): mint each station's client certificate (CN = station id, O = --tenant)
    /// with this CA certificate (PEM) at its first connect; needs --client-ca-key
    #[arg(long, value_name = "CERT", requires = "client_ca_key")]
    pub client_ca: Option<PathBuf>,

    /// The private key (PEM) of --client-ca
    #[arg(long, value_name = "KEY", requires = "client_ca")]
    pub client_ca_key: Option<PathBuf>,

    /// wss:// only: TLS session resumption on reconnects (each station its own session cache)
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub tls_resumption: bool,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: on or off")),
    }
}

impl TargetArgs {
    /// The TLS flags.
    pub fn tls(&self) -> crate::tls::TlsOptions {
        crate::tls::TlsOptions {
            ca_file: self.ca_file.clone(),
            client_cert_dir: self.client_cert_dir.clone(),
            client_ca: self.client_ca.clone(),
            client_ca_key: self.client_ca_key.clone(),
            tenant: self.tenant.clone(),
            resumption: self.tls_resumption,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Number of stations, i.e. of concurrent connections (each has one call in flight at a time)
    #[arg(long, visible_alias = "concurrency", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub stations: u32,

    /// Measured time, seconds (after the warmup)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,

    /// Time before measuring, seconds; calls sent (or scheduled) then are not counted
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,

    /// The CALL the stations repeat
    #[arg(long, value_enum, default_value_t = MessageKind::MeterValues)]
    pub message: MessageKind,

    /// OCPP version of the stations: 1.6, or 2.0.1 (the transaction is a TransactionEvent Started;
    /// meter-values sends TransactionEvent Updated with the reading, status StatusNotification
    /// Occupied/Available of EVSE 1)
    #[arg(long, default_value = "1.6", value_parser = parse_one_protocol, value_name = "VERSION")]
    pub protocol: Protocol,

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

    /// Distributed run: this process is shard I of N (1-based, e.g. 2/4). --stations and --rate are
    /// the whole run's; this shard runs stations (I-1)·N/n+1 … I·N/n at their share of the rate
    /// and writes its histogram into --json for `ocpp-bench merge`
    #[arg(long, value_parser = crate::shard::parse_shard, value_name = "I/N")]
    pub shard: Option<crate::shard::Shard>,

    /// Start (the warmup) at this wall-clock time, seconds since the Unix epoch, once set up, so
    /// that shards measure the same window
    #[arg(long, value_name = "UNIX_SECS")]
    pub start_at: Option<u64>,

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
        let Command::Events(a) = cli.command else { panic!("not events") };
        assert_eq!(a.stations, 7);
        assert_eq!(a.message, MessageKind::Status);
        assert_eq!(a.rate, Some(100.0));
        assert_eq!(a.source_ips.len(), 2);
        assert_eq!(a.duration, 20);
        assert_eq!(a.warmup, 3);
    }

    #[test]
    fn parses_a_fleet_command_line() {
        let cli = Cli::try_parse_from([
            "ocpp-bench",
            "fleet",
            "--provision-api",
            "http://127.0.0.1:8180/api/v1",
            "--stations",
            "1000",
            "--connect-rate",
            "500",
            "--hold",
            "10",
            "--heartbeat-rate",
            "1000",
            "--storm",
            "--server-pid",
            "42",
            "--source-ips",
            "127.0.0.1-127.0.0.4,127.0.0.9",
        ])
        .unwrap();
        let Command::Fleet(a) = cli.command else { panic!("not fleet") };
        assert_eq!(a.stations, 1000);
        assert_eq!(a.connect_rate, 500.0);
        assert_eq!(a.hold, 10);
        assert_eq!(a.heartbeat_rate, 1000.0);
        assert!(a.storm);
        assert_eq!(a.storm_rate, None);
        assert_eq!(a.storm_close, StormClose::Rst);
        assert_eq!(a.server_pid, Some(42));
        assert_eq!(a.source_ips.unwrap().0.len(), 5);
        assert_eq!(a.connectors, 1);
        assert_eq!(a.timeout, 10.0);
        assert_eq!(a.target.provision_api.as_deref(), Some("http://127.0.0.1:8180/api/v1"));
        assert_eq!(a.protocol, ProtocolMix { v201_percent: 0 });
        let cli = Cli::try_parse_from(["ocpp-bench", "fleet", "--protocol", "1.6=70,2.0.1=30"]).unwrap();
        let Command::Fleet(a) = cli.command else { panic!("not fleet") };
        assert_eq!(a.protocol.v201_percent, 30);
    }

    #[test]
    fn fleet_refuses_nonsense() {
        let bad: &[&[&str]] = &[
            &["--connect-rate", "0"],
            &["--heartbeat-rate", "-1"],
            &["--storm-rate", "100"], // without --storm
            &["--source-ips", "127.0.0.9-127.0.0.1"],
            &["--stations", "0"],
            &["--timeout", "0"],
            &["--protocol", "2.0"],
            &["--protocol", "1.6=60,2.0.1=30"],
        ];
        for extra in bad {
            let args = ["ocpp-bench", "fleet"].iter().chain(extra.iter());
            assert!(Cli::try_parse_from(args).is_err(), "{extra:?} was accepted");
        }
    }

    fn hostile(extra: &[&str]) -> Result<HostileArgs, clap::Error> {
        let cli = Cli::try_parse_from(["ocpp-bench", "hostile"].iter().chain(extra))?;
        let Command::Hostile(a) = cli.command else { panic!("not hostile") };
        Ok(a)
    }

    #[test]
    fn parses_a_hostile_command_line() {
        let a = hostile(&[
            "--attack",
            "big-frame",
            "--duration",
            "30",
            "--provision-api",
            "http://127.0.0.1:8190/api/v1",
            "--server-pid",
            "42",
            "--server-log",
            "/tmp/s.log",
            "--data-dir",
            "/tmp/d",
            "--attack-source-ips",
            "127.0.0.2-127.0.0.9",
            "--source-ips",
            "127.0.0.1",
            "--json",
            "out.json",
        ])
        .unwrap();
        assert_eq!(a.attack, AttackKind::BigFrame);
        assert_eq!((a.duration, a.quiet, a.legit_stations, a.legit_rate), (30, 10, 200, 200.0));
        assert_eq!(a.attackers(), 8);
        assert_eq!(a.attack_source_ips.as_ref().unwrap().0.len(), 8);
        assert_eq!(a.api(), Some("http://127.0.0.1:8190/api/v1"));
        assert_eq!(a.max_conns, 19_000);
        assert_eq!(a.frame_limit, 65_536);
        assert_eq!(a.attacker_tenant, "hostile");
        assert_eq!(a.server_log.as_deref(), Some(std::path::Path::new("/tmp/s.log")));
        let r = hostile(&["--attack", "reconnect-loop"]).unwrap();
        assert_eq!(r.attackers(), 1, "one station by default");
        let r = hostile(&["--attack", "reconnect-loop", "--attackers", "3", "--api", "http://h:1/api/v1"]).unwrap();
        assert_eq!((r.attackers(), r.api()), (3, Some("http://h:1/api/v1")));
    }

    #[test]
    fn every_attack_has_a_name_clap_accepts() {
        for kind in AttackKind::value_variants() {
            let a = hostile(&["--attack", kind.name()]).unwrap();
            assert_eq!(a.attack, *kind);
        }
        assert_eq!(AttackKind::value_variants().len(), 11);
    }

    #[test]
    fn hostile_refuses_nonsense() {
        let bad: &[&[&str]] = &[
            &[],                       // no --attack
            &["--attack", "teardrop"], // unknown attack
            &["--attack", "big-frame", "--duration", "0"],
            &["--attack", "big-frame", "--attackers", "0"],
            &["--attack", "big-frame", "--legit-stations", "0"],
            &["--attack", "big-frame", "--legit-rate", "-5"],
            &["--attack", "conn-flood", "--max-conns", "0"],
            &["--attack", "event-flood", "--frame-limit", "100"],
            &["--attack", "big-frame", "--attack-source-ips", "127.0.0.9-127.0.0.2"],
            &["--attack", "big-frame", "--timeout", "0"],
            &["--attack", "big-frame", "--attack-threads", "0"],
        ];
        for extra in bad {
            assert!(hostile(extra).is_err(), "{extra:?} was accepted");
        }
    }

    #[test]
    fn probes_follow_the_attack() {
        assert_eq!(AttackKind::StalledBody.probes(), &[(ProbeKind::ApiAccount, 1000), (ProbeKind::NewStation, 1000)]);
        assert_eq!(AttackKind::AuthBrute.probes(), &[(ProbeKind::NewStation, 500), (ProbeKind::SignIn, 2000)]);
        assert_eq!(AttackKind::SignupFlood.probes(), AttackKind::AuthBrute.probes());
        assert!(AttackKind::BigFrame.probes().is_empty());
        assert!(AttackKind::ConnFlood.floods_connections() && !AttackKind::AuthBrute.floods_connections());
        assert!(!AttackKind::ConnFlood.uses_stations() && AttackKind::Unsolicited.uses_stations());
    }

    #[test]
    fn events_take_one_protocol() {
        let parse = |p: &str| Cli::try_parse_from(["ocpp-bench", "events", "--protocol", p]);
        let Command::Events(a) = parse("2.0.1").unwrap().command else { panic!("not events") };
        assert_eq!(a.protocol, Protocol::V201);
        assert!(parse("mix").is_err() && parse("1.6=50,2.0.1=50").is_err() && parse("2.0").is_err());
    }

    #[test]
    fn fleet_takes_answers_and_commands() {
        let cli = Cli::try_parse_from([
            "ocpp-bench",
            "fleet",
            "--answer-delay",
            "10-200",
            "--answer",
            r#"Reset={"status":"Rejected"}"#,
            "--answer",
            "AcmeVendorCall={}",
            "--command-rate",
            "50",
            "--command",
            r#"Reset={"type":"Immediate"}"#,
            "--command",
            "GetConfiguration",
            "--command-url-template",
            "http://csms/api/{id}/{action}",
            "--command-header",
            "Authorization: Bearer abc",
            "--command-concurrency",
            "8",
        ])
        .unwrap();
        let Command::Fleet(a) = cli.command else { panic!("not fleet") };
        let d = a.answers.answer_delay.unwrap();
        assert_eq!((d.min_ms, d.max_ms), (10, 200));
        assert_eq!(a.answers.answers.len(), 2);
        assert_eq!(a.answers.answers[0].1, serde_json::json!({"status": "Rejected"}));
        let c = &a.commands;
        assert_eq!((c.command_rate, c.command_concurrency, c.commands.len()), (50.0, 8, 2));
        assert_eq!(c.commands[1].action, "GetConfiguration");
        assert_eq!(c.command_headers, vec![("Authorization".to_string(), "Bearer abc".to_string())]);
        assert!(crate::fleet::check(&a).is_ok());
        // Defaults: no delay, no overrides, no commands, 64 in flight.
        let cli = Cli::try_parse_from(["ocpp-bench", "fleet"]).unwrap();
        let Command::Fleet(a) = cli.command else { panic!("not fleet") };
        assert!(a.answers.answer_delay.is_none() && a.answers.answers.is_empty());
        assert_eq!((a.commands.command_rate, a.commands.command_concurrency), (0.0, 64));
        for bad in [
            &["--answer-delay", "9-1"][..],
            &["--answer", "Reset={nope"],
            &["--answer", "Reset"],
            &["--command", "Reset=1"],
            &["--command-rate", "-1"],
            &["--command-header", "nocolon"],
            &["--command-concurrency", "0"],
        ] {
            assert!(Cli::try_parse_from(["ocpp-bench", "fleet"].iter().chain(bad)).is_err(), "{bad:?} was accepted");
        }
        // Commands need a mix and somewhere to go; a template needs {id}.
        for (extra, why) in [
            (&["--command-rate", "5", "--provision-api", "http://h/api/v1"][..], "--command"),
            (&["--command-rate", "5", "--command", "Reset"], "--command-url-template"),
            (&["--command-rate", "5", "--command", "Reset", "--command-url-template", "http://h/x"], "{id}"),
        ] {
            let cli = Cli::try_parse_from(["ocpp-bench", "fleet"].iter().chain(extra)).unwrap();
            let Command::Fleet(a) = cli.command else { panic!("not fleet") };
            let err = crate::fleet::check(&a).unwrap_err().to_string();
            assert!(err.contains(why), "{extra:?}: {err}");
        }
    }

    #[test]
    fn fleet_takes_a_shard_and_refuses_bad_ones() {
        let cli = Cli::try_parse_from(["ocpp-bench", "fleet", "--shard", "2/4"]).unwrap();
        let Command::Fleet(a) = cli.command else { panic!("not fleet") };
        assert_eq!(a.shard, Some(crate::shard::Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "1/0", "x", "1/4/4"] {
            let err = Cli::try_parse_from(["ocpp-bench", "fleet", "--shard", bad]).unwrap_err();
            assert!(err.to_string().contains("--shard"), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_a_listen_command_line() {
        let cli = Cli::try_parse_from([
            "ocpp-bench",
            "listen",
            "--api",
            "http://127.0.0.1:8180",
            "--sse-clients",
            "100",
            "--webhooks",
            "10",
            "--duration",
            "60",
            "--json",
            "l.json",
        ])
        .unwrap();
        let Command::Listen(a) = cli.command else { panic!("not listen") };
        assert_eq!((a.sse_clients, a.webhooks, a.duration, a.warmup, a.drain), (100, 10, 60, 3, 10));
        assert_eq!((a.email, a.password.as_str(), a.tenant.as_str()), (None, DEFAULT_ACCOUNT_PASSWORD, "bench"));
        let listen = |extra: &[&str]| Cli::try_parse_from(["ocpp-bench", "listen"].iter().chain(extra));
        assert!(listen(&["--token", "t", "--email", "a@b.c"]).is_err());
        assert!(listen(&["--duration", "0"]).is_err());
        assert!(listen(&["--receiver-ip", "localhost"]).is_err());
        assert!(listen(&["--token", "t", "--webhooks", "2"]).is_ok());
    }

    #[test]
    fn merge_needs_files() {
        assert!(Cli::try_parse_from(["ocpp-bench", "merge"]).is_err());
        let cli = Cli::try_parse_from(["ocpp-bench", "merge", "a.json", "b.json", "--json", "m.json"]).unwrap();
        let Command::Merge(m) = cli.command else { panic!("not merge") };
        assert_eq!(m.files.len(), 2);
        assert!(!m.allow_missing);
    }

    #[test]
    fn tls_flags_parse_and_pair_up() {
        let fleet = |extra: &[&str]| {
            let mut a = vec!["ocpp-bench", "fleet"];
            a.extend_from_slice(extra);
            Cli::try_parse_from(a).map(|c| match c.command {
                Command::Fleet(f) => f.target,
                _ => panic!("not fleet"),
            })
        };
        assert!(fleet(&[]).unwrap().tls_resumption, "resumption on by default");
        assert!(!fleet(&["--tls-resumption", "off"]).unwrap().tls_resumption);
        assert!(fleet(&["--tls-resumption", "on"]).unwrap().tls_resumption);
        let e = fleet(&["--tls-resumption", "maybe"]).unwrap_err().to_string();
        assert!(e.contains("on or off"), "{e}");
        assert!(fleet(&["--client-ca", "ca.pem"]).is_err(), "needs --client-ca-key");
        assert!(fleet(&["--client-ca-key", "ca.key"]).is_err(), "needs --client-ca");
        assert!(fleet(&["--client-cert-dir", "d", "--client-ca", "c", "--client-ca-key", "k"]).is_err());
        let t = fleet(&["--ca-file", "s.pem", "--client-ca", "c.pem", "--client-ca-key", "c.key"]).unwrap();
        assert_eq!(t.tls().ca_file.as_deref(), Some(std::path::Path::new("s.pem")));
        assert_eq!(t.tls().tenant, "bench");
    }

    #[test]
    fn credentials_file_excludes_a_shared_password() {
        let r = Cli::try_parse_from(["ocpp-bench", "events", "--credentials", "f.csv", "--password", "x"]);
        assert!(r.is_err());
    }
}
