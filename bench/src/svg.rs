//! Charts as plain SVG text: throughput against baseline (bars) and latency by
//! percentile (curves on a log-log scale).

use std::fmt::Write as _;

/// One bar: a figure as a share of its baseline, with the target share.
pub struct Bar {
    pub label: String,
    /// measured / baseline.
    pub ratio: f64,
    /// The ratio the target asks for, if any.
    pub target: Option<f64>,
    /// Small print: the absolute figures.
    pub note: String,
}

/// One latency curve: (percentile 0..100, µs) points.
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, u64)>,
}

const COLORS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bars, 0..max(ratio) percent, a dashed tick at each target.
pub fn bars(title: &str, bars: &[Bar]) -> String {
    let row = 46.0;
    let left = 230.0;
    let width = 420.0;
    let top = 50.0;
    #[allow(clippy::cast_precision_loss)]
    let height = top + row * bars.len() as f64 + 40.0;
    let max = bars
        .iter()
        .flat_map(|b| [b.ratio, b.target.unwrap_or(0.0)])
        .fold(1.0_f64, f64::max)
        * 1.1;
    let x = |r: f64| left + width * (r / max);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="24" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let mut tick = 0.0;
    while tick <= max {
        let _ = write!(
            s,
            r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle" fill="#666">{3:.0}%</text>"##,
            x(tick),
            height - 35.0,
            height - 20.0,
            tick * 100.0
        );
        tick += if max > 3.0 { 1.0 } else { 0.25 };
    }
    for (i, bar) in bars.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let y = top + row * i as f64;
        let color = match bar.target {
            None => "#8c8c8c",
            Some(t) if bar.ratio >= t => "#59a14f",
            Some(_) => "#e15759",
        };
        let _ = write!(
            s,
            r##"<text x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text><rect x="{left}" y="{y:.1}" width="{w:.1}" height="20" fill="{color}"/><text x="{vx:.1}" y="{ty:.1}">{pct:.0}%</text><text x="{left}" y="{ny:.1}" fill="#555" font-size="10">{note}</text>"##,
            lx = left - 8.0,
            ty = y + 14.0,
            label = escape(&bar.label),
            w = (x(bar.ratio) - left).max(1.0),
            vx = x(bar.ratio) + 4.0,
            pct = bar.ratio * 100.0,
            ny = y + 32.0,
            note = escape(&bar.note),
        );
        if let Some(target) = bar.target {
            let _ = write!(
                s,
                r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="black" stroke-width="2" stroke-dasharray="3,2"/>"##,
                x(target),
                y - 3.0,
                y + 23.0
            );
        }
    }
    let _ = write!(
        s,
        r##"<text x="10" y="{:.1}" fill="#555" font-size="10">green: target met, red: missed, grey: no target; dashed tick: target</text></svg>"##,
        height - 4.0
    );
    s
}

/// Where a percentile sits on the x axis: log of 1/(1-p), 0..4 for 0..99.99%.
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-4);
    -rest.log10()
}

/// Latency by percentile, one line per curve, log scale on both axes.
pub fn percentiles(title: &str, curves: &[Curve]) -> String {
    let (left, top, width, height) = (70.0, 40.0, 560.0, 320.0);
    let all = curves.iter().flat_map(|c| c.points.iter().map(|p| p.1));
    #[allow(clippy::cast_precision_loss)]
    let max_us = all.clone().max().unwrap_or(1000).max(10) as f64;
    #[allow(clippy::cast_precision_loss)]
    let min_us = all.min().unwrap_or(1).max(1) as f64;
    let lo = (min_us / 1000.0).log10().floor();
    let hi = (max_us / 1000.0).log10().ceil().max(lo + 1.0);
    #[allow(clippy::cast_precision_loss)]
    let y =
        |us: u64| top + height - height * (((us.max(1) as f64) / 1000.0).log10() - lo) / (hi - lo);
    let x = |p: f64| left + width * nines(p) / 4.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="900" height="420" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="10" y="24" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (p, label) in [
        (0.0, "0%"),
        (90.0, "90%"),
        (99.0, "99%"),
        (99.9, "99.9%"),
        (99.99, "99.99%"),
    ] {
        let _ = write!(
            s,
            r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle" fill="#666">{label}</text>"##,
            x(p),
            top + height,
            top + height + 16.0
        );
    }
    let mut decade = lo;
    while decade <= hi {
        let ms = 10f64.powf(decade);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let us = (ms * 1000.0).round() as u64;
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" text-anchor="end" fill="#666">{ms} ms</text>"##,
            y(us),
            left + width,
            left - 6.0,
            y(us) + 4.0
        );
        decade += 1.0;
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">percentile</text>"##,
        left + width / 2.0,
        top + height + 34.0
    );
    for (i, curve) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = curve
            .points
            .iter()
            .filter(|p| p.0 <= 99.99)
            .map(|&(p, us)| format!("{:.1},{:.1}", x(p), y(us)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        #[allow(clippy::cast_precision_loss)]
        let ly = top + 14.0 + 18.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{0:.1}" y="{1:.1}" width="14" height="4" fill="{color}"/><text x="{2:.1}" y="{3:.1}">{4}</text>"#,
            left + width + 12.0,
            ly - 4.0,
            left + width + 30.0,
            ly,
            escape(&curve.label)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_mark_targets_and_escape_labels() {
        let svg = bars(
            "t",
            &[
                Bar {
                    label: "a<b".into(),
                    ratio: 0.5,
                    target: Some(0.6),
                    note: String::new(),
                },
                Bar {
                    label: "c".into(),
                    ratio: 0.8,
                    target: Some(0.7),
                    note: "x & y".into(),
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a&lt;b") && svg.contains("x &amp; y"));
        assert!(svg.contains("#e15759") && svg.contains("#59a14f"));
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
    }

    #[test]
    fn percentile_axis_spreads_the_nines() {
        assert!(nines(0.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(100.0) - 4.0).abs() < 1e-9);
        let svg = percentiles(
            "t",
            &[Curve {
                label: "echo".into(),
                points: vec![(0.0, 100), (50.0, 400), (99.0, 2000), (99.99, 9000)],
            }],
        );
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("echo"));
    }
}
