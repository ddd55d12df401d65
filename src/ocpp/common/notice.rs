//! The change to the tenant's live view a handled CALL may cause, whatever the version.

use crate::model::Registration;

/// A change to the tenant's live view caused by a handled CALL.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Booted {
        registration: Registration,
    },
    ConnectorStatus {
        connector_id: u32,
        status: String,
    },
    /// `connector_id` is the 1.6 connector, or the 2.0.1 EVSE.
    TransactionStarted {
        transaction_id: i32,
        connector_id: u32,
    },
    TransactionStopped {
        transaction_id: i32,
    },
}
