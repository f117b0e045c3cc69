//! The latency-versus-offered-load chart, as a small hand-written SVG (no
//! plotting dependency): p50, p99 and p99.9 on a log scale against the
//! offered rate, with the closed-loop peak and the 10 ms target marked.

use std::fmt::Write as _;

/// A line of the chart: its name, its colour, and its value at a point.
type Series = (&'static str, &'static str, fn(&Point) -> f64);

/// One open-loop run of the sweep.
#[derive(Debug, Clone)]
pub struct Point {
    /// Offered rate as a percentage of the closed-loop peak.
    pub percent: u32,
    /// Requests offered per second.
    pub offered: f64,
    /// Replies per second.
    pub achieved: f64,
    /// Latencies in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The daemon's group commits during the point: how many, and their
    /// p99 and longest, in milliseconds (a stall in the writer holds every
    /// reply queued behind it).
    pub commits: u64,
    pub commit_p99_ms: f64,
    pub commit_max_ms: f64,
    /// Per message, from when the daemon took it from the broker to each
    /// of its stages (`timings::STAGES`): p50 and p99, in milliseconds.
    /// Empty for a server without them (the echo).
    pub stages_ms: Vec<(f64, f64)>,
    /// The writer's copies of the log's tail: how many, and their median
    /// and longest in milliseconds.
    pub tails: u64,
    pub tail_p50_ms: f64,
    pub tail_max_ms: f64,
    /// Pages the writer's tail copies had to copy: median and most.
    pub tail_pages_p50: u64,
    pub tail_pages_max: u64,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// The issue's latency target at half of the peak.
const TARGET_MS: f64 = 10.0;

/// Renders the sweep; `peak` is the closed-loop throughput the percentages
/// refer to, `title` names the run (machine, date).
pub fn svg(points: &[Point], peak: f64, title: &str) -> String {
    let x_max = points
        .iter()
        .map(|p| p.offered)
        .fold(peak, f64::max)
        .max(1.0)
        * 1.05;
    let y_values = points
        .iter()
        .flat_map(|p| [p.p50_ms, p.p99_ms, p.p999_ms])
        .filter(|v| *v > 0.0);
    let y_hi = y_values.clone().fold(TARGET_MS, f64::max);
    let y_lo = y_values.fold(1.0, f64::min);
    // Whole decades, so the grid lines are 0.1, 1, 10, 100 ms...
    let (dec_lo, dec_hi) = (
        y_lo.log10().floor(),
        y_hi.log10().ceil().max(y_lo.log10().floor() + 1.0),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |v: f64| LEFT + v / x_max * plot_w;
    let y = |ms: f64| TOP + plot_h - (ms.max(1e-6).log10() - dec_lo) / (dec_hi - dec_lo) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">wasmpay: latency (publish to reply) versus offered load</text>"#,
        WIDTH / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="40" text-anchor="middle" fill="#555">{}</text>"##,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and axes.
    let mut decade = dec_lo;
    while decade <= dec_hi + 1e-9 {
        let ms = 10f64.powf(decade);
        let yy = y(ms);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            format_ms(ms)
        );
        decade += 1.0;
    }
    let ticks = 6;
    for i in 0..=ticks {
        let v = x_max / f64::from(ticks) * f64::from(i);
        let xx = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            v
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (payments/s)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>"#,
        TOP + plot_h / 2.0
    );
    // The peak and the target.
    let px = x(peak);
    let _ = writeln!(
        s,
        r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#888" stroke-dasharray="5 4"/><text x="{:.1}" y="{:.1}" fill="#555" text-anchor="end">closed-loop peak {peak:.0}/s</text>"##,
        TOP + plot_h,
        px - 4.0,
        TOP + 14.0
    );
    let ty = y(TARGET_MS);
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#c33" stroke-dasharray="2 3"/><text x="{:.1}" y="{:.1}" fill="#c33">10 ms target</text>"##,
        LEFT + plot_w,
        LEFT + 6.0,
        ty - 5.0
    );
    // The three series.
    let series: [Series; 3] = [
        ("p50", "#1f77b4", |p| p.p50_ms),
        ("p99", "#ff7f0e", |p| p.p99_ms),
        ("p99.9", "#2ca02c", |p| p.p999_ms),
    ];
    for (i, (name, colour, value)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.offered), y(value(p))))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for p in points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}% offered ({:.0}/s, achieved {:.0}/s): {name} {}</title></circle>"#,
                x(p.offered),
                y(value(p)),
                p.percent,
                p.offered,
                p.achieved,
                format_ms(value(p))
            );
        }
        let ly = TOP + 20.0 + 20.0 * i as f64;
        let lx = LEFT + plot_w + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0
        );
    }
    // The sweep's own table beside the legend.
    let lx = LEFT + plot_w + 16.0;
    let mut ly = TOP + 100.0;
    let _ = writeln!(
        s,
        r##"<text x="{lx:.1}" y="{ly:.1}" fill="#555">offered → p99</text>"##
    );
    for p in points {
        ly += 16.0;
        let _ = writeln!(
            s,
            r##"<text x="{lx:.1}" y="{ly:.1}" fill="#555">{}%: {}</text>"##,
            p.percent,
            format_ms(p.p99_ms)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn format_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_one_svg_with_a_series_per_percentile() {
        let points: Vec<Point> = [10, 50, 100]
            .iter()
            .map(|&percent| Point {
                percent,
                offered: f64::from(percent) * 30.0,
                achieved: f64::from(percent) * 30.0,
                p50_ms: 0.5 + f64::from(percent) / 100.0,
                p99_ms: 2.0 + f64::from(percent) / 10.0,
                p999_ms: 5.0 + f64::from(percent) / 5.0,
                max_ms: 40.0,
                commits: 100,
                commit_p99_ms: 3.0,
                commit_max_ms: 30.0,
                stages_ms: Vec::new(),
                tails: 0,
                tail_p50_ms: 0.0,
                tail_max_ms: 0.0,
                tail_pages_p50: 0,
                tail_pages_max: 0,
            })
            .collect();
        let svg = svg(&points, 3000.0, "test <run>");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("test &lt;run&gt;"));
    }
}
