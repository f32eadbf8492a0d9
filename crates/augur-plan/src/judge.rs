//! The KPI gate of a shift step: the shadow against the original over the same window, as a
//! canary judge does. Two healthy instances never measure the same, so a difference fails
//! the gate only when it is both significant and large: latency by a one-sided
//! Mann-Whitney rank test plus a minimum effect on the median, errors by a margin over the
//! original's rate, and the p99 by a ratio.

use serde::Serialize;

/// What one instance served in a gate window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Kpis {
    pub requests: u64,
    pub errors: u64,
    pub latencies_ms: Vec<f64>,
}

impl Kpis {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// Gate thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GateConfig {
    /// Requests the shadow must have served for a verdict.
    pub min_requests: u64,
    /// The shadow's error rate may exceed the original's by this much (absolute).
    pub max_error_rate_increase: f64,
    /// Significance of the latency rank test.
    pub latency_alpha: f64,
    /// A significant latency difference fails only when the shadow's median is at least this
    /// many times the original's.
    pub min_latency_ratio: f64,
    /// … and at least this many milliseconds slower (sub-millisecond services differ by
    /// tens of percent between two healthy processes).
    pub min_latency_delta_ms: f64,
    /// The shadow's p99 may be at most this many times the original's.
    pub max_p99_ratio: f64,
    /// A p99 above the ratio fails only when it is also this much slower (two healthy
    /// instances differ by a few milliseconds at the tail).
    pub p99_slack_ms: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            min_requests: 20,
            max_error_rate_increase: 0.01,
            latency_alpha: 0.01,
            min_latency_ratio: 1.1,
            min_latency_delta_ms: 2.0,
            max_p99_ratio: 1.5,
            p99_slack_ms: 5.0,
        }
    }
}

/// The gate's answer and its reasons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub pass: bool,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<String>,
    /// The rank test's p-value for "the shadow is slower".
    pub latency_p_value: f64,
}

/// Judges the shadow's window against the original's.
/// Latencies each side needs before their p99s are compared: below 200, a p99 rests on one
/// value, and one scheduling hiccup of a fresh process (on a busy machine) would fail a shadow
/// that is as fast as the original. The rank test on the whole sample still applies.
pub const MIN_P99_SAMPLES: usize = 200;

pub fn judge(original: &Kpis, shadow: &Kpis, cfg: &GateConfig) -> Verdict {
    let mut reasons = Vec::new();
    if shadow.requests < cfg.min_requests {
        reasons.push(format!(
            "the shadow served {} requests, fewer than the {} a verdict needs",
            shadow.requests, cfg.min_requests
        ));
    }
    let (eo, es) = (original.error_rate(), shadow.error_rate());
    if es > eo + cfg.max_error_rate_increase {
        reasons.push(format!(
            "error rate {es:.4} against the original's {eo:.4} (allowed +{})",
            cfg.max_error_rate_increase
        ));
    }
    let p = mann_whitney_greater(&shadow.latencies_ms, &original.latencies_ms);
    let (mo, ms) = (
        quantile(&original.latencies_ms, 0.5),
        quantile(&shadow.latencies_ms, 0.5),
    );
    if p < cfg.latency_alpha
        && ms > mo * cfg.min_latency_ratio
        && ms - mo > cfg.min_latency_delta_ms
    {
        reasons.push(format!(
            "latency: median {ms:.1} ms against {mo:.1} ms, rank test p = {p:.2e}"
        ));
    }
    let (qo, qs) = (
        quantile(&original.latencies_ms, 0.99),
        quantile(&shadow.latencies_ms, 0.99),
    );
    if shadow.latencies_ms.len() >= MIN_P99_SAMPLES
        && original.latencies_ms.len() >= MIN_P99_SAMPLES
        && qs > qo * cfg.max_p99_ratio
        && qs - qo > cfg.p99_slack_ms
    {
        reasons.push(format!("p99 {qs:.1} ms against the original's {qo:.1} ms"));
    }
    Verdict {
        pass: reasons.is_empty(),
        reasons,
        latency_p_value: p,
    }
}

