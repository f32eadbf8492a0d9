//! Test fixtures shared by the unit tests of this crate and the crates above it.

use std::collections::BTreeMap;

use crate::ids::ComponentId;
use crate::topology::{Component, Placement};

/// A component of class `web` and criticality 3 on `host` (rack `r1`) in `zone`.
pub fn component(id: &str, group: &str, host: &str, zone: &str) -> Component {
    Component {
        id: ComponentId::new(id).unwrap(),
        class: "web".into(),
        group: group.into(),
        criticality: 3,
        placement: Placement {
            host: host.into(),
            rack: "r1".into(),
            zone: zone.into(),
        },
        labels: BTreeMap::new(),
    }
}
