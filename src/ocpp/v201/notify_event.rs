//! NotifyEvent (2.0.1): monitoring events. Each is kept as a station event, and its actual value
//! updates the device model's Actual attribute of the variable it is about.

use super::notify_report::{attribute, Component, Variable};
use crate::ocpp::common::events::record_event;
use crate::ocpp::context::StationContext;
use crate::ocpp::handler::{Handled, HandlerError};
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
    let variables: Vec<_> = req
        .event_data
        .iter()
        .map(|e| {
            let mut v = attribute(&e.component, &e.variable, None, now);
            v.value = Some(e.actual_value.clone());
            v
        })
        .collect();
    // The device model a station reports counts against its event quota: the names are its own.
    if !ctx.charge_event(&variables) {
        return Err(crate::ocpp::common::events::over_event_quota());
    }
    ctx.store.put_variables(ctx.account_id, ctx.station_id, &variables).await?;
    for e in &req.event_data {
        let payload = serde_json::json!({
            "eventId": e.event_id, "seqNo": req.seq_no, "timestamp": e.timestamp, "actualValue": e.actual_value,
            "component": e.component.name, "variable": e.variable.name,
        });
        record_event(ctx, "NotifyEvent", &payload).await?;
    }
    Ok(Handled::reply(Response {}))
}