/// Judges a traffic step from the summaries an orchestrator reports (requests, errors, p99 of
/// each side over the same window): the leader's gate, decided from the replicated state. The
/// error rate fails when it exceeds the original's by more than the margin *and* a one-sided
/// binomial test rejects "the shadow's rate is within the margin" at 1 % (a single error
/// among a handful of requests is noise); the p99 fails above the ratio and the slack together.
pub fn gate_summary(k: &augur_types::Kpis, cfg: &GateConfig) -> Verdict {
    let (o, s) = (&k.original, &k.shadow);
    let mut reasons = Vec::new();
    if s.requests < cfg.min_requests {
        reasons.push(format!(
            "the shadow served {} requests, fewer than the {} a verdict needs",
            s.requests, cfg.min_requests
        ));
    }
    let (eo, es) = (o.error_rate(), s.error_rate());
    let allowed = (eo + cfg.max_error_rate_increase).min(1.0);
    if s.requests > 0 && es > allowed {
        let p = binomial_tail(s.errors, s.requests, allowed);
        if p < 0.01 {
            reasons.push(format!(
                "error rate {es:.4} ({} of {}) against the original's {eo:.4} (allowed +{}, p = {p:.1e})",
                s.errors, s.requests, cfg.max_error_rate_increase
            ));
        }
    }
    let (qo, qs) = (o.p99_us as f64 / 1e3, s.p99_us as f64 / 1e3);
    if o.requests > 0 && qs > qo * cfg.max_p99_ratio && qs - qo > cfg.p99_slack_ms {
        reasons.push(format!("p99 {qs:.1} ms against the original's {qo:.1} ms"));
    }
    Verdict {
        pass: reasons.is_empty(),
        reasons,
        latency_p_value: f64::NAN,
    }
}

/// P(X ≥ k) for X ~ Binomial(n, p): summed exactly from the pmf's recurrence up to 100 000
/// trials, by the normal approximation (with continuity correction) beyond.
pub fn binomial_tail(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 || p >= 1.0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    let (nf, q) = (n as f64, 1.0 - p);
    if n > 100_000 {
        let sd = (nf * p * q).sqrt();
        let z = (k as f64 - 0.5 - nf * p) / sd;
        return 0.5 * libm::erfc(z / std::f64::consts::SQRT_2);
    }
    // log pmf(k) via lgamma, then the recurrence pmf(i+1) = pmf(i) (n-i)/(i+1) p/q.
    let ln_pmf =
        libm::lgamma(nf + 1.0) - libm::lgamma(k as f64 + 1.0) - libm::lgamma((n - k) as f64 + 1.0)
            + k as f64 * p.ln()
            + (n - k) as f64 * q.ln();
    let (mut term, mut sum) = (ln_pmf.exp(), 0.0);
    for i in k..=n {
        sum += term;
        if term < sum * 1e-16 && i as f64 > nf * p {
            break;
        }
        term *= (n - i) as f64 / (i + 1) as f64 * p / q;
    }
    sum.min(1.0)
}

