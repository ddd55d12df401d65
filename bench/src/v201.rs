//! OCPP 2.0.1: which stations speak it (`--protocol`), the payloads a 2.0.1 bench station sends, and
//! the answers a simulated station gives to the central system's calls (either version).

use serde_json::{json, Value};

/// The OCPP version one station speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    V16,
    V201,
}

impl Protocol {
    /// The WebSocket subprotocol offered (and required back).
    pub fn subprotocol(self) -> &'static str {
        match self {
            Protocol::V16 => "ocpp1.6",
            Protocol::V201 => "ocpp2.0.1",
        }
    }
}

/// `--protocol` as parsed: the percentage of stations that speak 2.0.1 (the rest speak 1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProtocolMix {
    pub v201_percent: u32,
}

impl ProtocolMix {
    /// Parses `1.6`, `2.0.1`, `mix` (half each) or shares in percent summing to 100, e.g.
    /// `1.6=70,2.0.1=30` (either order; a version left out has 0).
    pub fn parse(s: &str) -> Result<ProtocolMix, String> {
        let s = s.trim();
        match s {
            "1.6" => return Ok(ProtocolMix { v201_percent: 0 }),
            "2.0.1" => return Ok(ProtocolMix { v201_percent: 100 }),
            "mix" => return Ok(ProtocolMix { v201_percent: 50 }),
            _ => {}
        }
        if !s.contains('=') {
            return Err(format!("{s:?}: expected 1.6, 2.0.1, mix, or shares in percent such as 1.6=70,2.0.1=30"));
        }
        let (mut v16, mut v201) = (None, None);
        for part in s.split(',') {
            let (name, pct) =
                part.split_once('=').ok_or_else(|| format!("{part:?}: a share is VERSION=PERCENT, e.g. 2.0.1=30"))?;
            let pct: u32 = pct
                .trim()
                .parse()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("{part:?}: the share must be a whole percentage 0..=100"))?;
            let slot = match name.trim() {
                "1.6" => &mut v16,
                "2.0.1" => &mut v201,
                other => return Err(format!("{other:?}: unknown OCPP version (1.6 or 2.0.1)")),
            };
            if slot.replace(pct).is_some() {
                return Err(format!("{s:?}: version {} is given twice", name.trim()));
            }
        }
        let (a, b) = (v16.unwrap_or(0), v201.unwrap_or(0));
        if a + b != 100 {
            return Err(format!("{s:?}: the shares add up to {}%, not 100%", a + b));
        }
        Ok(ProtocolMix { v201_percent: b })
    }

    /// Station `index`'s version (from 0): the 2.0.1 stations are spread evenly over the fleet, so
    /// that any prefix of it (a ramp under way) has about the asked share.
    pub fn of(self, index: u64) -> Protocol {
        let p = u64::from(self.v201_percent);
        if (index + 1) * p / 100 > index * p / 100 {
            Protocol::V201
        } else {
            Protocol::V16
        }
    }

    /// How many of the first `n` stations speak 2.0.1.
    pub fn count_v201(self, n: u64) -> u64 {
        n * u64::from(self.v201_percent) / 100
    }

    /// The canonical spelling, as the summary shows it.
    pub fn label(self) -> String {
        match self.v201_percent {
            0 => "1.6".into(),
            100 => "2.0.1".into(),
            p => format!("1.6={},2.0.1={p}", 100 - p),
        }
    }
}

pub fn boot_notification() -> Value {
    json!({
        "reason": "PowerUp",
        "chargingStation": {
            "model": "Bench-1",
            "vendorName": "ocpp-bench",
            "firmwareVersion": env!("CARGO_PKG_VERSION"),
        },
    })
}

/// An EVSE's connector after the boot: Available.
pub fn status_available(evse: u32, connector: u32, timestamp: &str) -> Value {
    json!({"timestamp": timestamp, "connectorStatus": "Available", "evseId": evse, "connectorId": connector})
}

fn energy(energy_wh: i64, context: &str, timestamp: &str) -> Value {
    json!([{
        "timestamp": timestamp,
        "sampledValue": [{
            "value": energy_wh,
            "context": context,
            "measurand": "Energy.Active.Import.Register",
            "location": "Outlet",
            "unitOfMeasure": {"unit": "Wh"},
        }],
    }])
}

