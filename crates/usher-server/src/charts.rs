//! Charts drawn as SVG on the server: pure functions from numbers to a self-contained SVG
//! document (no script, no fonts or styles fetched), for the reports.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;
/// Colours for series, in order (colour-blind-safe Okabe–Ito palette).
const COLOURS: [&str; 8] =
    ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];

/// Text made safe for SVG.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round upper bound for an axis whose largest value is `max`.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn frame(title: &str, max: f64, svg: &mut String) {
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{t}" font-family="system-ui, sans-serif" font-size="12"><title>{t}</title><rect width="100%" height="100%" fill="#fff"/><text x="{LEFT}" y="20" font-size="14" font-weight="600">{t}</text>"##,
        t = escape(title)
    );
    let plot_h = HEIGHT - TOP - BOTTOM;
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
        let label = if max >= 8.0 { format!("{v:.0}") } else { format!("{v:.2}") };
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#d0d7de"/><text x="{}" y="{:.1}" text-anchor="end" fill="#57606a">{label}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
}

/// A bar chart: one bar per (label, value).
pub fn bars(title: &str, bars: &[(String, f64)]) -> String {
    let mut svg = String::new();
    let max = nice_max(bars.iter().map(|b| b.1).fold(0.0, f64::max));
    frame(title, max, &mut svg);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / bars.len().max(1) as f64;
    for (i, (label, value)) in bars.iter().enumerate() {
        let h = plot_h * value / max;
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {value}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h - h,
            slot * 0.7,
            COLOURS[0],
            escape(label),
            x + slot * 0.35,
            HEIGHT - BOTTOM + 16.0,
            escape(&truncate(label, (slot / 7.0) as usize))
        );
    }
    if bars.is_empty() {
        empty(&mut svg);
    }
    svg.push_str("</svg>");
    svg
}

/// A line chart: x labels, and one line per (name, values) series.
pub fn lines(title: &str, x: &[String], series: &[(String, Vec<f64>)]) -> String {
    let mut svg = String::new();
    let max = nice_max(series.iter().flat_map(|s| s.1.iter().copied()).fold(0.0, f64::max));
    frame(title, max, &mut svg);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let step = if x.len() > 1 { plot_w / (x.len() - 1) as f64 } else { 0.0 };
    let every = (x.len() / 6).max(1);
    for (i, label) in x.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#57606a">{}</text>"##,
            LEFT + step * i as f64,
            HEIGHT - BOTTOM + 16.0,
            escape(label)
        );
    }
    for (n, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[n % COLOURS.len()];
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", LEFT + step * i as f64, TOP + plot_h - plot_h * v / max))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"><title>{}</title></polyline>"##,
            points.join(" "),
            escape(name)
        );
        // A legend row of up to five names; the others are named by their line's title.
        if n >= 5 {
            continue;
        }
        let lx = LEFT + n as f64 * 130.0;
        let ly = HEIGHT - 10.0;
        let _ = write!(
            svg,
            r##"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{ly:.1}">{}</text>"##,
            ly - 9.0,
            lx + 14.0,
            escape(&truncate(name, 16))
        );
    }
    if series.iter().all(|s| s.1.is_empty()) {
        empty(&mut svg);
    }
    svg.push_str("</svg>");
    svg
}

fn empty(svg: &mut String) {
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#57606a">No data in this period</text>"##,
        WIDTH / 2.0,
        HEIGHT / 2.0
    );
}

fn truncate(text: &str, max: usize) -> String {
    let max = max.max(3);
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(23.0), 25.0);
        assert_eq!(nice_max(260.0), 500.0);
    }

    #[test]
    fn bars_scale_to_the_axis_and_labels_are_escaped() {
        let svg = bars("Per agent", &[("Ana <3".into(), 5.0), ("Bob".into(), 10.0)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Ana &lt;3") && !svg.contains("Ana <3"));
        // Bob's bar fills the plot (10 of an axis to 10), Ana's half of it.
        let plot_h = HEIGHT - TOP - BOTTOM;
        assert!(svg.contains(&format!("height=\"{plot_h:.1}\"")), "{svg}");
        assert!(svg.contains(&format!("height=\"{:.1}\"", plot_h / 2.0)));
    }

    #[test]
    fn lines_have_a_point_per_value_and_a_legend_per_series() {
        let x: Vec<String> = (0..5).map(|i| format!("{i}h")).collect();
        let svg = lines(
            "Queue",
            &x,
            &[("waiting".into(), vec![0.0, 1.0, 2.0, 1.0, 0.0]), ("b".into(), vec![1.0; 5])],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        let first = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(first.split(' ').count(), 5);
        assert!(svg.contains(">waiting<"));
        assert!(lines("Empty", &[], &[]).contains("No data"));
    }
}
