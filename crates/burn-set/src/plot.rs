//! Small SVG charts (log–log line charts) for benchmark curves, written by hand so the library
//! needs no plotting or font stack: `burn-set plot-scale` draws the `bench scale` curve with it.

use std::fmt::Write;

/// One named line of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points; non-positive and non-finite values are skipped (log axes).
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

/// Decades of finite f64 values > 0 (the smallest subnormal is about 1e-324, the largest
/// value 1.8e308): the axes never span more, whatever the data.
const DECADES: (f64, f64) = (-324.0, 309.0);

/// The axis range `[10^lo, 10^hi]` (whole decades, at least one) of finite positive values
/// `lo..=hi`; clamped to [`DECADES`] so a non-finite bound can never make the range unbounded.
fn decades(lo: f64, hi: f64) -> (f64, f64) {
    let clamp = |d: f64| {
        if d.is_nan() {
            0.0
        } else {
            d.clamp(DECADES.0, DECADES.1)
        }
    };
    let d0 = clamp(lo.log10().floor());
    let d1 = clamp(hi.log10().ceil()).max(d0 + 1.0);
    (d0, d1)
}

/// The decades `d0..=d1` that get a tick: all of them, or every k-th so that there are at most
/// about ten (an axis over hundreds of decades stays readable and cheap).
fn ticks(d0: f64, d1: f64) -> impl Iterator<Item = i32> {
    let (d0, d1) = (d0 as i32, d1 as i32);
    let step = ((d1 - d0) / 10).max(1) as usize;
    (d0..=d1).step_by(step)
}

/// Whether a point can be drawn on log–log axes: both coordinates finite and > 0.
fn drawable(&(x, y): &(f64, f64)) -> bool {
    x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0
}

/// The label of the tick at `10^d`.
fn label(d: i32) -> String {
    if (-3..=3).contains(&d) {
        format!("{}", 10f64.powi(d))
    } else {
        format!("1e{d}")
    }
}

