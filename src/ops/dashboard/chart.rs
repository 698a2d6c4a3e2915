//! Charts drawn by the server as SVG (no script, nothing from elsewhere): the runs created per
//! bucket of time, stacked by how they ended; their success, retry and dead-letter rates; and
//! the p50/p95 time to success. Only numbers
//! and fixed words go into the markup, so it is marked safe as a whole.

use std::fmt::Write as _;

use crate::view::{Bucket, Series};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 22.0;

/// The hour of day (UTC) a bucket starts at, as `14h`.
fn hour(bucket: &Bucket) -> String {
    format!("{}h", (bucket.start.as_millis() / 3_600_000) % 24)
}

/// A round number at or above `max` for the top of an axis.
fn ceiling(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|v| *v >= max).unwrap_or(max)
}

fn frame(svg: &mut String, title: &str, top: f64, unit: &str, series: &Series) {
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}" class="chart">"#
    );
    let plot = HEIGHT - BOTTOM - 6.0;
    for step in 0..=2 {
        let y = HEIGHT - BOTTOM - plot * f64::from(step) / 2.0;
        let value = top * f64::from(step) / 2.0;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{WIDTH}" y1="{y:.1}" y2="{y:.1}" stroke="#d9dee3"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#5b6670">{value}{unit}</text>"##,
            LEFT - 4.0,
            y + 3.0
        );
    }
    let n = series.buckets.len().max(1) as f64;
    let step = (WIDTH - LEFT) / n;
    for (i, bucket) in series.buckets.iter().enumerate() {
        if i % 3 == 0 {
            let x = LEFT + step * (i as f64 + 0.5);
            let _ = write!(
                svg,
                r##"<text x="{x:.1}" y="{}" font-size="10" text-anchor="middle" fill="#5b6670">{}</text>"##,
                HEIGHT - 6.0,
                hour(bucket)
            );
        }
    }
}

/// Runs created per bucket, stacked: succeeded, held for review, dead, still going.
pub(super) fn runs(series: &Series) -> String {
    let max = series.buckets.iter().map(|b| b.created).max().unwrap_or(0) as f64;
    let top = ceiling(max);
    let mut svg = String::new();
    frame(&mut svg, "Runs created per hour, by how they ended", top, "", series);
    let plot = HEIGHT - BOTTOM - 6.0;
    let step = (WIDTH - LEFT) / series.buckets.len().max(1) as f64;
    for (i, b) in series.buckets.iter().enumerate() {
        let x = LEFT + step * i as f64 + step * 0.15;
        let width = step * 0.7;
        let going = b.created.saturating_sub(b.succeeded + b.review + b.dead);
        let mut y = HEIGHT - BOTTOM;
        for (count, color, what) in [
            (b.succeeded, "#1e7a3c", "succeeded"),
            (b.review, "#c08a1a", "held for review"),
            (b.dead, "#a4262c", "dead"),
            (going, "#1f5fa8", "in progress"),
        ] {
            if count == 0 {
                continue;
            }
            let h = plot * count as f64 / top;
            y -= h;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{h:.1}" fill="{color}"><title>{} {count} {what}</title></rect>"#,
                hour(b)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Of the runs created per bucket, the share that succeeded, took more than one attempt, and
/// was dead-lettered, as lines (%); a bucket with no runs has no point.
pub(super) fn rates(series: &Series) -> String {
    let mut svg = String::new();
    frame(&mut svg, "Success, retry and dead-letter rates per hour", 100.0, "%", series);
    let share = |b: &Bucket, n: u64| (b.created > 0).then(|| 100.0 * n as f64 / b.created as f64);
    polyline(&mut svg, series, "#1e7a3c", 100.0, |b| share(b, b.succeeded));
    polyline(&mut svg, series, "#c08a1a", 100.0, |b| share(b, b.retried));
    polyline(&mut svg, series, "#a4262c", 100.0, |b| share(b, b.dead));
    svg.push_str("</svg>");
    svg
}

/// A line through `value` of each bucket that has one, on an axis up to `top`, with a dot on
/// each point.
fn polyline(
    svg: &mut String,
    series: &Series,
    color: &str,
    top: f64,
    value: impl Fn(&Bucket) -> Option<f64>,
) {
    let plot = HEIGHT - BOTTOM - 6.0;
    let step = (WIDTH - LEFT) / series.buckets.len().max(1) as f64;
    let points: Vec<(f64, f64)> = series
        .buckets
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let v = value(b)?;
            Some((LEFT + step * (i as f64 + 0.5), HEIGHT - BOTTOM - plot * v / top))
        })
        .collect();
    if points.is_empty() {
        return;
    }
    let line: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = write!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
        line.join(" ")
    );
    for (x, y) in &points {
        let _ = write!(svg, r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{color}"/>"#);
    }
}

/// p50 and p95 time from creation to success per bucket, as lines (ms).
pub(super) fn latency(series: &Series) -> String {
    let max = series.buckets.iter().filter_map(|b| b.p95_ms).max().unwrap_or(0) as f64;
    let top = ceiling(max);
    let mut svg = String::new();
    frame(&mut svg, "Time to success per hour, p50 and p95", top, " ms", series);
    for (pick, color) in [(0, "#1f5fa8"), (1, "#c08a1a")] {
        let ms = |b: &Bucket| if pick == 0 { b.p50_ms } else { b.p95_ms };
        polyline(&mut svg, series, color, top, |b| ms(b).map(|v| v as f64));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(ceiling(0.0), 1.0);
        assert_eq!(ceiling(7.0), 10.0);
        assert_eq!(ceiling(13.0), 20.0);
        assert_eq!(ceiling(480.0), 500.0);
        assert_eq!(ceiling(1000.0), 1000.0);
    }

    #[test]
    fn rates_are_shares_of_the_runs_created_and_skip_empty_hours() {
        let bucket = |created, succeeded, retried, dead| Bucket {
            start: crate::clock::Timestamp::from_millis(0),
            created,
            succeeded,
            dead,
            review: 0,
            retried,
            p50_ms: None,
            p95_ms: None,
        };
        let series = Series {
            bucket_secs: 3600,
            buckets: vec![bucket(4, 2, 1, 1), bucket(0, 0, 0, 0), bucket(2, 2, 0, 0)],
        };
        let svg = rates(&series);
        // The plot is 132 units high from y=138: 50% is at y=72, 25% at 105, 100% at 6.
        let x0 = LEFT + (WIDTH - LEFT) / 3.0 * 0.5;
        let x2 = LEFT + (WIDTH - LEFT) / 3.0 * 2.5;
        assert!(svg.contains(&format!(r#"points="{x0:.1},72.0 {x2:.1},6.0""#)), "{svg}");
        assert!(svg.contains(&format!(r#"points="{x0:.1},105.0 {x2:.1},138.0""#)), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 3);
    }
}
