use std::collections::BTreeMap;

use augur_types::{Component, ComponentId, Placement, TrafficWeights};

use crate::pb;
use crate::status::WireError;

pub fn placement_from_wire(p: Option<pb::Placement>) -> Result<Placement, WireError> {
    let p = p.ok_or(WireError::Missing { field: "placement" })?;
    Ok(Placement {
        host: p.host,
        rack: p.rack,
        zone: p.zone,
    })
}

pub fn placement_to_wire(p: &Placement) -> pb::Placement {
    pb::Placement {
        host: p.host.clone(),
        rack: p.rack.clone(),
        zone: p.zone.clone(),
    }
}

pub fn component_from_wire(c: Option<pb::Component>) -> Result<Component, WireError> {
    let c = c.ok_or(WireError::Missing { field: "component" })?;
    let criticality = u8::try_from(c.criticality).map_err(|_| WireError::Invalid {
        field: "criticality",
        reason: "above 255".into(),
    })?;
    Ok(Component {
        id: ComponentId::new(c.id).map_err(|e| WireError::Invalid {
            field: "id",
            reason: e.to_string(),
        })?,
        class: c.class,
        group: c.group,
        criticality,
        placement: placement_from_wire(c.placement)?,
        labels: c.labels.into_iter().collect(),
    })
}

pub fn component_to_wire(c: &Component) -> pb::Component {
    pb::Component {
        id: c.id.to_string(),
        class: c.class.clone(),
        group: c.group.clone(),
        criticality: u32::from(c.criticality),
        placement: Some(placement_to_wire(&c.placement)),
        labels: c
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub fn weights_to_wire(w: &TrafficWeights) -> std::collections::HashMap<String, u32> {
    w.iter().map(|(c, &v)| (c.to_string(), v)).collect()
}

pub fn weights_from_wire(
    w: std::collections::HashMap<String, u32>,
) -> Result<TrafficWeights, WireError> {
    let mut out = BTreeMap::new();
    for (k, v) in w {
        let id = ComponentId::new(k).map_err(|e| WireError::Invalid {
            field: "weights",
            reason: e.to_string(),
        })?;
        out.insert(id, v);
    }
    Ok(out)
}
