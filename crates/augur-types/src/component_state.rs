//! Component state held in the replicated state: an orchestrator records a component's
//! state snapshot (versioned, newer versions replacing older ones) while it syncs a shadow,
//! and hands the shadow what the cluster holds, so the state a failover carries survives the
//! original's crash and a leader change. Small by design: each snapshot and the total are
//! capped, and a component's record goes when the component does.

use serde::{Deserialize, Serialize};

use crate::command::{Applied, Rejection};
use crate::ids::ComponentId;
use crate::state::ControlState;

/// Largest state snapshot of one component, in bytes.
pub const MAX_COMPONENT_STATE_BYTES: usize = 256 * 1024;
/// Largest total of every component's snapshot, in bytes.
pub const MAX_TOTAL_STATE_BYTES: usize = 16 * 1024 * 1024;

/// A component's latest recorded state.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentState {
    /// The component's own version of it; only a higher one replaces it.
    pub version: u64,
    pub bytes: Vec<u8>,
    /// Who recorded it, and when.
    pub orchestrator: String,
    pub at_ms: u64,
}

impl std::fmt::Debug for ComponentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentState")
            .field("version", &self.version)
            .field("bytes", &self.bytes.len())
            .field("orchestrator", &self.orchestrator)
            .field("at_ms", &self.at_ms)
            .finish()
    }
}

impl ControlState {
    /// Bytes held for every component's state.
    pub fn state_bytes(&self) -> usize {
        self.component_states.values().map(|s| s.bytes.len()).sum()
    }

    pub(crate) fn put_component_state(
        &mut self,
        component: &ComponentId,
        record: &ComponentState,
    ) -> Result<Applied, Rejection> {
        if !self.components.contains_key(component) {
            return Err(Rejection::UnknownComponent {
                id: component.to_string(),
            });
        }
        if record.bytes.len() > MAX_COMPONENT_STATE_BYTES {
            return Err(Rejection::InvalidInput {
                reason: format!(
                    "state of {component} is {} bytes; at most {MAX_COMPONENT_STATE_BYTES}",
                    record.bytes.len()
                ),
            });
        }
        if let Some(held) = self.component_states.get(component) {
            if record.version < held.version
                || (record.version == held.version && record.bytes != held.bytes)
            {
                return Err(Rejection::StaleState {
                    component: component.to_string(),
                    version: record.version,
                    held: held.version,
                });
            }
            if record.version == held.version {
                return Ok(Applied::Done);
            }
        }
        let others = self.state_bytes()
            - self
                .component_states
                .get(component)
                .map_or(0, |s| s.bytes.len());
        if others + record.bytes.len() > MAX_TOTAL_STATE_BYTES {
            return Err(Rejection::InvalidInput {
                reason: format!(
                    "the cluster holds {others} bytes of component state; {} more for \
                     {component} would pass the cap of {MAX_TOTAL_STATE_BYTES}",
                    record.bytes.len()
                ),
            });
        }
        self.component_states
            .insert(component.clone(), record.clone());
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    fn cid(s: &str) -> ComponentId {
        ComponentId::new(s).unwrap()
    }

    fn state(ids: &[&str]) -> ControlState {
        let mut s = ControlState::default();
        for id in ids {
            let c = crate::fixtures::component(id, "web", "h1", "z1");
            s.apply(1, &Command::UpsertComponent(c)).unwrap();
        }
        s
    }

    fn put(id: &str, version: u64, bytes: Vec<u8>) -> Command {
        Command::PutComponentState {
            component: cid(id),
            state: ComponentState {
                version,
                bytes,
                orchestrator: "agent-1".into(),
                at_ms: version,
            },
        }
    }

    #[test]
    fn newer_versions_replace_older_ones_and_retries_are_harmless() {
        let mut s = state(&["web-1"]);
        s.apply(1, &put("web-1", 3, b"three".to_vec())).unwrap();
        s.apply(1, &put("web-1", 3, b"three".to_vec())).unwrap();
        s.apply(1, &put("web-1", 5, b"five".to_vec())).unwrap();
        assert_eq!(s.component_states[&cid("web-1")].bytes, b"five");
        let before = s.clone();
        for (v, b) in [(4, b"four".to_vec()), (5, b"FIVE".to_vec())] {
            assert!(matches!(
                s.apply(1, &put("web-1", v, b)),
                Err(Rejection::StaleState { held: 5, .. })
            ));
        }
        assert_eq!(s, before);
    }

    #[test]
    fn unknown_components_and_oversized_states_are_refused() {
        let mut s = state(&["web-1"]);
        let before = s.clone();
        assert!(matches!(
            s.apply(1, &put("nope", 1, vec![1])),
            Err(Rejection::UnknownComponent { .. })
        ));
        let too_big = vec![0u8; MAX_COMPONENT_STATE_BYTES + 1];
        let err = s.apply(1, &put("web-1", 1, too_big)).unwrap_err();
        assert!(err.to_string().contains("at most 262144"), "{err}");
        assert_eq!(s, before);
    }

    #[test]
    fn the_total_is_capped() {
        let n = MAX_TOTAL_STATE_BYTES / MAX_COMPONENT_STATE_BYTES;
        let ids: Vec<String> = (0..=n).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut s = state(&refs);
        for id in &refs[..n] {
            s.apply(1, &put(id, 1, vec![0; MAX_COMPONENT_STATE_BYTES]))
                .unwrap();
        }
        assert_eq!(s.state_bytes(), MAX_TOTAL_STATE_BYTES);
        let err = s.apply(1, &put(refs[n], 1, vec![0; 1])).unwrap_err();
        assert!(err.to_string().contains("pass the cap"), "{err}");
        // Replacing a held snapshot by one of the same size fits.
        s.apply(1, &put(refs[0], 2, vec![1; MAX_COMPONENT_STATE_BYTES]))
            .unwrap();
        // A removed component's state goes with it.
        s.apply(1, &Command::RemoveComponent { id: cid(refs[0]) })
            .unwrap();
        assert_eq!(
            s.state_bytes(),
            MAX_TOTAL_STATE_BYTES - MAX_COMPONENT_STATE_BYTES
        );
    }
}
