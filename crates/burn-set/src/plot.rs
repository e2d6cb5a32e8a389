//! Small SVG charts (log–log line charts) for benchmark curves, written by hand so the library
//! needs no plotting or font stack: `burn-set plot-scale` draws the `bench scale` curve with it.

use std::fmt::Write;

/// One named line of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points; non-positive values are skipped (log axes).
    pub points: Vec<(f64, f64)>,
    /// SVG colour.
    pub color: &'static str,
    /// Dashed line.
    pub dashed: bool,
}

/// A log–log chart panel.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
}

const W: f64 = 460.0;
const H: f64 = 340.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;

fn decades(lo: f64, hi: f64) -> (f64, f64) {
    (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    )
}

fn label(v: f64) -> String {
    if (1e-3..1e4).contains(&v) {
        format!("{v}")
    } else {
        format!("1e{}", v.log10().round())
    }
}

fn panel_svg(out: &mut String, p: &Panel, x0: f64) {
    let pts = || {
        p.series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| *x > 0.0 && *y > 0.0)
    };
    let (xmin, xmax) = pts().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    let (ymin, ymax) = pts().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| {
        (a.min(*y), b.max(*y))
    });
    if xmin > xmax || ymin > ymax {
        return;
    }
    let (dx0, dx1) = decades(xmin, xmax);
    let (dy0, dy1) = decades(ymin, ymax);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| x0 + LEFT + (x.log10() - dx0) / (dx1 - dx0) * pw;
    let sy = |y: f64| TOP + ph - (y.log10() - dy0) / (dy1 - dy0) * ph;
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + LEFT + pw / 2.0,
        p.title
    );
    let _ = writeln!(
        out,
        r##"<rect x="{}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##,
        x0 + LEFT
    );
    for d in (dx0 as i32)..=(dx1 as i32) {
        let v = 10f64.powi(d);
        let x = sx(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" font-size="12" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            label(v)
        );
    }
    for d in (dy0 as i32)..=(dy1 as i32) {
        let v = 10f64.powi(d);
        let y = sy(v);
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" font-size="12" text-anchor="end">{}</text>"##,
            x0 + LEFT,
            x0 + LEFT + pw,
            x0 + LEFT - 6.0,
            y + 4.0,
            label(v)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="13" text-anchor="middle">{}</text>"#,
        x0 + LEFT + pw / 2.0,
        H - 12.0,
        p.x_label
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="13" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>"#,
        x0 + 16.0,
        TOP + ph / 2.0,
        x0 + 16.0,
        TOP + ph / 2.0,
        p.y_label
    );
    for (i, s) in p.series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| *x > 0.0 && *y > 0.0)
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            pts.join(" "),
            s.color
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                out,
                r#"<circle cx="{x}" cy="{y}" r="3" fill="{}"/>"#,
                s.color
            );
        }
        let ly = TOP + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}" font-size="12">{}</text>"#,
            x0 + LEFT + 10.0,
            x0 + LEFT + 34.0,
            s.color,
            x0 + LEFT + 40.0,
            ly + 4.0,
            s.name
        );
    }
}

/// Panels side by side as one SVG document.
pub fn svg(panels: &[Panel]) -> String {
    let width = W * panels.len() as f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H}" viewBox="0 0 {width} {H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    for (i, p) in panels.iter().enumerate() {
        panel_svg(&mut out, p, W * i as f64);
    }
    out.push_str("</svg>\n");
    out
}

/// One `burn-set bench scale` result: neurons per hidden layer, seconds per 10,000 samples,
/// peak memory (GB).
pub type ScalePoint = (usize, f64, f64);

/// The Scale chart: epoch time and peak memory against neurons per hidden layer, burn-set's
/// points against the authors' Python reference ([`PYTHON_REFERENCE`](crate::bench::PYTHON_REFERENCE)).
pub fn scale_chart(points: &[ScalePoint]) -> String {
    let reference = &crate::bench::PYTHON_REFERENCE;
    let line = |name: &str, color, dashed, pts: Vec<(f64, f64)>| Series {
        name: name.into(),
        points: pts,
        color,
        dashed,
    };
    let ours = |f: fn(&ScalePoint) -> f64| points.iter().map(|p| (p.0 as f64, f(p))).collect();
    let theirs =
        |f: fn(&(usize, f64, f64)) -> f64| reference.iter().map(|r| (r.0 as f64, f(r))).collect();
    svg(&[
        Panel {
            title: "Epoch of 10,000 samples (784-N-N-N-10, ε = 20)".into(),
            x_label: "neurons per hidden layer N".into(),
            y_label: "seconds".into(),
            series: vec![
                line(
                    "burn-set, sparse storage, flex",
                    "#c0392b",
                    false,
                    ours(|p| p.1),
                ),
                line(
                    "authors' Python (SciPy + Cython)",
                    "#2c3e50",
                    true,
                    theirs(|r| r.1),
                ),
            ],
        },
        Panel {
            title: "Peak memory".into(),
            x_label: "neurons per hidden layer N".into(),
            y_label: "GB".into(),
            series: vec![
                line("burn-set", "#c0392b", false, ours(|p| p.2)),
                line("authors' Python", "#2c3e50", true, theirs(|r| r.2)),
            ],
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_one_polyline_per_series_and_skips_non_positive_points() {
        let panel = Panel {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![
                Series {
                    name: "a".into(),
                    points: vec![(1e3, 1.0), (1e4, 10.0), (0.0, 5.0)],
                    color: "red",
                    dashed: false,
                },
                Series {
                    name: "b".into(),
                    points: vec![(1e3, 4.0), (3e4, 150.0)],
                    color: "blue",
                    dashed: true,
                },
            ],
        };
        let s = svg(&[panel.clone(), panel]);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 4);
        assert_eq!(s.matches("<circle").count(), 2 * 4);
        assert!(!s.contains("NaN") && !s.contains("inf"));
    }
}
