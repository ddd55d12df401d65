//! The OCPP 1.6 payloads a bench station sends.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};

/// Timestamps of one station: wall-clock time in milliseconds, strictly increasing, so that no two
/// of its messages carry the same timestamp even when sent within one millisecond.
#[derive(Debug, Default)]
pub struct UniqueClock {
    last: Option<DateTime<Utc>>,
}

impl UniqueClock {
    pub fn next_at(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let ms = now.timestamp_millis();
        let mut t = DateTime::from_timestamp_millis(ms).unwrap_or(now);
        if let Some(last) = self.last {
            if t <= last {
                t = last + Duration::milliseconds(1);
            }
        }
        self.last = Some(t);
        t
    }

    /// The next timestamp, RFC 3339 with milliseconds (`2026-01-01T10:00:00.123Z`).
    pub fn next(&mut self) -> String {
        self.next_at(Utc::now()).to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

pub fn boot_notification() -> Value {
    json!({
        "chargePointVendor": "ocpp-bench",
        "chargePointModel": "Bench-1",
        "firmwareVersion": env!("CARGO_PKG_VERSION"),
    })
}

pub fn start_transaction(connector: u32, id_tag: &str, meter_start: i64, timestamp: &str) -> Value {
    json!({"connectorId": connector, "idTag": id_tag, "meterStart": meter_start, "timestamp": timestamp})
}

pub fn heartbeat() -> Value {
    json!({})
}

/// A connector's state after the boot: Available, no error.
pub fn status_available(connector: u32, timestamp: &str) -> Value {
    json!({"connectorId": connector, "errorCode": "NoError", "status": "Available", "timestamp": timestamp})
}

/// The end of the bench's transaction (sent after the measured window).
pub fn stop_transaction(transaction_id: i64, id_tag: &str, meter_stop: i64, timestamp: &str) -> Value {
    json!({"transactionId": transaction_id, "idTag": id_tag, "meterStop": meter_stop,
           "timestamp": timestamp, "reason": "Local"})
}

/// A periodic energy reading of the open transaction.
pub fn meter_values(connector: u32, transaction_id: i64, energy_wh: i64, timestamp: &str) -> Value {
    json!({
        "connectorId": connector,
        "transactionId": transaction_id,
        "meterValue": [{
            "timestamp": timestamp,
            "sampledValue": [{
                "value": energy_wh.to_string(),
                "context": "Sample.Periodic",
                "format": "Raw",
                "measurand": "Energy.Active.Import.Register",
                "location": "Outlet",
                "unit": "Wh",
            }],
        }],
    })
}

/// The `n`-th StatusNotification: Charging and SuspendedEV in turn (both fit an open transaction).
pub fn status_notification(n: u64, timestamp: &str) -> Value {
    let status = if n.is_multiple_of(2) { "Charging" } else { "SuspendedEV" };
    json!({"connectorId": 1, "errorCode": "NoError", "status": status, "timestamp": timestamp})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_never_repeats_or_goes_back() {
        let mut c = UniqueClock::default();
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T10:00:00.123456Z").unwrap().with_timezone(&Utc);
        let a = c.next_at(t0);
        let b = c.next_at(t0);
        let d = c.next_at(t0 - Duration::seconds(1)); // the wall clock stepped back
        let e = c.next_at(t0 + Duration::seconds(5));
        assert_eq!(a.to_rfc3339_opts(SecondsFormat::Millis, true), "2026-01-01T10:00:00.123Z");
        assert_eq!(b, a + Duration::milliseconds(1));
        assert_eq!(d, b + Duration::milliseconds(1));
        assert_eq!(e, t0 + Duration::seconds(5) - Duration::microseconds(456));
        assert!(c.next().len() == "2026-01-01T10:00:00.123Z".len());
    }

    #[test]
    fn meter_values_carry_the_transaction_and_reading() {
        let v = meter_values(1, 42, 1234, "2026-01-01T10:00:00.000Z");
        assert_eq!(v["connectorId"], 1);
        assert_eq!(v["transactionId"], 42);
        let sv = &v["meterValue"][0]["sampledValue"][0];
        assert_eq!(sv["value"], "1234");
        assert_eq!(sv["measurand"], "Energy.Active.Import.Register");
        assert_eq!(sv["unit"], "Wh");
        assert_eq!(v["meterValue"][0]["timestamp"], "2026-01-01T10:00:00.000Z");
    }

    #[test]
    fn fleet_payloads() {
        assert_eq!(heartbeat(), json!({}));
        let s = status_available(0, "t");
        assert_eq!(s, json!({"connectorId": 0, "errorCode": "NoError", "status": "Available", "timestamp": "t"}));
        assert_eq!(start_transaction(2, "TAG", 10, "t")["connectorId"], 2);
    }

    #[test]
    fn statuses_alternate() {
        assert_eq!(status_notification(0, "t")["status"], "Charging");
        assert_eq!(status_notification(1, "t")["status"], "SuspendedEV");
        assert_eq!(status_notification(2, "t")["status"], "Charging");
    }
}