fn id_token(tag: &str) -> Value {
    json!({"idToken": tag, "type": "ISO14443"})
}

/// A transaction's id as a 2.0.1 station names it: unique per run (`run` is the run's start in
/// milliseconds), station (`index`) and transaction number; at most 32 characters (the schema allows 36).
pub fn transaction_id(run: u64, index: u32, n: u32) -> String {
    format!("{:x}-{index:x}-{n:x}", run & 0xffff_ffff_ffff)
}

/// The transaction's seqNo-th event: 0 is Started (authorized with `tag`), 1..=`updates` Updated with a
/// periodic reading, `updates + 1` Ended.
pub fn transaction_event(
    tx_id: &str,
    seq_no: u32,
    updates: u32,
    evse: u32,
    tag: &str,
    energy_wh: i64,
    timestamp: &str,
) -> Value {
    let (event_type, trigger, context) = match seq_no {
        0 => ("Started", "Authorized", "Transaction.Begin"),
        s if s <= updates => ("Updated", "MeterValuePeriodic", "Sample.Periodic"),
        _ => ("Ended", "StopAuthorized", "Transaction.End"),
    };
    let mut info = json!({"transactionId": tx_id});
    if event_type == "Ended" {
        info["stoppedReason"] = json!("Local");
    } else {
        info["chargingState"] = json!("Charging");
    }
    let mut v = json!({
        "eventType": event_type,
        "timestamp": timestamp,
        "triggerReason": trigger,
        "seqNo": seq_no,
        "transactionInfo": info,
        "meterValue": energy(energy_wh, context, timestamp),
    });
    if event_type != "Updated" {
        v["idToken"] = id_token(tag);
    }
    if event_type == "Started" {
        v["evse"] = json!({"id": evse, "connectorId": 1});
    }
    v
}

/// MeterValues outside a transaction event.
#[cfg(test)]
pub fn meter_values(evse: u32, energy_wh: i64, timestamp: &str) -> Value {
    json!({"evseId": evse, "meterValue": energy(energy_wh, "Sample.Periodic", timestamp)})
}

/// The `n`-th StatusNotification of EVSE 1 (`events --message status`): Occupied and Available in turn.
pub fn status_notification(n: u64, timestamp: &str) -> Value {
    let status = if n.is_multiple_of(2) { "Occupied" } else { "Available" };
    json!({"timestamp": timestamp, "connectorStatus": status, "evseId": 1, "connectorId": 1})
}

/// What a value of the station's device model reads, for GetVariables.
fn variable_value(component: &str, variable: &str) -> &'static str {
    match (component, variable) {
        ("OCPPCommCtrlr", "HeartbeatInterval") => "300",
        ("OCPPCommCtrlr", "NetworkProfileConnectionAttempts") => "3",
        ("OCPPCommCtrlr", "OfflineThreshold") => "60",
        ("SampledDataCtrlr", "TxUpdatedInterval") => "60",
        ("SampledDataCtrlr", "TxUpdatedMeasurands") => "Energy.Active.Import.Register",
        ("AuthCtrlr", "AuthorizeRemoteStart") => "true",
        ("AuthCtrlr", "Enabled") => "true",
        ("ChargingStation", "Model") => "Bench-1",
        ("ChargingStation", "VendorName") => "ocpp-bench",
        ("ChargingStation", "AvailabilityState") | ("EVSE", "AvailabilityState") => "Available",
        _ => "0",
    }
}

