//! NotifyEvent (2.0.1): monitoring events. Each is kept as a station event, and its actual value
//! updates the device model's Actual attribute of the variable it is about.

use super::notify_report::{attribute, Component, Variable};
use crate::model::DeviceVariable;
use crate::ocpp::common::events::record_event;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    pub event_id: i64,
    pub timestamp: DateTime<Utc>,
    pub actual_value: String,
    pub component: Component,
    pub variable: Variable,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub seq_no: u64,
    pub event_data: Vec<EventData>,
}

#[derive(Debug, Serialize)]
pub struct Response {}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let now = Utc::now();
    let seen: Vec<DeviceVariable> = req
        .event_data
        .iter()
        .map(|e| {
            let mut v = attribute(&e.component, &e.variable, None, now);
            v.value = Some(e.actual_value.clone());
            v
        })
        .collect();
    // The device model a station reports counts against its event quota: the names are its own.
    // What an event adds is its value; what the report said of the variable was counted then.
    if !ctx.charge_event(&seen) {
        return Err(crate::ocpp::common::events::over_event_quota());
    }
    // An event changes the value of an attribute the station may have reported, not what the report
    // said of it ([`crate::model::DeviceVariable::observed`]).
    ctx.store.observe_variables(ctx.account_id, ctx.station_id, &seen).await?;
    for e in &req.event_data {
        let payload = serde_json::json!({
            "eventId": e.event_id, "seqNo": req.seq_no, "timestamp": e.timestamp, "actualValue": e.actual_value,
            "component": e.component.name, "variable": e.variable.name,
        });
        record_event(ctx, "NotifyEvent", &payload).await?;
    }
    Ok(Handled::reply(Response {}))
}

#[cfg(test)]
mod tests {
    use crate::ocpp::common::test_support::{Fixture, ACCOUNT, STATION};
    use crate::ocpp::Version;
    use crate::store::prelude::*;
    use serde_json::json;

    fn event(variable: &str, value: &str) -> serde_json::Value {
        json!({"generatedAt": "2026-11-25T10:05:00Z", "seqNo": 0, "eventData": [{
            "eventId": 1, "timestamp": "2026-11-25T10:05:00Z", "trigger": "Delta", "actualValue": value,
            "eventNotificationType": "HardWiredNotification",
            "component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": variable}}]})
    }

    #[tokio::test]
    async fn an_event_changes_the_reported_value_and_keeps_what_the_report_said_of_the_variable() {
        let f = Fixture::with_version(Version::V201).await;
        let report = json!({"requestId": 1, "generatedAt": "2026-11-25T10:00:00Z", "seqNo": 0, "reportData": [
            {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"},
             "variableAttribute": [{"type": "Actual", "value": "0", "mutability": "ReadOnly", "persistent": false, "constant": false},
                                   {"type": "MaxSet", "value": "22000", "mutability": "ReadWrite"}],
             "variableCharacteristics": {"unit": "W", "dataType": "decimal", "supportsMonitoring": true}}]});
        f.ok("NotifyReport", report).await;
        let reported = f.store.variables(&ACCOUNT.into(), &STATION.into()).await.unwrap();
        let before = reported.iter().find(|v| v.attribute_type == "Actual").unwrap().clone();

        f.ok("NotifyEvent", event("Power", "7400")).await;
        let vars = f.store.variables(&ACCOUNT.into(), &STATION.into()).await.unwrap();
        assert_eq!(vars.len(), 2, "{vars:?}");
        let actual = vars.iter().find(|v| v.attribute_type == "Actual").unwrap();
        assert_eq!(actual.value.as_deref(), Some("7400"));
        assert!(actual.updated_at >= before.updated_at);
        assert_eq!(
            (actual.mutability.as_deref(), actual.persistent, actual.constant),
            (Some("ReadOnly"), Some(false), Some(false))
        );
        assert_eq!(actual.characteristics, before.characteristics);
        assert_eq!(actual.characteristics.as_ref().unwrap()["unit"], "W");
        let max = vars.iter().find(|v| v.attribute_type == "MaxSet").unwrap();
        assert_eq!((max.value.as_deref(), max.mutability.as_deref()), (Some("22000"), Some("ReadWrite")));
    }

    #[tokio::test]
    async fn an_event_about_a_variable_never_reported_adds_its_actual_value() {
        let f = Fixture::with_version(Version::V201).await;
        f.ok("NotifyEvent", event("Voltage", "230")).await;
        let vars = f.store.variables(&ACCOUNT.into(), &STATION.into()).await.unwrap();
        assert_eq!(vars.len(), 1);
        let v = &vars[0];
        assert_eq!(
            (v.variable.as_str(), v.attribute_type.as_str(), v.value.as_deref()),
            ("Voltage", "Actual", Some("230"))
        );
        assert_eq!((v.evse_id, v.mutability.as_deref(), v.characteristics.as_ref()), (Some(1), None, None));
        assert_eq!(f.store.events(&ACCOUNT.into(), &STATION.into()).await.unwrap()[0].action, "NotifyEvent");
    }
}
