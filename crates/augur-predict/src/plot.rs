//! Small SVG plots, written by hand: a backtest (series, score, threshold, labelled windows)
//! and a reliability diagram (predicted probability against observed frequency).

use std::fmt::Write;

const W: f64 = 900.0;
const H: f64 = 180.0;

fn polyline(values: &[f64], y0: f64, h: f64, lo: f64, hi: f64, color: &str) -> String {
    let n = values.len().max(2) as f64 - 1.0;
    let span = (hi - lo).max(1e-12);
    let mut pts = String::new();
    // At most ~2 points per pixel column keeps files small.
    let stride = (values.len() / 1800).max(1);
    for (i, v) in values.iter().enumerate().step_by(stride) {
        let x = 40.0 + (W - 50.0) * i as f64 / n;
        let y = y0 + h - h * ((v - lo) / span).clamp(0.0, 1.0);
        let _ = write!(pts, "{x:.1},{y:.1} ");
    }
    format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1\" points=\"{pts}\"/>")
}

/// A backtest: the series on top, the anomaly score below, windows shaded, detections marked.
pub fn backtest_svg(
    title: &str,
    values: &[f64],
    scores: &[f64],
    windows: &[(usize, usize)],
    threshold: Option<f64>,
) -> String {
    let n = values.len().max(2) as f64 - 1.0;
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        2.0 * H + 60.0
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(s, "<text x=\"40\" y=\"16\">{}</text>", escape(title));
    for &(a, b) in windows {
        let x0 = 40.0 + (W - 50.0) * a as f64 / n;
        let x1 = 40.0 + (W - 50.0) * b as f64 / n;
        let _ = writeln!(
            s,
            "<rect x=\"{x0:.1}\" y=\"24\" width=\"{:.1}\" height=\"{}\" fill=\"#fdd\"/>",
            (x1 - x0).max(1.0),
            2.0 * H + 20.0
        );
    }
    let _ = writeln!(s, "{}", polyline(values, 24.0, H, lo, hi, "#246"));
    let _ = writeln!(s, "{}", polyline(scores, 44.0 + H, H, 0.0, 1.0, "#a40"));
    if let Some(t) = threshold {
        let y = 44.0 + H + H * (1.0 - t.clamp(0.0, 1.0));
        let _ = writeln!(
            s,
            "<line x1=\"40\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#888\" stroke-dasharray=\"4\"/>",
            W - 10.0
        );
    }
    let _ = writeln!(s, "<text x=\"4\" y=\"{}\">value</text>", 24.0 + H / 2.0);
    let _ = writeln!(s, "<text x=\"4\" y=\"{}\">score</text>", 44.0 + 1.5 * H);
    s.push_str("</svg>\n");
    s
}

/// A reliability diagram from `(predicted, observed)` bins: points on the diagonal are
/// calibrated. `counts` label each point.
pub fn reliability_svg(title: &str, bins: &[(f64, f64, usize)]) -> String {
    let size = 360.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        size + 80.0,
        size + 80.0
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(s, "<text x=\"50\" y=\"16\">{}</text>", escape(title));
    let (x0, y0) = (50.0, 30.0);
    let _ = writeln!(
        s,
        "<rect x=\"{x0}\" y=\"{y0}\" width=\"{size}\" height=\"{size}\" fill=\"none\" stroke=\"#999\"/>"
    );
    let _ = writeln!(
        s,
        "<line x1=\"{x0}\" y1=\"{}\" x2=\"{}\" y2=\"{y0}\" stroke=\"#bbb\" stroke-dasharray=\"4\"/>",
        y0 + size,
        x0 + size
    );
    // Both axes share one scale, so the diagonal stays the calibrated line.
    let top = bins
        .iter()
        .map(|b| b.0.max(b.1))
        .fold(0.0f64, f64::max)
        .clamp(0.001, 1.0);
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\">{top:.3}</text>",
        x0 + size - 20.0,
        y0 + size + 14.0
    );
    let _ = writeln!(s, "<text x=\"4\" y=\"{}\">{top:.3}</text>", y0 + 10.0);
    for &(p, o, n) in bins {
        let cx = x0 + size * (p / top).clamp(0.0, 1.0);
        let cy = y0 + size * (1.0 - (o / top).clamp(0.0, 1.0));
        let _ = writeln!(
            s,
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\" fill=\"#a40\"/>"
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\">{n}</text>",
            cx + 6.0,
            cy - 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\">predicted</text>",
        x0 + size / 2.0 - 25.0,
        y0 + size + 30.0
    );
    let _ = writeln!(s, "<text x=\"4\" y=\"{}\">observed</text>", y0 + size / 2.0);
    s.push_str("</svg>\n");
    s
}

/// Bins `(predicted, outcome)` pairs into `k` equal-width bins: (mean predicted, observed
/// rate, count), empty bins left out.
pub fn reliability_bins(pairs: &[(f64, bool)], k: usize) -> Vec<(f64, f64, usize)> {
    let k = k.max(1);
    let mut acc = vec![(0.0, 0usize, 0usize); k];
    for &(p, y) in pairs {
        let b = ((p.clamp(0.0, 1.0) * k as f64) as usize).min(k - 1);
        acc[b].0 += p;
        acc[b].1 += y as usize;
        acc[b].2 += 1;
    }
    acc.into_iter()
        .filter(|a| a.2 > 0)
        .map(|(sp, pos, n)| (sp / n as f64, pos as f64 / n as f64, n))
        .collect()
}

/// Bins `(predicted, outcome)` pairs into `k` bins of equal count by predicted value: (mean
/// predicted, observed rate, count). Shows ranking where predictions crowd one end.
pub fn quantile_bins(pairs: &[(f64, bool)], k: usize) -> Vec<(f64, f64, usize)> {
    let mut sorted = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let k = k.clamp(1, sorted.len().max(1));
    let per = sorted.len().div_ceil(k).max(1);
    sorted
        .chunks(per)
        .map(|c| {
            let n = c.len();
            let p = c.iter().map(|x| x.0).sum::<f64>() / n as f64;
            let o = c.iter().filter(|x| x.1).count() as f64 / n as f64;
            (p, o, n)
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
