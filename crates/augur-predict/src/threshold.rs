//! Time to threshold: for a metric with a known limit (disk, memory, temperature), when will
//! the current trend reach it? A least-squares line over the recent window, weighted towards
//! the newest points, gives the slope; the lead time is the distance to the limit over it.

/// Which side of the limit is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// Failure when the value rises to the limit (disk used, memory, temperature).
    Rising,
    /// Failure when the value falls to the limit (free space, battery).
    Falling,
}

/// A limit on one metric.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limit {
    pub value: f64,
    pub direction: Direction,
}

/// Seconds until the trend of `points` (`(t_seconds, value)`, oldest first) reaches `limit`:
/// `Some(0.0)` when it is already there, `None` when the trend moves away from it or is flat,
/// or when fewer than 3 points are given. Points are weighted by recency (half weight at the
/// window's middle), so a trend that just turned is seen quickly.
pub fn time_to_threshold(points: &[(f64, f64)], limit: Limit) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let sign = match limit.direction {
        Direction::Rising => 1.0,
        Direction::Falling => -1.0,
    };
    let (t_last, x_last) = *points.last()?;
    if sign * (x_last - limit.value) >= 0.0 {
        return Some(0.0);
    }
    let n = points.len() as f64;
    let half = (n / 2.0).max(1.0);
    let decay = 0.5f64.powf(1.0 / half);
    let (mut sw, mut st, mut sx, mut stt, mut stx) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut w = 1.0;
    for &(t, x) in points.iter().rev() {
        let t = t - t_last;
        sw += w;
        st += w * t;
        sx += w * x;
        stt += w * t * t;
        stx += w * t * x;
        w *= decay;
    }
    let denom = sw * stt - st * st;
    if denom.abs() < 1e-12 {
        return None;
    }
    let slope = (sw * stx - st * sx) / denom;
    let fitted_now = (sx - slope * st) / sw;
    if sign * slope <= 1e-12 {
        return None;
    }
    let gap = limit.value - fitted_now;
    if sign * gap <= 0.0 {
        return Some(0.0);
    }
    Some(gap / slope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_rise_reaches_its_limit_on_time() {
        let pts: Vec<(f64, f64)> = (0..60)
            .map(|i| (i as f64 * 10.0, 50.0 + i as f64))
            .collect();
        // Last value 109 at t=590, +0.1/s: 90 → already beyond; use 150: 41 left → 410 s.
        let lead = time_to_threshold(
            &pts,
            Limit {
                value: 150.0,
                direction: Direction::Rising,
            },
        );
        assert!((lead.unwrap() - 410.0).abs() < 1e-6, "{lead:?}");
        let lead = time_to_threshold(
            &pts,
            Limit {
                value: 90.0,
                direction: Direction::Rising,
            },
        );
        assert_eq!(lead, Some(0.0));
    }

    #[test]
    fn a_flat_or_receding_series_never_reaches_it() {
        let flat: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 5.0)).collect();
        assert_eq!(
            time_to_threshold(
                &flat,
                Limit {
                    value: 9.0,
                    direction: Direction::Rising
                }
            ),
            None
        );
        let falling: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 5.0 - i as f64 * 0.1)).collect();
        let rising_limit = Limit {
            value: 9.0,
            direction: Direction::Rising,
        };
        assert_eq!(time_to_threshold(&falling, rising_limit), None);
        let falling_limit = Limit {
            value: 1.0,
            direction: Direction::Falling,
        };
        assert!(time_to_threshold(&falling, falling_limit).unwrap() > 0.0);
    }
}