fn panel_svg(out: &mut String, p: &Panel, x0: f64) {
    let pts = || {
        p.series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| drawable(p))
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
    // positions of a decade (log10 of a value) on each axis
    let sdx = |d: f64| x0 + LEFT + (d - dx0) / (dx1 - dx0) * pw;
    let sdy = |d: f64| TOP + ph - (d - dy0) / (dy1 - dy0) * ph;
    let sx = |x: f64| sdx(x.log10());
    let sy = |y: f64| sdy(y.log10());
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
    for d in ticks(dx0, dx1) {
        let x = sdx(d as f64);
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" font-size="12" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            label(d)
        );
    }
    for d in ticks(dy0, dy1) {
        let y = sdy(d as f64);
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" font-size="12" text-anchor="end">{}</text>"##,
            x0 + LEFT,
            x0 + LEFT + pw,
            x0 + LEFT - 6.0,
            y + 4.0,
            label(d)
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
            .filter(|p| drawable(p))
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

/// The keys of a `burn-set bench scale --json` line that the chart reads.
const SCALE_KEYS: [&str; 4] = ["hidden", "samples", "epoch_seconds", "peak_memory_gb"];

/// Reads the points of `burn-set bench scale --json` output: every line that is a JSON object
/// with all of `hidden`, `samples`, `epoch_seconds` and `peak_memory_gb` is a point; other
/// lines are skipped. A point line with a value the chart cannot use is an error naming the
/// (1-based) line: `hidden` and `samples` must be positive integers, `epoch_seconds` finite
/// and positive (and so must the seconds per 10,000 samples derived from it), `peak_memory_gb`
/// finite and ≥ 0 (0: not measured, as off Linux; left out of the memory panel).
pub fn parse_scale_lines(text: &str) -> Result<Vec<ScalePoint>, String> {
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Ok(serde_json::Value::Object(v)) = serde_json::from_str(line) else {
            continue;
        };
        if !SCALE_KEYS.iter().all(|k| v.contains_key(*k)) {
            continue;
        }
        let err = |m: String| format!("line {}: {m}", i + 1);
        let count = |k: &str| {
            v[k].as_u64()
                .filter(|&n| n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| err(format!("{k} must be a positive integer, got {}", v[k])))
        };
        let number = |k: &str| {
            v[k].as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| err(format!("{k} must be a finite number, got {}", v[k])))
        };
        let hidden = count("hidden")?;
        let samples = count("samples")?;
        let seconds = number("epoch_seconds")?;
        if seconds <= 0.0 {
            return Err(err(format!(
                "epoch_seconds must be > 0, got {}",
                v["epoch_seconds"]
            )));
        }
        let per_10k = seconds * 10_000.0 / samples as f64;
        if !(per_10k.is_finite() && per_10k > 0.0) {
            return Err(err(format!(
                "epoch_seconds {} over {samples} samples gives {per_10k:e} seconds per 10,000 \
                 samples, which cannot be drawn",
                v["epoch_seconds"]
            )));
        }
        let memory = number("peak_memory_gb")?;
        if memory < 0.0 {
            return Err(err(format!(
                "peak_memory_gb must be ≥ 0, got {}",
                v["peak_memory_gb"]
            )));
        }
        points.push((hidden, per_10k, memory));
    }
    Ok(points)
}

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

    #[test]
    fn non_finite_and_huge_ranges_draw_quickly_with_bounded_ticks() {
        let panel = |points| Panel {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "a".into(),
                points,
                color: "red",
                dashed: false,
            }],
        };
        // non-finite points are skipped; the extreme finite ones span ~600 decades
        let s = svg(&[panel(vec![
            (f64::INFINITY, 1.0),
            (1.0, f64::NAN),
            (1e-300, 1e308),
            (1e300, 1e-320),
        ])]);
        assert_eq!(s.matches("<circle").count(), 2);
        assert!(s.matches("<line").count() < 40, "{s}");
        assert!(!s.contains("NaN") && !s.contains("inf"));
        // only non-finite points: an empty panel
        let s = svg(&[panel(vec![(f64::INFINITY, f64::INFINITY)])]);
        assert_eq!(s.matches("<polyline").count(), 0);
        assert_eq!(decades(f64::INFINITY, f64::INFINITY), (309.0, 310.0));
    }

    #[test]
    fn scale_lines_are_parsed_and_bad_values_rejected_with_the_line() {
        let good = r#"{"hidden":100,"connections":25680,"samples":100,"epoch_seconds":0.01,"peak_memory_gb":0.03,"storage":"sparse"}"#;
        let text = format!("junk\n{good}\n{{\"ratio\":1}}\n");
        let points = parse_scale_lines(&text).unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].0, 100);
        assert!((points[0].1 - 1.0).abs() < 1e-12 && points[0].2 == 0.03);
        let line = |h: &str, s: &str, e: &str, m: &str| {
            format!(
                "{good}\n{{\"hidden\":{h},\"samples\":{s},\"epoch_seconds\":{e},\"peak_memory_gb\":{m}}}"
            )
        };
        for (text, want) in [
            (
                line("200", "0", "1.0", "1"),
                "line 2: samples must be a positive integer, got 0",
            ),
            (
                line("200", "1e-300", "1e308", "1"),
                "line 2: samples must be a positive integer",
            ),
            (
                line("1e30", "100", "1.0", "1"),
                "line 2: hidden must be a positive integer, got 1e+30",
            ),
            (
                line("-200", "100", "1.0", "1"),
                "line 2: hidden must be a positive integer, got -200",
            ),
            (
                line("200", "100", "-1.0", "1"),
                "line 2: epoch_seconds must be > 0, got -1",
            ),
            (
                line("200", "1", "1e308", "1"),
                "line 2: epoch_seconds 1e+308 over 1 samples gives inf",
            ),
            (
                line("200", "100", "\"x\"", "1"),
                "line 2: epoch_seconds must be a finite number",
            ),
            (
                line("200", "100", "1.0", "-1"),
                "line 2: peak_memory_gb must be ≥ 0, got -1",
            ),
        ] {
            let e = parse_scale_lines(&text).unwrap_err();
            assert!(e.starts_with(want), "{e}");
        }
        // peak memory 0 = not measured: accepted
        assert_eq!(
            parse_scale_lines(&line("200", "100", "1.0", "0"))
                .unwrap()
                .len(),
            2
        );
    }
}
