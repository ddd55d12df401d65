//! Integration tests: the application on port 0 with a temporary data dir, driven through its HTTP
//! API and real OCPP-J WebSocket clients.

mod accounts;
mod cluster;
mod commands;
mod config;
mod credentials;
mod dashboards;
mod durability;
pub mod events;
mod frames;
mod helpers;
mod limits;
mod observability;
mod ocpp201;
mod ocpp_flow;
mod paging;
mod privacy;
mod raw;
mod redis;
mod restart;
mod retention;
mod station_auth;
mod store_contract;
mod tenancy;
mod tls;
