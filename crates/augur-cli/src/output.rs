//! What `augur ctl` prints. The JSON field names are a stable interface (docs/api.md).

use std::collections::BTreeMap;

use augur_proto::pb;
use serde::Serialize;

#[derive(Serialize)]
pub struct MemberView {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
    /// Shards of components the member owns and stands by for.
    pub shards_owned: u32,
    pub shards_standby: u32,
}

#[derive(Serialize)]
pub struct StatusView {
    pub id: u64,
    pub role: String,
    pub leader_id: Option<u64>,
    pub leader_addr: String,
    pub term: u64,
    pub last_log_index: u64,
    pub last_applied: u64,
    /// The shard map's epoch; 0 while there is none.
    pub shard_epoch: u64,
    /// The shard map epoch whose newly served components this node has finished warming.
    pub warm_shard_epoch: u64,
    pub members: Vec<MemberView>,
}

#[derive(Serialize)]
pub struct ComponentView {
    pub id: String,
    pub class: String,
    pub group: String,
    pub criticality: u32,
    pub host: String,
    pub rack: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
pub struct ActionView {
    pub id: String,
    pub seq: u64,
    pub term: u64,
    pub request_id: String,
    pub kind: String,
    pub target: String,
    pub params: BTreeMap<String, String>,
    pub created_ms: u64,
    pub status: String,
    pub orchestrator: String,
    /// The orchestrator holding its lease, and until when (ms); absent when none does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_until_ms: Option<u64>,
    /// Leases on it that lapsed.
    pub lapses: u32,
}

pub fn members(m: Vec<pb::Member>) -> Vec<MemberView> {
    m.into_iter()
        .map(|m| MemberView {
            id: m.id,
            addr: m.addr,
            voter: m.voter,
            shards_owned: m.shards_owned,
            shards_standby: m.shards_standby,
        })
        .collect()
}

impl From<pb::StatusResponse> for StatusView {
    fn from(s: pb::StatusResponse) -> Self {
        Self {
            id: s.id,
            role: s.role,
            leader_id: s.leader_id,
            leader_addr: s.leader_addr,
            term: s.term,
            last_log_index: s.last_log_index,
            last_applied: s.last_applied,
            shard_epoch: s.shard_epoch,
            warm_shard_epoch: s.warm_shard_epoch,
            members: members(s.members),
        }
    }
}

impl From<pb::Component> for ComponentView {
    fn from(c: pb::Component) -> Self {
        let p = c.placement.unwrap_or_default();
        Self {
            id: c.id,
            class: c.class,
            group: c.group,
            criticality: c.criticality,
            host: p.host,
            rack: p.rack,
            zone: p.zone,
            labels: c.labels.into_iter().collect(),
        }
    }
}

impl From<pb::Action> for ActionView {
    fn from(a: pb::Action) -> Self {
        let kind = pb::ActionKind::try_from(a.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("ACTION_KIND_")
                    .to_lowercase()
            })
            .unwrap_or_else(|_| a.kind.to_string());
        Self {
            id: a.id,
            seq: a.seq,
            term: a.term,
            request_id: a.request_id,
            kind,
            target: a.target,
            params: a.params.into_iter().collect(),
            created_ms: a.created_ms,
            status: a.status,
            orchestrator: a.orchestrator,
            claimed_by: (!a.claimed_by.is_empty()).then_some(a.claimed_by),
            claim_until_ms: (a.claim_until_ms > 0).then_some(a.claim_until_ms),
            lapses: a.lapses,
        }
    }
}

impl ComponentView {
    pub fn line(&self) -> String {
        format!(
            "{:<24} {:<12} {:<12} {:>4}  {}/{}/{}",
            self.id, self.class, self.group, self.criticality, self.zone, self.rack, self.host
        )
    }
}

impl ActionView {
    pub fn line(&self) -> String {
        let held = self
            .claimed_by
            .as_ref()
            .map_or(String::new(), |by| format!(" (held by {by})"));
        format!(
            "{:>6} {:<12} {:<10} {:<24} {}{held}",
            self.seq, self.id, self.kind, self.target, self.status
        )
    }
}
