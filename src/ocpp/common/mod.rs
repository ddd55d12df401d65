//! What the handlers of both versions share: the live-view [`notice::Notice`] a handler may produce,
//! id-tag authorisation, the record a BootNotification keeps, station events within their quota,
//! and the handlers of the messages that are the same in both (Heartbeat, firmware status) or that
//! differ only in their wording (DataTransfer); and the test fixture every handler test uses.

pub mod boot;
pub mod data_transfer;
pub mod events;
pub mod firmware_status;
pub mod heartbeat;
pub mod id_tag;
pub mod notice;
pub mod sign_certificate;
#[cfg(test)]
pub(crate) mod test_support;
