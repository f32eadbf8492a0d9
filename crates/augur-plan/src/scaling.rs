//! Predictive scaling: add instances ahead of a forecast peak (load or risk), never remove
//! them on a forecast alone: scaling down waits for observed load, which is not this
//! module's call.

use serde::Serialize;

/// Scaling settings of a service.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScalingConfig {
    /// Requests per second one instance serves at its target utilisation.
    pub per_instance_rps: f64,
    /// Spare share kept above the forecast (0.2: 20 % headroom).
    pub headroom: f64,
    pub max_instances: u32,
}

/// Instances to add so that `forecast_peak_rps` (plus headroom) fits, given `running`
/// instances of which `at_risk` are expected to fail within the horizon. `0` when the
/// service already has enough; never negative: a forecast never removes an instance.
pub fn scale_up(running: u32, at_risk: u32, forecast_peak_rps: f64, cfg: &ScalingConfig) -> u32 {
    if !(forecast_peak_rps.is_finite() && cfg.per_instance_rps > 0.0) {
        return 0;
    }
    let needed = (forecast_peak_rps.max(0.0) * (1.0 + cfg.headroom.max(0.0)) / cfg.per_instance_rps)
        .ceil() as u32;
    // Spares for the instances expected to fail.
    let target = (needed.max(1) + at_risk.min(running)).min(cfg.max_instances.max(running));
    target.saturating_sub(running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CFG: ScalingConfig = ScalingConfig {
        per_instance_rps: 100.0,
        headroom: 0.2,
        max_instances: 20,
    };

    #[test]
    fn adds_ahead_of_load_and_risk() {
        assert_eq!(scale_up(2, 0, 150.0, &CFG), 0); // 180 rps fits in 2
        assert_eq!(scale_up(2, 0, 400.0, &CFG), 3); // 480 rps needs 5
        assert_eq!(scale_up(5, 1, 400.0, &CFG), 1); // one of 5 will fail: 6
        assert_eq!(scale_up(18, 0, 5_000.0, &CFG), 2); // capped at 20
        assert_eq!(scale_up(3, 0, f64::NAN, &CFG), 0);
    }

    proptest! {
        /// Never below what runs, never above the cap unless already there.
        #[test]
        fn never_removes_and_respects_the_cap(
            running in 0u32..30, at_risk in 0u32..30, load in -100.0f64..10_000.0,
        ) {
            let add = scale_up(running, at_risk, load, &CFG);
            prop_assert!(running + add <= CFG.max_instances.max(running));
        }
    }
}
