//! The Health Projection Score: 0–100, lower is riskier.
//!
//! ```text
//! HPS = 100 · (1 − P₁ₕ) · (1 − ½·A′) · (1 − T)
//!   P₁ₕ  probability of failure within one hour (the hazard model)
//!   A′   = max(0, 2A − 1), A the anomaly likelihood in [0, 1]: 0.5 is a typical sample, so
//!        only the part above it counts
//!   T    = clamp(1 − L / 3600 s, 0, 1), L the lead time to the nearest known limit
//!        (0 when no limit is being approached)
//! ```
//!
//! A healthy component scores 100; a component an hour from failure scores about 50 by P
//! alone; one at a hard limit scores 0. An anomaly alone can take at most half off: unusual is
//! not the same as failing.

use serde::{Deserialize, Serialize};

/// What the score is made of.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct HpsInputs {
    pub p_fail_1h: f64,
    pub anomaly: f64,
    pub lead_time_s: Option<f64>,
}

/// The score, in `[0, 100]`.
pub fn health_projection_score(i: &HpsInputs) -> f64 {
    let p = clamp01(i.p_fail_1h);
    let a = clamp01(2.0 * clamp01(i.anomaly) - 1.0);
    let t = i.lead_time_s.map_or(0.0, |l| clamp01(1.0 - l / 3600.0));
    100.0 * (1.0 - p) * (1.0 - 0.5 * a) * (1.0 - t)
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn anchors() {
        assert_eq!(health_projection_score(&HpsInputs::default()), 100.0);
        let at_limit = HpsInputs {
            lead_time_s: Some(0.0),
            ..Default::default()
        };
        assert_eq!(health_projection_score(&at_limit), 0.0);
        let anomalous = HpsInputs {
            anomaly: 1.0,
            ..Default::default()
        };
        assert_eq!(health_projection_score(&anomalous), 50.0);
    }

    proptest! {
        #[test]
        fn more_risk_never_raises_the_score(p in 0.0..1.0f64, a in 0.0..1.0f64, dp in 0.0..1.0f64) {
            let base = HpsInputs { p_fail_1h: p, anomaly: a, lead_time_s: None };
            let worse = HpsInputs { p_fail_1h: (p + dp).min(1.0), ..base };
            let s = health_projection_score(&base);
            prop_assert!((0.0..=100.0).contains(&s));
            prop_assert!(health_projection_score(&worse) <= s);
        }
    }
}
