//! NotifyReport (2.0.1): part of a device-model report asked by GetBaseReport or GetReport. Every
//! variable attribute reported is kept, visible through `GET /api/v1/stations/{id}/variables`.

use crate::model::DeviceVariable;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvseRef {
    pub id: u32,
    pub connector_id: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    pub name: String,
    pub instance: Option<String>,
    pub evse: Option<EvseRef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Variable {
    pub name: String,
    pub instance: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariableAttribute {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub value: Option<String>,
    pub mutability: Option<String>,
    pub persistent: Option<bool>,
    pub constant: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportData {
    pub component: Component,
    pub variable: Variable,
    pub variable_attribute: Vec<VariableAttribute>,
    pub variable_characteristics: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub request_id: i64,
    pub generated_at: DateTime<Utc>,
    pub seq_no: u64,
    #[serde(default)]
    pub tbc: bool,
    #[serde(default)]
    pub report_data: Vec<ReportData>,
}

#[derive(Debug, Serialize)]
pub struct Response {}

/// A device-model attribute as stored, for a component and variable.
pub fn attribute(component: &Component, variable: &Variable, kind: Option<&str>, now: DateTime<Utc>) -> DeviceVariable {
    DeviceVariable {
        component: component.name.clone(),
        component_instance: component.instance.clone(),
        evse_id: component.evse.as_ref().map(|e| e.id),
        connector_id: component.evse.as_ref().and_then(|e| e.connector_id),
        variable: variable.name.clone(),
        variable_instance: variable.instance.clone(),
        attribute_type: kind.unwrap_or("Actual").to_string(),
        value: None,
        mutability: None,
        persistent: None,
        constant: None,
        characteristics: None,
        updated_at: now,
    }
}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let now = Utc::now();
    let mut variables = Vec::new();
    for data in &req.report_data {
        for attr in &data.variable_attribute {
            let mut v = attribute(&data.component, &data.variable, attr.kind.as_deref(), now);
            v.value = attr.value.clone();
            v.mutability = attr.mutability.clone();
            v.persistent = attr.persistent;
            v.constant = attr.constant;
            v.characteristics = data.variable_characteristics.clone();
            variables.push(v);
        }
    }
    tracing::debug!(station = ctx.station_id.as_str(), request_id = req.request_id, seq_no = req.seq_no, tbc = req.tbc, generated_at = %req.generated_at, variables = variables.len(), "device model report part");
    // The device model a station reports counts against its event quota: the names are its own.
    if !ctx.charge_event(&variables) {
        return Err(crate::ocpp::common::events::over_event_quota());
    }
    ctx.store.put_variables(ctx.account_id, ctx.station_id, &variables).await?;
    Ok(Handled::reply(Response {}))
}

#[cfg(test)]
mod tests {
    use crate::ocpp::common::test_support::{Fixture, ACCOUNT, STATION};
    use crate::ocpp::Version;
    use crate::store::prelude::*;
    use serde_json::json;

    #[tokio::test]
    async fn reported_variables_are_kept_and_replaced_by_later_reports() {
        let f = Fixture::with_version(Version::V201).await;
        let report = |value: &str| {
            json!({"requestId": 7, "generatedAt": "2026-11-25T10:00:00Z", "seqNo": 0, "reportData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
             "variableAttribute": [{"type": "Actual", "value": value, "mutability": "ReadWrite"}],
             "variableCharacteristics": {"unit": "s", "dataType": "integer", "supportsMonitoring": false}},
            {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"},
             "variableAttribute": [{"value": "22000", "mutability": "ReadOnly"}, {"type": "MaxSet", "value": "22000"}]}]})
        };
        f.ok("NotifyReport", report("300")).await;
        f.ok("NotifyReport", report("60")).await;
        let vars = f.store.variables(&ACCOUNT.into(), &STATION.into()).await.unwrap();
        assert_eq!(vars.len(), 3);
        let hb = vars.iter().find(|v| v.variable == "HeartbeatInterval").unwrap();
        assert_eq!((hb.value.as_deref(), hb.mutability.as_deref()), (Some("60"), Some("ReadWrite")));
        assert_eq!(hb.characteristics.as_ref().unwrap()["unit"], "s");
        let power: Vec<_> = vars.iter().filter(|v| v.variable == "Power").collect();
        assert!(power.iter().all(|v| v.evse_id == Some(1)));
        assert_eq!(power.iter().filter(|v| v.attribute_type == "MaxSet").count(), 1);
    }
}
