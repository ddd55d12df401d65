//! Cluster mode: several nodes behind one load balancer, sharing one Redis. Two parts over one
//! connection ([`RedisLink`]):
//!
//! - [`presence`]: which node (and which session on it) holds each station, with a TTL, refreshed
//!   in pipelined batches; the newer connection wins across nodes.
//! - [`bus`]: what nodes tell each other over pub/sub: commands for a station held elsewhere and
//!   their answers, closing a station or an account's sessions, nudging queued delivery. What the
//!   bus receives it hands to this node's [`LocalNode`]: the cluster never sends actor messages.
//!
//! Losing Redis degrades presence and routing only: connected stations keep being served.
//! The account ids in keys are generated (no `:`), so a key names one station whatever its id holds.

pub mod bus;
pub mod link;
pub mod presence;

pub use bus::Bus;
pub use link::{ClusterError, LocalNode, RedisLink};
pub use presence::{Presence, PresenceTable};
