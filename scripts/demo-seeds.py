#!/usr/bin/env python3
"""Runs `augur demo --headless --output json` for seeds FIRST..LAST and sums the reports:
predicted and missed degrade-then-crash faults, failed requests of each run by cause, false
shifts per 100 healthy component-hours.

    python3 scripts/demo-seeds.py [AUGUR_BINARY] [FIRST] [LAST]
"""
import json, subprocess, sys

augur = sys.argv[1] if len(sys.argv) > 1 else "target/release/augur"
first = int(sys.argv[2]) if len(sys.argv) > 2 else 1
last = int(sys.argv[3]) if len(sys.argv) > 3 else 12
tot = {"pred": 0, "missed": 0, "false": 0, "hours": 0.0, "cancel": 0, "rollbacks": 0,
       "shifts": 0, "r_deg": 0, "p_deg": 0, "r_sud": 0, "p_sud": 0, "r_all": 0, "p_all": 0}
leads = []
for seed in range(first, last + 1):
    out = subprocess.run([augur, "demo", "--headless", "--seed", str(seed), "--output", "json"],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    a, p = r["reactive"], r["predictive"]
    fault = lambda x: (x["requests"]["failed_degrade_then_crash"] + x["requests"]["failed_sudden"]
                       + x["requests"]["failed_false_alarm"])
    tot["pred"] += p["predicted"]; tot["missed"] += p["missed"]; tot["false"] += p["false_shifts"]
    tot["hours"] += p["healthy_component_hours"]; tot["cancel"] += p["cancelled"]
    tot["rollbacks"] += p["rollbacks"]; tot["shifts"] += p["shifts_started"]
    tot["r_deg"] += a["requests"]["failed_degrade_then_crash"]
    tot["p_deg"] += p["requests"]["failed_degrade_then_crash"]
    tot["r_sud"] += a["requests"]["failed_sudden"]; tot["p_sud"] += p["requests"]["failed_sudden"]
    tot["r_all"] += fault(a); tot["p_all"] += fault(p)
    leads += p["lead_times_s"]
    print(f"seed {seed:>3}: predicted {p['predicted']}/{p['predicted'] + p['missed']}, "
          f"degrade-then-crash failed {a['requests']['failed_degrade_then_crash']} -> "
          f"{p['requests']['failed_degrade_then_crash']} ({100 * r['reduction_degrade_then_crash']:.1f} % fewer), "
          f"false shifts {p['false_shifts']}", flush=True)
leads.sort()
n = last - first + 1
print(f"{n} seeds: predicted {tot['pred']} of {tot['pred'] + tot['missed']}; failed requests from "
      f"degrade-then-crash faults {tot['r_deg']} -> {tot['p_deg']} ({100 * (1 - tot['p_deg'] / tot['r_deg']):.1f} % fewer); "
      f"sudden {tot['r_sud']} -> {tot['p_sud']}; all faults {tot['r_all']} -> {tot['p_all']} "
      f"({100 * (1 - tot['p_all'] / tot['r_all']):.1f} % fewer)")
print(f"failovers {tot['shifts']}, rolled back {tot['rollbacks']}, cancelled {tot['cancel']}; false shifts "
      f"{tot['false']} in {tot['hours']:.0f} healthy component-hours = "
      f"{100 * tot['false'] / tot['hours']:.2f} per 100; lead time min/median/max "
      f"{leads[0]:.0f}/{leads[len(leads) // 2]:.0f}/{leads[-1]:.0f} s")
