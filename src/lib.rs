//! ocpp-css: an OCPP Central System offered as a service.
//!
//! - [`ocpp`]: protocol code without actors — OCPP-J framing, one declaration per action and version, OCA
//!   schema validation, one handler per action.
//! - [`actors`]: the `StationSession` actor per connection, the `StationRegistry`, and the per-tenant
//!   `AccountActor` with its `AccountRegistry`.
//! - [`ws`]: the WebSocket endpoint `/ocpp/{tenant}/{station_id}`: subprotocol, Basic auth, session start.
//! - [`api`]: the multi-tenant REST API under `/api/v1`, its errors and OpenAPI document.
//! - [`store`]: the system of record behind the `Store` trait; [`store::SledStore`] is the embedded default,
//!   [`store::RedisStore`] the shared store of a cluster, [`store::ClusterStore`] a cluster node's sled
//!   write-ahead log in front of it.
//! - [`cluster`]: cluster mode: station presence, command routing and duplicate connections across
//!   nodes through Redis.
//! - [`model`]: the records kept.
//! - [`auth`]: password hashing and tokens; [`login`]: sign-in failure limits, new-location
//!   challenges and the notifier of their one-time codes.
//! - [`limits`]: bounds on what one station, tenant or stranger can consume (frame sizes,
//!   connections, authentication cost, quotas, log volume), each with its counter.
//! - [`tls`]: the TLS listener's configuration and station client certificates (security profiles 2, 3).
//! - [`config`]: layered settings; [`startup`]: builds and binds the application; [`telemetry`]: logs;
//!   [`metrics`]: metric names and the Prometheus recorder.

pub mod actors;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod limits;
pub mod login;
pub mod metrics;
pub mod model;
pub mod ocpp;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod ws;
