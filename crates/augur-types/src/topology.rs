use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{validate_id, ComponentId};
use crate::Rejection;

/// Where a component or host runs: its failure domains, innermost first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub host: String,
    pub rack: String,
    pub zone: String,
}

impl Placement {
    pub fn validate(&self) -> Result<(), Rejection> {
        for (what, v) in [
            ("host", &self.host),
            ("rack", &self.rack),
            ("zone", &self.zone),
        ] {
            validate_id(what, v).map_err(|e| Rejection::InvalidInput {
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// A monitored component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub id: ComponentId,
    /// What kind of thing it is (`web`, `postgres`, `kafka-broker`…); predictors learn per class.
    pub class: String,
    /// The service group it serves in; traffic weights are kept per group.
    pub group: String,
    /// 1 (least) ..= 5 (most critical).
    pub criticality: u8,
    pub placement: Placement,
    /// Free-form attributes (address, image, owner…), bounded in size.
    pub labels: BTreeMap<String, String>,
}

/// Most labels a component may carry, and the most bytes of labels.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_BYTES: usize = 4096;

impl Component {
    pub fn validate(&self) -> Result<(), Rejection> {
        let invalid = |reason: String| Rejection::InvalidInput { reason };
        validate_id("class", &self.class).map_err(|e| invalid(e.to_string()))?;
        validate_id("group", &self.group).map_err(|e| invalid(e.to_string()))?;
        if !(1..=5).contains(&self.criticality) {
            return Err(invalid(format!(
                "criticality {} of component {} is outside 1..=5",
                self.criticality, self.id
            )));
        }
        self.placement.validate()?;
        let bytes: usize = self.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        if self.labels.len() > MAX_LABELS || bytes > MAX_LABEL_BYTES {
            return Err(invalid(format!(
                "component {} has {} labels of {} bytes; at most {MAX_LABELS} labels and \
                 {MAX_LABEL_BYTES} bytes are accepted",
                self.id,
                self.labels.len(),
                bytes
            )));
        }
        Ok(())
    }
}

/// A machine components run on, with how many component instances it can hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub placement: Placement,
    pub capacity: u32,
}
