//! The actors: one [`StationSession`] per station connection, found through the
//! [`StationRegistry`]; one [`AccountActor`] per tenant, started on demand by the [`AccountRegistry`].
//!
//! This file only declares and re-exports: the session's parts live in [`session`], the identities
//! they share in [`station`].

pub mod account;
pub mod session;
pub mod station;
pub mod station_registry;
pub mod tracker;

pub use account::{AccountActor, AccountRegistry};
pub use session::StationSession;
pub use station::{next_session_id, DisconnectReason, SessionId, StationKey};
pub use station_registry::StationRegistry;