/// One-sided Mann-Whitney U test that `a` tends to be larger than `b`: the p-value by the
/// normal approximation with the tie correction (1 when either sample is empty).
pub fn mann_whitney_greater(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .filter(|(x, _)| x.is_finite())
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let (mut rank_sum_a, mut tie_term) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        rank_sum_a += rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = rank_sum_a - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)).max(1.0));
    if var <= 0.0 {
        return if u > mean { 0.0 } else { 1.0 };
    }
    // Continuity correction towards the mean.
    let z = (u - mean - 0.5) / var.sqrt();
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lat(n: usize, base: f64, step: f64) -> Vec<f64> {
        (0..n).map(|i| base + (i % 17) as f64 * step).collect()
    }

    #[test]
    fn rank_test_sees_a_shift_and_not_noise() {
        let a = lat(200, 10.0, 0.1);
        assert!(mann_whitney_greater(&lat(200, 15.0, 0.1), &a) < 1e-6);
        let p_same = mann_whitney_greater(&lat(200, 10.0, 0.1), &a);
        assert!(p_same > 0.3, "{p_same}");
        // Faster is not "greater".
        assert!(mann_whitney_greater(&lat(200, 5.0, 0.1), &a) > 0.99);
        assert_eq!(mann_whitney_greater(&[], &a), 1.0);
    }

    #[test]
    fn the_gate_passes_a_twin_and_fails_errors_latency_and_silence() {
        let cfg = GateConfig::default();
        let original = Kpis {
            requests: 1000,
            errors: 2,
            latencies_ms: lat(300, 10.0, 0.1),
        };
        // A healthy twin a little slower: significant maybe, but not a large effect.
        let twin = Kpis {
            requests: 1000,
            errors: 3,
            latencies_ms: lat(300, 10.3, 0.1),
        };
        let v = judge(&original, &twin, &cfg);
        assert!(v.pass, "{v:?}");
        let erring = Kpis {
            errors: 50,
            ..twin.clone()
        };
        let v = judge(&original, &erring, &cfg);
        assert!(!v.pass && v.reasons[0].contains("error rate"), "{v:?}");
        let slow = Kpis {
            latencies_ms: lat(300, 14.0, 0.1),
            ..twin.clone()
        };
        let v = judge(&original, &slow, &cfg);
        assert!(
            !v.pass && v.reasons.iter().any(|r| r.contains("latency")),
            "{v:?}"
        );
        let silent = Kpis::default();
        assert!(!judge(&original, &silent, &cfg).pass);
        // Sub-millisecond twins: 30 % slower is significant, but 0.1 ms is no effect.
        let fast = Kpis {
            requests: 300,
            errors: 0,
            latencies_ms: lat(300, 0.3, 0.001),
        };
        let cold = Kpis {
            latencies_ms: lat(300, 0.4, 0.001),
            ..fast.clone()
        };
        assert!(judge(&fast, &cold, &cfg).pass);
        // One hiccup in a hundred replays is not a slower shadow; a slow tail in enough
        // samples is.
        let hundred = Kpis {
            requests: 100,
            errors: 0,
            latencies_ms: lat(100, 3.0, 0.1),
        };
        let mut hiccup = hundred.clone();
        hiccup.latencies_ms[50] = 40.0;
        hiccup.latencies_ms[51] = 40.0;
        assert!(judge(&hundred, &hiccup, &cfg).pass);
        let mut tail = Kpis {
            requests: 300,
            errors: 0,
            latencies_ms: lat(300, 3.0, 0.1),
        };
        let steady = tail.clone();
        for v in tail.latencies_ms.iter_mut().take(10) {
            *v = 40.0;
        }
        let v = judge(&steady, &tail, &cfg);
        assert!(
            !v.pass && v.reasons.iter().any(|r| r.contains("p99")),
            "{v:?}"
        );
    }

    fn side(requests: u64, errors: u64, p99_ms: u64) -> augur_types::KpiSample {
        augur_types::KpiSample {
            requests,
            errors,
            p99_us: p99_ms * 1000,
        }
    }

    #[test]
    fn binomial_tail_matches_closed_forms() {
        // P(X >= 1) = 1 - q^n.
        let p = binomial_tail(1, 30, 0.011);
        assert!((p - (1.0 - 0.989f64.powi(30))).abs() < 1e-12, "{p}");
        // P(X >= n) = p^n.
        assert!((binomial_tail(5, 5, 0.5) - 0.03125).abs() < 1e-12);
        // Symmetry at p = 1/2: P(X >= 6 | 10) = 386/1024.
        assert!((binomial_tail(6, 10, 0.5) - 386.0 / 1024.0).abs() < 1e-12);
        assert_eq!(binomial_tail(0, 10, 0.1), 1.0);
        assert_eq!(binomial_tail(11, 10, 0.1), 0.0);
        // The normal branch agrees with its mean: about half the mass above np.
        let big = binomial_tail(20_000, 2_000_000, 0.01);
        assert!((big - 0.5).abs() < 0.01, "{big}");
    }

    #[test]
    fn the_summary_gate_tells_noise_from_a_worse_shadow() {
        let cfg = GateConfig::default();
        let gate = |o, s| {
            gate_summary(
                &augur_types::Kpis {
                    original: o,
                    shadow: s,
                },
                &cfg,
            )
        };
        // A twin: same error rate, p99 within the slack.
        assert!(gate(side(5000, 5, 40), side(50, 0, 43)).pass);
        // One error in 30 against 0.1 %: above the margin, but not significant.
        assert!(gate(side(3000, 3, 40), side(30, 1, 40)).pass);
        // 10 % errors over 200 requests: significant and large.
        let v = gate(side(5000, 5, 40), side(200, 20, 40));
        assert!(!v.pass && v.reasons[0].contains("error rate"), "{v:?}");
        // p99 twice the original's and 40 ms slower.
        let v = gate(side(5000, 5, 40), side(200, 0, 80));
        assert!(!v.pass && v.reasons[0].contains("p99"), "{v:?}");
        // 3 ms slower at the tail is noise even at 1.5x.
        assert!(gate(side(5000, 5, 6), side(200, 0, 9)).pass);
        // Silence is not a verdict.
        let v = gate(side(5000, 5, 40), side(3, 0, 40));
        assert!(!v.pass && v.reasons[0].contains("fewer than"), "{v:?}");
        // A failing original does not fail its shadow.
        assert!(gate(side(5000, 900, 400), side(200, 1, 40)).pass);
    }
}
