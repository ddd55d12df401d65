//! ocpp-css: an OCPP Central System offered as a service.
//!
//! - [`ocpp`]: protocol code without actors — OCPP-J framing, one declaration per action and version, OCA
//!   schema validation, one handler per action.
//! - [`actors`]: the `StationSession` actor per connection, the `StationRegistry`, and the per-tenant
//!   `AccountActor` with its `AccountRegistry`.
//! - [`ws`]: the WebSocket endpoint `/ocpp/{tenant}/{station_id}`: subprotocol, Basic auth, session start.
//! - [`api`]: the multi-tenant REST API under `/api/v1`, its errors and OpenAPI document.
//! - [`store`]: the system of record, one trait per caller: `StationStore` (the station path, flushed
//!   before each acknowledgement) and `AccountStore` (the API, durable when a call returns);
//!   [`store::SledStore`] is both on one node, [`store::RedisStore`] the shared store of a cluster and its
//!   account store, [`store::NodeLog`] a cluster node's station store: its sled write-ahead log in
//!   front of Redis.
//! - [`fleet`]: the one way to reach a station wherever it is connected (send a command, close,
//!   close an account, nudge queued delivery, locate), and account erasure.
//! - [`cluster`]: cluster mode: station presence and the bus between nodes (command routing,
//!   duplicate connections) through Redis.
//! - [`model`]: the records kept; [`ids`]: the `AccountId` and `StationId` they and the stores are keyed by.
//! - [`auth`]: password hashing and tokens; [`login`]: sign-in failure limits, new-location
//!   challenges and the notifier of their one-time codes.
//! - [`limits`]: bounds on what one station, tenant or stranger can consume (frame sizes,
//!   connections, authentication cost, quotas, log volume), each with its counter.
//! - [`tls`]: the TLS listener's configuration and station client certificates (security profiles 2, 3).
//! - [`webhooks`]: pushing a tenant's events to its URLs: signing, destination rules (no private
//!   addresses), retry delays and the HTTP sender.
//! - [`config`]: layered settings; [`startup`]: builds and binds the application into the [`state`]
//!   every handler shares; [`telemetry`]: logs;
//!   [`metrics`]: metric names and the Prometheus recorder.

pub mod actors;
pub mod api;
pub mod auth;
pub mod ca;
pub mod cluster;
pub mod config;
pub mod fleet;
pub mod ids;
pub mod limits;
pub mod login;
pub mod metrics;
pub mod model;
pub mod ocpp;
pub mod retention;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod webhooks;
pub mod ws;
