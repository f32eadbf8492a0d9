use augur_types::{
    Action, ActionKind, ActionOutcome, ActionStatus, ComponentId, KpiSample, Kpis, PlanRecord,
    ShadowRecord,
};

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
        claimed_by: a
            .claim
            .as_ref()
            .map(|c| c.orchestrator.clone())
            .unwrap_or_default(),
        claim_until_ms: a.claim.as_ref().map_or(0, |c| c.until_ms),
        lapses: a.lapses,
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

/// A component's shadow, with every step and its reason.
pub fn shadow_to_wire(component: &ComponentId, r: &ShadowRecord) -> pb::Shadow {
    let shift = r.shift.as_ref();
    pb::Shadow {
        component: component.to_string(),
        shadow: r.shadow.to_string(),
        placement: Some(crate::placement_to_wire(&r.placement)),
        state: r.state.to_string(),
        in_flight: r.state.in_flight(),
        history: r
            .history
            .iter()
            .map(|(state, reason)| pb::ShadowStep {
                state: state.to_string(),
                reason: reason.clone(),
            })
            .collect(),
        service: shift.map(|f| f.service.clone()).unwrap_or_default(),
        weights_before: shift
            .map(|f| crate::weights_to_wire(&f.before))
            .unwrap_or_default(),
        weights_verified: shift
            .map(|f| crate::weights_to_wire(&f.verified))
            .unwrap_or_default(),
    }
}

pub fn plan_to_wire(p: &PlanRecord) -> pb::Plan {
    pb::Plan {
        id: p.id.clone(),
        kind: p.kind.as_str().to_owned(),
        component: p.component.to_string(),
        to: Some(crate::placement_to_wire(&p.to)),
        severity: p.severity.as_str().to_owned(),
        reason: p.reason.clone(),
        created_ms: p.created_ms,
        status: p.status.to_string(),
        shadow: p.shadow.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        template: p
            .template
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        history: p
            .history
            .iter()
            .map(|e| pb::PlanEvent {
                at_ms: e.at_ms,
                status: e.status.to_string(),
                by: e.by.clone(),
                note: e.note.clone(),
            })
            .collect(),
    }
}
