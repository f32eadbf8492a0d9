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
pub fn time_to_threshold<I, P>(points: I, limit: Limit) -> Option<f64>
where
    I: IntoIterator<Item = P>,
    I::IntoIter: DoubleEndedIterator + ExactSizeIterator + Clone,
    P: std::borrow::Borrow<(f64, f64)>,
{
    let points = points.into_iter().map(|p| *p.borrow());
    if points.len() < 3 {
        return None;
    }
    let sign = match limit.direction {
        Direction::Rising => 1.0,
        Direction::Falling => -1.0,
    };
    let (_, x_last) = points.clone().next_back()?;
    if sign * (x_last - limit.value) >= 0.0 {
        return Some(0.0);
    }
    let (fitted_now, slope) = weighted_trend(points)?;
    if sign * slope <= 1e-12 {
        return None;
    }
    let gap = limit.value - fitted_now;
    if sign * gap <= 0.0 {
        return Some(0.0);
    }
    Some(gap / slope)
}

/// The recency-weighted least-squares line through `points` (`(t_seconds, value)`, oldest
/// first; half weight at the window's middle): its value at the newest point and its slope
/// per second. `None` for fewer than 3 points or all at one time.
pub fn weighted_trend<I>(points: I) -> Option<(f64, f64)>
where
    I: DoubleEndedIterator<Item = (f64, f64)> + ExactSizeIterator,
{
    let n = points.len();
    if n < 3 {
        return None;
    }
    let half = (n as f64 / 2.0).max(1.0);
    let decay = 0.5f64.powf(1.0 / half);
    let (mut sw, mut st, mut sx, mut stt, mut stx) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut w = 1.0;
    let mut t_last = None;
    for (t, x) in points.rev() {
        let t = t - *t_last.get_or_insert(t);
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
    Some(((sx - slope * st) / sw, slope))
}

/// Where `points` (`(t_seconds, value)`, oldest first) stand and head: the recency-weighted
/// trend's value at the newest point and its slope per second; with fewer than 3 points the
/// newest value and no slope. `None` without points.
pub fn level_and_trend<I>(points: I) -> Option<(f64, f64)>
where
    I: DoubleEndedIterator<Item = (f64, f64)> + ExactSizeIterator + Clone,
{
    let (_, last) = points.clone().next_back()?;
    Some(weighted_trend(points).unwrap_or((last, 0.0)))
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

    #[test]
    fn level_and_trend_follow_a_line_and_need_three_points_for_a_slope() {
        let rising: Vec<(f64, f64)> = (0..60).map(|i| (i as f64, 100.0 + i as f64)).collect();
        let (level, slope) = level_and_trend(rising.iter().copied()).unwrap();
        assert!((level - 159.0).abs() < 1e-6 && (slope - 1.0).abs() < 1e-9);
        let two = [(0.0, 5.0), (1.0, 7.0)];
        assert_eq!(level_and_trend(two.iter().copied()), Some((7.0, 0.0)));
        assert_eq!(level_and_trend(std::iter::empty::<(f64, f64)>()), None);
    }
}
