//! The station's client certificate, from its session: a certificate the station CA issued is
//! sent (CertificateSigned) once the SignCertificate that asked for it is answered, and what the
//! station answers is recorded; a certificate nearing its expiry makes the session ask the station
//! for a new CSR (`station_ca.renew_before_days`), and counts it in the expiry gauge meanwhile.

use super::messages::{SendCommand, ToSession};
use crate::actors::station::StationKey;
use crate::fleet::command::CommandError;
use crate::metrics as m;
use crate::model::{certificate_signed, events, renewal_trigger, StationChange};
use crate::ocpp::Version;
use crate::store::{StationStore, StoreResult};
use actix::Recipient;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Sends the station a command through its session's ordinary command path, and waits for the
/// answer.
async fn ask(
    session: &Recipient<ToSession>,
    action: &str,
    payload: Value,
    timeout: Duration,
) -> Result<Value, CommandError> {
    let (responder, answer) = oneshot::channel();
    let send = SendCommand { action: action.to_string(), payload, deadline: Instant::now() + timeout, responder };
    match session.send(ToSession::Command(send)).await {
        Ok(()) => answer.await.unwrap_or(Err(CommandError::NotSent)),
        Err(_) => Err(CommandError::NotSent),
    }
}

fn accepted(result: &Result<Value, CommandError>) -> Option<bool> {
    match result {
        Ok(response) => Some(response.get("status").and_then(Value::as_str) == Some("Accepted")),
        Err(CommandError::CallError { .. }) => Some(false),
        Err(_) => None,
    }
}

/// Sends the chain the station CA signed and records the station's answer on the certificate
/// (`serial`) and in the tenant's feed. No answer leaves it `issued`: a station that did not get
/// it asks again with a new CSR.
pub async fn deliver(
    store: Arc<dyn StationStore>,
    session: Recipient<ToSession>,
    key: StationKey,
    version: Version,
    chain: String,
    serial: String,
    timeout: Duration,
) -> StoreResult<()> {
    let (action, payload) = certificate_signed(version, &chain);
    let result = ask(&session, action, payload, timeout).await;
    let Some(installed) = accepted(&result) else {
        metrics::counter!(m::CERTIFICATES_DELIVERED, "outcome" => "unanswered").increment(1);
        tracing::info!(station = %key, serial, "the station did not answer CertificateSigned");
        return Ok(());
    };
    let outcome = if installed { "installed" } else { "rejected" };
    metrics::counter!(m::CERTIFICATES_DELIVERED, "outcome" => outcome).increment(1);
    tracing::info!(station = %key, serial, outcome, "certificate delivered");
    let change = StationChange::CertificateAnswered { serial: serial.clone(), installed };
    store.change_station(&key.account_id, &key.station_id, &change).await?;
    let feed = [events::certificate_changed(&key.station_id, outcome, Some(&serial), None, None)];
    store.append_feed(&key.account_id, &feed).await?;
    m::feed_emitted(&feed);
    store.flush().await
}

/// Where a connected station's certificate stands against the expiry gauge's windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expiring {
    pub in_renewal_window: bool,
    pub within_week: bool,
}

impl Expiring {
    pub fn of(expiry: Option<DateTime<Utc>>, renew_before: chrono::Duration, now: DateTime<Utc>) -> Expiring {
        match expiry {
            Some(at) => Expiring {
                in_renewal_window: at - renew_before <= now,
                within_week: at - chrono::Duration::days(7) <= now,
            },
            None => Expiring::default(),
        }
    }

    /// Moves the gauge from `self` to `new`.
    pub fn update_gauge(self, new: Expiring) {
        let step = |was: bool, is: bool, within: &'static str| match (was, is) {
            (false, true) => metrics::gauge!(m::CERTIFICATES_EXPIRING, "within" => within).increment(1.0),
            (true, false) => metrics::gauge!(m::CERTIFICATES_EXPIRING, "within" => within).decrement(1.0),
            _ => {}
        };
        step(self.in_renewal_window, new.in_renewal_window, "renewal_window");
        step(self.within_week, new.within_week, "7d");
    }
}

/// Registers the expiry gauge at zero.
pub fn register_metrics() {
    for within in ["renewal_window", "7d"] {
        metrics::gauge!(m::CERTIFICATES_EXPIRING, "within" => within).increment(0.0);
    }
    for outcome in ["installed", "rejected", "unanswered"] {
        metrics::counter!(m::CERTIFICATES_DELIVERED, "outcome" => outcome).increment(0);
        metrics::counter!(m::CERTIFICATE_RENEWALS, "result" => outcome.replace("installed", "accepted")).increment(0);
    }
}

/// Reads the station's record: where its certificate stands, and, when it is due for renewal (see
/// [`crate::model::Station::renewal_due`]), asks the station for a new CSR.
pub async fn check(
    store: Arc<dyn StationStore>,
    session: Recipient<ToSession>,
    key: StationKey,
    version: Version,
    renew_before: chrono::Duration,
    timeout: Duration,
) -> StoreResult<Expiring> {
    let Some(station) = store.station(&key.account_id, &key.station_id).await? else {
        return Ok(Expiring::default());
    };
    let now = Utc::now();
    let expiring = Expiring::of(station.certificate_expiry(), renew_before, now);
    if station.renewal_due(now, renew_before) {
        let (action, payload) = renewal_trigger(version);
        let result = ask(&session, action, payload, timeout).await;
        let label = match accepted(&result) {
            Some(true) => "accepted",
            Some(false) => "rejected",
            None => "unanswered",
        };
        metrics::counter!(m::CERTIFICATE_RENEWALS, "result" => label).increment(1);
        tracing::info!(station = %key, expires = ?station.certificate_expiry(), result = label, "certificate renewal asked for");
    }
    Ok(expiring)
}
