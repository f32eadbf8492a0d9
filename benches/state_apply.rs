//! What one command costs the replicated state as it grows: an upsert of a component on a
//! host with a recorded capacity (the first inserts it, the later ones replace it; each
//! checks the host's room), a ten-component topology file that re-registers components
//! where they are, and a shadow request refused because the component is another's shadow in
//! flight (found last among one retired record a component), and a repeated plan proposal
//! among one open plan a component, with 10k, 100k and 1M components registered, 20 to a
//! host.
//!
//! `cargo bench -p augur-types --bench state_apply` (figures in docs/benchmarks.md).

use std::hint::black_box;
use std::time::Duration;

use augur_types::fixtures::component;
use augur_types::{
    Command, ComponentId, ControlState, Host, Placement, PlanKind, PlanRecord, PlanStatus,
    Severity, ShadowRecord, ShadowState,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const PER_HOST: usize = 20;

fn host_name(i: usize) -> String {
    format!("h{}", i / PER_HOST)
}

fn state(n: usize) -> ControlState {
    let mut s = ControlState::default();
    for h in 0..n.div_ceil(PER_HOST) + 1 {
        let host = Host {
            placement: Placement {
                host: format!("h{h}"),
                rack: format!("r{}", h % 40),
                zone: format!("z{}", h % 3),
            },
            // Room for one more, so the upsert of a new component below is accepted.
            capacity: PER_HOST as u32 + 1,
        };
        s.apply(1, &Command::UpsertHost(host)).expect("host");
    }
    // Inserted directly: through `apply`, building the state would cost what is measured.
    for i in 0..n {
        let c = component(&format!("svc-{i}"), "web", &host_name(i), "z1");
        s.components.insert(c.id.clone(), c);
    }
    s
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("state_apply");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for n in [10_000, 100_000, 1_000_000] {
        let mut s = state(n);
        // A new component on the first host (it has room for one more), then the same
        // component again: both check the host's room.
        let fresh = Command::UpsertComponent(component("svc-new", "web", "h0", "z1"));
        g.bench_with_input(
            BenchmarkId::new("upsert_on_a_capped_host", n),
            &n,
            |b, _| b.iter(|| black_box(s.apply(1, &fresh).expect("upsert"))),
        );
        let file = Command::ApplyTopology {
            hosts: vec![],
            components: (0..10)
                .map(|i| component(&format!("svc-{i}"), "web", &host_name(i), "z1"))
                .collect(),
            edges: vec![],
        };
        g.bench_with_input(BenchmarkId::new("ten_component_topology", n), &n, |b, _| {
            b.iter(|| black_box(s.apply(1, &file).expect("topology")))
        });
        // A retired shadow record for every component, and "zzz" (last by id) shadowed by
        // "svc-1" in flight: a shadow for "svc-1" is refused.
        let place = |h: &str| Placement {
            host: h.into(),
            rack: "r1".into(),
            zone: "z2".into(),
        };
        let record = |shadow: String, state| ShadowRecord {
            shadow: ComponentId::new(shadow).expect("id"),
            placement: place("h1"),
            state,
            history: vec![],
            shift: None,
        };
        for i in 0..n {
            let owner = ComponentId::new(format!("svc-{i}")).expect("id");
            s.shadows
                .insert(owner, record(format!("svc-{i}-s"), ShadowState::Retired));
        }
        let zzz = component("zzz", "web", "h1", "z1");
        s.components.insert(zzz.id.clone(), zzz.clone());
        s.shadows
            .insert(zzz.id, record("svc-1".into(), ShadowState::Syncing));
        let request = Command::RequestShadow {
            component: ComponentId::new("svc-1").expect("id"),
            shadow: ComponentId::new("svc-1-t").expect("id"),
            placement: place("h2"),
            reason: String::new(),
        };
        g.bench_with_input(BenchmarkId::new("refused_shadow_request", n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    s.apply(1, &request)
                        .expect_err("svc-1 is a shadow in flight"),
                )
            })
        });
        // An open plan for every component (numbered by component), and the planner proposing
        // again for the last: answered with its open plan.
        for i in 0..n {
            let c = ComponentId::new(format!("svc-{i}")).expect("id");
            s.plans.insert(
                i as u64 + 1,
                PlanRecord {
                    id: format!("plan-{}", i + 1),
                    component: c,
                    kind: PlanKind::Failover,
                    template: None,
                    to: place("h2"),
                    severity: Severity::High,
                    reason: String::new(),
                    created_ms: 0,
                    status: PlanStatus::Proposed,
                    shadow: None,
                    history: vec![],
                },
            );
        }
        let again = Command::ProposePlan {
            component: ComponentId::new(format!("svc-{}", n - 1)).expect("id"),
            kind: PlanKind::Failover,
            template: None,
            to: place("h2"),
            severity: Severity::High,
            reason: "again".into(),
            approved_by: None,
            at_ms: 1,
        };
        g.bench_with_input(BenchmarkId::new("repeated_plan_proposal", n), &n, |b, _| {
            b.iter(|| black_box(s.apply(1, &again).expect("answered with its open plan")))
        });
    }
    g.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