/// The answer of a simulated station to the central system's CALL `action` with `payload`: a
/// plausible, schema-valid acceptance for the common commands, `{"status": "Accepted"}` otherwise.
pub fn answer(protocol: Protocol, action: &str, payload: &Value) -> Value {
    let accepted = json!({"status": "Accepted"});
    match (protocol, action) {
        (Protocol::V201, "GetVariables") => {
            let results: Vec<Value> = payload["getVariableData"]
                .as_array()
                .map(|data| {
                    data.iter()
                        .map(|d| {
                            let component = d["component"]["name"].as_str().unwrap_or("");
                            let variable = d["variable"]["name"].as_str().unwrap_or("");
                            let mut r = json!({
                                "attributeStatus": "Accepted",
                                "attributeValue": variable_value(component, variable),
                                "component": d["component"].clone(),
                                "variable": d["variable"].clone(),
                            });
                            if let Some(t) = d.get("attributeType") {
                                r["attributeType"] = t.clone();
                            }
                            r
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({"getVariableResult": results})
        }
        (Protocol::V201, "SetVariables") => {
            let results: Vec<Value> = payload["setVariableData"]
                .as_array()
                .map(|data| {
                    data.iter()
                        .map(|d| {
                            json!({"attributeStatus": "Accepted", "component": d["component"].clone(),
                                   "variable": d["variable"].clone()})
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({"setVariableResult": results})
        }
        (Protocol::V16, "GetLocalListVersion") => json!({"listVersion": 0}),
        (Protocol::V201, "GetLocalListVersion") => json!({"versionNumber": 0}),
        (Protocol::V201, "SetVariableMonitoring") => {
            let results: Vec<Value> = payload["setMonitoringData"]
                .as_array()
                .map(|data| {
                    data.iter()
                        .zip(1u64..)
                        .map(|(d, n)| {
                            json!({"id": d.get("id").cloned().unwrap_or(json!(n)), "status": "Accepted",
                                   "type": d.get("type").cloned().unwrap_or(json!("Delta")),
                                   "severity": d.get("severity").cloned().unwrap_or(json!(0)),
                                   "component": d["component"].clone(), "variable": d["variable"].clone()})
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({"setMonitoringResult": results})
        }
        (Protocol::V201, "ClearVariableMonitoring") => {
            let results: Vec<Value> = payload["id"]
                .as_array()
                .map(|ids| ids.iter().map(|id| json!({"status": "Accepted", "id": id})).collect())
                .unwrap_or_default();
            json!({"clearMonitoringResult": results})
        }
        (Protocol::V201, "CostUpdated") | (Protocol::V16, "UpdateFirmware") => json!({}),
        (_, "UnlockConnector") => json!({"status": "Unlocked"}),
        (Protocol::V201, "UnpublishFirmware") => json!({"status": "Unpublished"}),
        (Protocol::V201, "GetTransactionStatus") => json!({"messagesInQueue": false}),
        (Protocol::V16, "GetConfiguration") => json!({"configurationKey": []}),
        (Protocol::V16, "GetDiagnostics") => json!({}),
        _ => accepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_syntax() {
        assert_eq!(ProtocolMix::parse("1.6"), Ok(ProtocolMix { v201_percent: 0 }));
        assert_eq!(ProtocolMix::parse("2.0.1"), Ok(ProtocolMix { v201_percent: 100 }));
        assert_eq!(ProtocolMix::parse("mix"), Ok(ProtocolMix { v201_percent: 50 }));
        assert_eq!(ProtocolMix::parse("1.6=70,2.0.1=30"), Ok(ProtocolMix { v201_percent: 30 }));
        assert_eq!(ProtocolMix::parse("2.0.1=25, 1.6=75"), Ok(ProtocolMix { v201_percent: 25 }));
        assert_eq!(ProtocolMix::parse("2.0.1=100"), Ok(ProtocolMix { v201_percent: 100 }));
        for (bad, says) in [
            ("2.0", "expected 1.6, 2.0.1, mix"),
            ("1.6=70,2.0.1=20", "add up to 90%"),
            ("1.6=70,2.1=30", "unknown OCPP version"),
            ("1.6=x,2.0.1=30", "whole percentage"),
            ("1.6=170", "whole percentage"),
            ("1.6=50,1.6=50", "given twice"),
            ("1.6=50,2.0.1", "VERSION=PERCENT"),
        ] {
            let err = ProtocolMix::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert_eq!(ProtocolMix::parse("1.6=70,2.0.1=30").unwrap().label(), "1.6=70,2.0.1=30");
        assert_eq!(ProtocolMix::parse("2.0.1").unwrap().label(), "2.0.1");
    }

    #[test]
    fn shares_are_spread_over_the_fleet() {
        let mix = ProtocolMix { v201_percent: 30 };
        let v201 = (0..1000).filter(|&i| mix.of(i) == Protocol::V201).count();
        assert_eq!(v201 as u64, mix.count_v201(1000));
        assert_eq!(v201, 300);
        let first_ten = (0..10).filter(|&i| mix.of(i) == Protocol::V201).count();
        assert_eq!(first_ten, 3);
        assert!((0..50).all(|i| ProtocolMix { v201_percent: 100 }.of(i) == Protocol::V201));
        assert!((0..50).all(|i| ProtocolMix::default().of(i) == Protocol::V16));
        assert_eq!(ProtocolMix { v201_percent: 50 }.count_v201(7), 3);
        assert_eq!((0..7).filter(|&i| ProtocolMix { v201_percent: 50 }.of(i) == Protocol::V201).count(), 3);
    }

    #[test]
    fn transaction_ids_are_unique_and_short() {
        let a = transaction_id(1_764_658_800_123, 99_999, 12);
        assert!(a.len() <= 36, "{a}");
        assert_ne!(a, transaction_id(1_764_658_800_123, 99_999, 13));
        assert_ne!(a, transaction_id(1_764_658_800_124, 99_999, 12));
        assert!(transaction_id(u64::MAX, u32::MAX, u32::MAX).len() <= 36);
    }

    #[test]
    fn events_follow_the_transaction() {
        let t = "2026-12-02T07:00:00.000Z";
        let s = transaction_event("tx", 0, 2, 3, "TAG", 1000, t);
        assert_eq!((s["eventType"].as_str(), s["seqNo"].as_u64()), (Some("Started"), Some(0)));
        assert_eq!(s["evse"], json!({"id": 3, "connectorId": 1}));
        assert_eq!(s["idToken"], json!({"idToken": "TAG", "type": "ISO14443"}));
        let u = transaction_event("tx", 2, 2, 3, "TAG", 1200, t);
        assert_eq!(u["eventType"], "Updated");
        assert_eq!(u["meterValue"][0]["sampledValue"][0]["value"], 1200);
        assert!(u.get("idToken").is_none() && u.get("evse").is_none());
        let e = transaction_event("tx", 3, 2, 3, "TAG", 1300, t);
        assert_eq!(
            (e["eventType"].as_str(), e["transactionInfo"]["stoppedReason"].as_str()),
            (Some("Ended"), Some("Local"))
        );
    }

    #[test]
    fn answers_to_the_central_system() {
        let get = json!({"getVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
            {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}, "attributeType": "Target"}]});
        let a = answer(Protocol::V201, "GetVariables", &get);
        let r = &a["getVariableResult"];
        assert_eq!(
            (r[0]["attributeStatus"].as_str(), r[0]["attributeValue"].as_str()),
            (Some("Accepted"), Some("300"))
        );
        assert_eq!(
            (r[1]["component"]["evse"]["id"].as_u64(), r[1]["attributeType"].as_str()),
            (Some(1), Some("Target"))
        );
        // Malformed input gives an empty (still well-formed) answer, no panic.
        assert_eq!(answer(Protocol::V201, "GetVariables", &json!("x")), json!({"getVariableResult": []}));
        assert_eq!(answer(Protocol::V201, "Reset", &json!({"type": "Immediate"})), json!({"status": "Accepted"}));
        assert_eq!(answer(Protocol::V16, "GetLocalListVersion", &json!({})), json!({"listVersion": 0}));
        assert_eq!(answer(Protocol::V201, "GetLocalListVersion", &json!({})), json!({"versionNumber": 0}));
        assert_eq!(answer(Protocol::V16, "RemoteStartTransaction", &json!({})), json!({"status": "Accepted"}));
        let clear = answer(Protocol::V201, "ClearVariableMonitoring", &json!({"id": [3, 4]}));
        assert_eq!(clear["clearMonitoringResult"][1], json!({"status": "Accepted", "id": 4}));
    }
}

/// The builders of both versions against the vendored OCA schemas (`schemas/` at the repository root).
#[cfg(test)]
mod schema_tests {
    use super::*;
    use crate::messages;

    const TS: &str = "2026-12-02T07:00:00.123Z";

    fn schema(version: &str, file: &str) -> jsonschema::Validator {
        let path = format!("{}/../schemas/{version}/{file}.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let schema: Value = serde_json::from_str(&text).unwrap();
        jsonschema::options().should_validate_formats(true).build(&schema).unwrap()
    }

    fn errors(version: &str, file: &str, payload: &Value) -> Vec<String> {
        let v = schema(version, file);
        v.iter_errors(payload)
            .map(|e| format!("{version}/{file} rejects {payload}: {e} at {}", e.instance_path))
            .collect()
    }

    #[track_caller]
    fn valid(version: &str, file: &str, payload: &Value) {
        let errors = errors(version, file, payload);
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn the_201_payloads_match_their_schemas() {
        valid("v201", "BootNotificationRequest", &boot_notification());
        valid("v201", "StatusNotificationRequest", &status_available(3, 1, TS));
        valid("v201", "HeartbeatRequest", &crate::messages::heartbeat());
        valid("v201", "MeterValuesRequest", &meter_values(1, 1234, TS));
        valid("v201", "StatusNotificationRequest", &status_notification(0, TS));
        valid("v201", "StatusNotificationRequest", &status_notification(1, TS));
        let id = transaction_id(1_764_658_800_123, 4_000_000_000, u32::MAX);
        for seq in 0..=4 {
            valid("v201", "TransactionEventRequest", &transaction_event(&id, seq, 3, 2, "BENCH-TAG", 1000, TS));
        }
    }

    #[test]
    fn the_16_payloads_match_their_schemas() {
        valid("v16", "BootNotification", &messages::boot_notification());
        valid("v16", "StatusNotification", &messages::status_available(0, TS));
        valid("v16", "StatusNotification", &messages::status_notification(1, TS));
        valid("v16", "Heartbeat", &messages::heartbeat());
        valid("v16", "StartTransaction", &messages::start_transaction(1, "BENCH-TAG", 100, TS));
        valid("v16", "MeterValues", &messages::meter_values(1, 7, 200, TS));
        valid("v16", "StopTransaction", &messages::stop_transaction(7, "BENCH-TAG", 300, TS));
    }

    /// Every call a central system may make gets an answer its response schema accepts.
    #[test]
    fn every_central_system_call_gets_a_valid_answer() {
        let v201 = "CancelReservation CertificateSigned ChangeAvailability ClearCache ClearChargingProfile \
            ClearDisplayMessage ClearVariableMonitoring CostUpdated CustomerInformation DataTransfer DeleteCertificate \
            GetBaseReport GetChargingProfiles GetCompositeSchedule GetDisplayMessages GetInstalledCertificateIds \
            GetLocalListVersion GetLog GetMonitoringReport GetReport GetTransactionStatus GetVariables \
            InstallCertificate PublishFirmware RequestStartTransaction RequestStopTransaction ReserveNow Reset \
            SendLocalList SetChargingProfile SetDisplayMessage SetMonitoringBase SetMonitoringLevel \
            SetNetworkProfile SetVariableMonitoring SetVariables TriggerMessage UnlockConnector UnpublishFirmware \
            UpdateFirmware";
        let v16 = "CancelReservation CertificateSigned ChangeAvailability ChangeConfiguration ClearCache \
            ClearChargingProfile DataTransfer DeleteCertificate ExtendedTriggerMessage GetCompositeSchedule \
            GetConfiguration GetDiagnostics GetInstalledCertificateIds GetLocalListVersion GetLog InstallCertificate \
            RemoteStartTransaction RemoteStopTransaction ReserveNow Reset SendLocalList SetChargingProfile \
            SignedUpdateFirmware TriggerMessage UnlockConnector UpdateFirmware";
        let get = json!({"getVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
            {"component": {"name": "EVSE", "evse": {"id": 1, "connectorId": 1}}, "variable": {"name": "Power", "instance": "x"}, "attributeType": "Actual"}]});
        let set = json!({"setVariableData": [{"attributeValue": "60", "component": {"name": "OCPPCommCtrlr"},
            "variable": {"name": "HeartbeatInterval"}}]});
        let monitors = json!({"setMonitoringData": [{"value": 1.0, "type": "Delta", "severity": 5,
            "component": {"name": "EVSE"}, "variable": {"name": "Power"}}], "id": [3, 4]});
        let mut bad = Vec::new();
        for action in v201.split_whitespace() {
            let payload = match action {
                "GetVariables" => &get,
                "SetVariables" => &set,
                _ => &monitors,
            };
            bad.extend(errors("v201", &format!("{action}Response"), &answer(Protocol::V201, action, payload)));
        }
        for action in v16.split_whitespace() {
            bad.extend(errors("v16", &format!("{action}Response"), &answer(Protocol::V16, action, &json!({}))));
        }
        assert!(bad.is_empty(), "{bad:#?}");
    }
}
