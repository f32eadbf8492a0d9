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
    /// The shadow's p99 may be at most this many times the original's.
    pub max_p99_ratio: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            min_requests: 20,
            max_error_rate_increase: 0.01,
            latency_alpha: 0.01,
            min_latency_ratio: 1.1,
            max_p99_ratio: 1.5,
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
    if p < cfg.latency_alpha && ms > mo * cfg.min_latency_ratio {
        reasons.push(format!(
            "latency: median {ms:.1} ms against {mo:.1} ms, rank test p = {p:.2e}"
        ));
    }
    let (qo, qs) = (
        quantile(&original.latencies_ms, 0.99),
        quantile(&shadow.latencies_ms, 0.99),
    );
    if shadow.latencies_ms.len() >= 20
        && original.latencies_ms.len() >= 20
        && qs > qo * cfg.max_p99_ratio
    {
        reasons.push(format!("p99 {qs:.1} ms against the original's {qo:.1} ms"));
    }
    Verdict {
        pass: reasons.is_empty(),
        reasons,
        latency_p_value: p,
    }
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
    }
}
