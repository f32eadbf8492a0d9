use augur_types::Rejection;
use tonic::{Code, Status};

/// Metadata keys carrying the leader's address and id on a not-leader answer.
pub const LEADER_ADDR_HEADER: &str = "x-augur-leader-addr";
pub const LEADER_ID_HEADER: &str = "x-augur-leader-id";

/// A wire message that does not make a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("missing field {field}")]
    Missing { field: &'static str },
    #[error("invalid field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl From<WireError> for Status {
    fn from(e: WireError) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

/// The one place a domain rejection becomes a gRPC code.
pub fn rejection_status(r: &Rejection) -> Status {
    let code = match r {
        Rejection::InvalidInput { .. }
        | Rejection::WeightsDoNotSumTo100 { .. }
        | Rejection::WrongService { .. } => Code::InvalidArgument,
        Rejection::UnknownComponent { .. }
        | Rejection::NoShadow { .. }
        | Rejection::UnknownAction { .. }
        | Rejection::UnknownPlan { .. } => Code::NotFound,
        Rejection::ComponentInUse { .. }
        | Rejection::HostFull { .. }
        | Rejection::ShadowInFlight { .. }
        | Rejection::ShadowNotRetired { .. }
        | Rejection::IllegalShadowTransition { .. }
        | Rejection::OutcomeConflict { .. }
        | Rejection::IllegalPlanTransition { .. }
        | Rejection::ActionClaimed { .. }
        | Rejection::StaleState { .. }
        | Rejection::StaleShardMap { .. } => Code::FailedPrecondition,
    };
    Status::new(code, r.to_string())
}

/// `UNAVAILABLE` naming the leader, so a client can retry there.
pub fn not_leader_status(leader: Option<(u64, &str)>) -> Status {
    let mut status = Status::unavailable(match leader {
        Some((id, addr)) => format!("not the leader; the leader is node {id} at {addr}"),
        None => "not the leader, and no leader is known yet".to_string(),
    });
    if let Some((id, addr)) = leader {
        if let (Ok(addr), Ok(id)) = (addr.parse(), id.to_string().parse()) {
            status.metadata_mut().insert(LEADER_ADDR_HEADER, addr);
            status.metadata_mut().insert(LEADER_ID_HEADER, id);
        }
    }
    status
}

/// The leader's address from a not-leader answer, if it carries one.
pub fn leader_from_status(status: &Status) -> Option<String> {
    if status.code() != Code::Unavailable {
        return None;
    }
    status
        .metadata()
        .get(LEADER_ADDR_HEADER)?
        .to_str()
        .ok()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_round_trips_the_leader_address() {
        let s = not_leader_status(Some((2, "127.0.0.1:7002")));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(leader_from_status(&s).as_deref(), Some("127.0.0.1:7002"));
        assert_eq!(leader_from_status(&not_leader_status(None)), None);
    }

    #[test]
    fn rejections_map_to_codes() {
        let r = Rejection::WeightsDoNotSumTo100 {
            service: "web".into(),
            sum: 90,
        };
        assert_eq!(rejection_status(&r).code(), Code::InvalidArgument);
        let r = Rejection::UnknownComponent { id: "x".into() };
        assert_eq!(rejection_status(&r).code(), Code::NotFound);
    }
}
