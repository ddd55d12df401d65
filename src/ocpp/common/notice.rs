//! What a handled CALL asks of its session beyond the answer, whatever the version: a change to
//! the tenant's live view, or a command to send the station once the answer is out.

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
    /// The station CA signed the station's CSR: the session sends it the certificate chain
    /// (CertificateSigned) after the answer.
    SendCertificate {
        chain: String,
        serial: String,
    },
}

impl Notice {
    /// Whether the tenant's actor learns from it what nothing else shows: the open transactions.
    /// A boot or a connector status is in the station's record, with the time it was received,
    /// by the time the notice would arrive; it proves the station alive and no more.
    pub fn changes_live_view(&self) -> bool {
        matches!(self, Notice::TransactionStarted { .. } | Notice::TransactionStopped { .. })
    }

    /// Whether the handler recorded, with its change of the station's record, the time the message
    /// was handled as the station's last sight ([`crate::model::StationChange::Booted`] and
    /// `Connector` do): until the station is heard again, its record's `last_seen` is current.
    pub fn recorded_sight(&self) -> bool {
        matches!(self, Notice::Booted { .. } | Notice::ConnectorStatus { .. })
    }
}
