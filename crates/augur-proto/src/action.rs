use augur_types::{Action, ActionKind, ActionOutcome, ActionStatus, KpiSample, Kpis};

use crate::pb;
use crate::status::WireError;

pub fn action_kind_from_wire(kind: i32) -> Result<ActionKind, WireError> {
    use pb::ActionKind as K;
    let k = K::try_from(kind).map_err(|_| WireError::Invalid {
        field: "kind",
        reason: format!("unknown kind {kind}"),
    })?;
    Ok(match k {
        K::Unspecified => return Err(WireError::Missing { field: "kind" }),
        K::Provision => ActionKind::Provision,
        K::Sync => ActionKind::Sync,
        K::Validate => ActionKind::Validate,
        K::SetWeights => ActionKind::SetWeights,
        K::Drain => ActionKind::Drain,
        K::Standby => ActionKind::Standby,
        K::Retire => ActionKind::Retire,
        K::Scale => ActionKind::Scale,
        K::Exec => ActionKind::Exec,
    })
}

pub fn action_kind_to_wire(kind: ActionKind) -> pb::ActionKind {
    use pb::ActionKind as K;
    match kind {
        ActionKind::Provision => K::Provision,
        ActionKind::Sync => K::Sync,
        ActionKind::Validate => K::Validate,
        ActionKind::SetWeights => K::SetWeights,
        ActionKind::Drain => K::Drain,
        ActionKind::Standby => K::Standby,
        ActionKind::Retire => K::Retire,
        ActionKind::Scale => K::Scale,
        ActionKind::Exec => K::Exec,
    }
}

pub fn action_to_wire(a: &Action) -> pb::Action {
    let orchestrator = match &a.status {
        ActionStatus::Done { orchestrator, .. } => orchestrator.clone(),
        ActionStatus::Pending => String::new(),
    };
    pb::Action {
        id: a.id.to_string(),
        seq: a.id.seq,
        term: a.id.term,
        request_id: a.request_id.clone(),
        kind: action_kind_to_wire(a.kind) as i32,
        target: a.target.to_string(),
        params: a
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        created_ms: a.created_ms,
        status: a.status.to_string(),
        orchestrator,
        kpis: a.kpis.as_ref().map(kpis_to_wire),
    }
}

pub fn kpis_to_wire(k: &Kpis) -> pb::Kpis {
    let side = |s: &KpiSample| pb::KpiSample {
        requests: s.requests,
        errors: s.errors,
        p99_us: s.p99_us,
    };
    pb::Kpis {
        original: Some(side(&k.original)),
        shadow: Some(side(&k.shadow)),
    }
}

/// KPIs as reported on the wire; both sides must be there, and errors cannot exceed requests.
pub fn kpis_from_wire(k: pb::Kpis) -> Result<Kpis, WireError> {
    let side = |s: Option<pb::KpiSample>, field: &'static str| {
        let s = s.ok_or(WireError::Missing { field })?;
        if s.errors > s.requests {
            return Err(WireError::Invalid {
                field,
                reason: format!("{} errors out of {} requests", s.errors, s.requests),
            });
        }
        Ok(KpiSample {
            requests: s.requests,
            errors: s.errors,
            p99_us: s.p99_us,
        })
    };
    Ok(Kpis {
        original: side(k.original, "kpis.original")?,
        shadow: side(k.shadow, "kpis.shadow")?,
    })
}

/// An outcome as reported on the wire.
pub fn outcome_from_wire(success: bool, reason: String) -> ActionOutcome {
    if success {
        ActionOutcome::Succeeded
    } else {
        ActionOutcome::Failed { reason }
    }
}
