//! Data types several 2.0.1 messages share.

use crate::model::{MeterValue, SampledValue};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// IdTokenType.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdToken {
    pub id_token: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// EVSEType.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evse {
    pub id: u32,
    pub connector_id: Option<u32>,
}

/// UnitOfMeasureType.
#[derive(Debug, Clone, Deserialize)]
pub struct UnitOfMeasure {
    pub unit: Option<String>,
    pub multiplier: Option<i32>,
}

/// SampledValueType.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampledValue201 {
    pub value: f64,
    pub context: Option<String>,
    pub measurand: Option<String>,
    pub phase: Option<String>,
    pub location: Option<String>,
    pub unit_of_measure: Option<UnitOfMeasure>,
}

/// MeterValueType.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterValue201 {
    pub timestamp: DateTime<Utc>,
    pub sampled_value: Vec<SampledValue201>,
}

/// The register every energy figure of a transaction is read from (2.0.1's default measurand).
const ENERGY_REGISTER: &str = "Energy.Active.Import.Register";

impl SampledValue201 {
    /// The value scaled by its multiplier (the unit is kept as sent).
    fn scaled(&self) -> f64 {
        let multiplier = self.unit_of_measure.as_ref().and_then(|u| u.multiplier).unwrap_or(0);
        self.value * 10f64.powi(multiplier)
    }

    fn unit(&self) -> Option<&str> {
        self.unit_of_measure.as_ref().and_then(|u| u.unit.as_deref())
    }

    /// The energy register in Wh, when this is the (whole-meter) energy register.
    pub fn energy_register_wh(&self) -> Option<i64> {
        let measurand = self.measurand.as_deref().unwrap_or(ENERGY_REGISTER);
        if measurand != ENERGY_REGISTER || self.phase.is_some() {
            return None;
        }
        let wh = match self.unit().unwrap_or("Wh") {
            "Wh" => self.scaled(),
            "kWh" => self.scaled() * 1000.0,
            _ => return None,
        };
        Some(wh.round() as i64)
    }
}

impl MeterValue201 {
    /// The same reading in the form every version's readings are stored in.
    pub fn to_model(&self) -> MeterValue {
        MeterValue {
            timestamp: self.timestamp,
            sampled_value: self
                .sampled_value
                .iter()
                .map(|s| SampledValue {
                    value: s.scaled().to_string(),
                    context: s.context.clone(),
                    format: None,
                    measurand: s.measurand.clone(),
                    phase: s.phase.clone(),
                    location: s.location.clone(),
                    unit: s.unit().map(String::from),
                })
                .collect(),
        }
    }

    /// The energy register among its values, Wh.
    pub fn energy_register_wh(&self) -> Option<i64> {
        self.sampled_value.iter().find_map(SampledValue201::energy_register_wh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sv(v: serde_json::Value) -> SampledValue201 {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_energy_register_is_read_in_wh_whatever_its_unit() {
        assert_eq!(sv(json!({"value": 1500})).energy_register_wh(), Some(1500));
        assert_eq!(sv(json!({"value": 1.5, "unitOfMeasure": {"unit": "kWh"}})).energy_register_wh(), Some(1500));
        assert_eq!(
            sv(json!({"value": 15, "unitOfMeasure": {"unit": "Wh", "multiplier": 2}})).energy_register_wh(),
            Some(1500)
        );
        assert_eq!(sv(json!({"value": 7.4, "measurand": "Power.Active.Import"})).energy_register_wh(), None);
        assert_eq!(sv(json!({"value": 500, "phase": "L1"})).energy_register_wh(), None);
    }
}
