//! Trend charts as SVG, drawn on the server with `plotters` so the dashboard needs no charting
//! script and no Node.js build step. A chart is a pure function of its series.

use chrono::TimeZone;
use chrono_tz::Tz;
use plotters::prelude::*;

/// How a metric's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// 0..1, shown as a percentage.
    Ratio,
    Seconds,
}

/// One metric over time: a value (or none, for buckets without calls) per bucket start.
#[derive(Debug, Clone)]
pub struct Series {
    pub unit: Unit,
    /// Bucket starts in milliseconds, ascending, with the value of each.
    pub points: Vec<(i64, Option<f64>)>,
    /// The target, drawn as a dashed red line.
    pub target: Option<f64>,
    /// Zone of the time labels.
    pub tz: Tz,
    /// Label the axis by day (`Mon 23`) rather than by date (`23 Nov`).
    pub weekday_labels: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("chart drawing failed: {0}")]
pub struct ChartError(String);

const WIDTH: u32 = 560;
const HEIGHT: u32 = 200;
const LINE: RGBColor = RGBColor(0x4f, 0xa3, 0xff);
const TARGET: RGBColor = RGBColor(0xff, 0x5c, 0x5c);
const AXIS: RGBColor = RGBColor(0x9a, 0xa7, 0xb4);

/// The value axis: from 0 to a little above the largest value or the target.
fn y_range(series: &Series) -> (f64, f64) {
    let top = series
        .points
        .iter()
        .filter_map(|(_, v)| *v)
        .chain(series.target)
        .fold(0.0_f64, f64::max);
    let top = match series.unit {
        Unit::Ratio if top > 0.8 => 1.0,
        Unit::Ratio => (top * 1.2).max(0.02),
        Unit::Count | Unit::Seconds => (top * 1.15).max(1.0),
    };
    (0.0, top)
}

fn format_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Ratio => format!("{:.0}%", v * 100.0),
        Unit::Seconds if v >= 120.0 => format!("{:.0}m", v / 60.0),
        Unit::Seconds => format!("{v:.0}s"),
        Unit::Count => format!("{v:.0}"),
    }
}

/// Runs of consecutive buckets with a value: a bucket without calls breaks the line.
fn segments(points: &[(i64, Option<f64>)]) -> Vec<Vec<(i64, f64)>> {
    let mut out: Vec<Vec<(i64, f64)>> = vec![];
    let mut current = vec![];
    for &(t, v) in points {
        match v {
            Some(v) => current.push((t, v)),
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Draws the series as an SVG document.
pub fn line_chart(series: &Series) -> Result<String, ChartError> {
    let err = |e: &dyn std::fmt::Display| ChartError(e.to_string());
    let mut svg = String::new();
    let first = series.points.first().map_or(0, |p| p.0);
    let last = series.points.last().map_or(1, |p| p.0).max(first + 1);
    let (y0, y1) = y_range(series);
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .x_label_area_size(22)
            .y_label_area_size(44)
            .build_cartesian_2d(first..last, y0..y1)
            .map_err(|e| err(&e))?;
        let label = ("sans-serif", 12).into_font().color(&AXIS);
        let tz = series.tz;
        let weekday = series.weekday_labels;
        let unit = series.unit;
        chart
            .configure_mesh()
            .x_labels(7)
            .y_labels(5)
            .light_line_style(AXIS.mix(0.08))
            .bold_line_style(AXIS.mix(0.2))
            .axis_style(AXIS.mix(0.6))
            .label_style(label)
            .x_label_formatter(&|ms| {
                let t = tz.timestamp_millis_opt(*ms).single();
                t.map(|t| {
                    t.format(if weekday { "%a %d" } else { "%d %b" })
                        .to_string()
                })
                .unwrap_or_default()
            })
            .y_label_formatter(&|v| format_value(unit, *v))
            .draw()
            .map_err(|e| err(&e))?;
        if let Some(target) = series.target {
            chart
                .draw_series(DashedLineSeries::new(
                    [(first, target), (last, target)],
                    6,
                    4,
                    TARGET.stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
        }
        for run in segments(&series.points) {
            if run.len() == 1 {
                chart
                    .draw_series(run.iter().map(|&p| Circle::new(p, 2, LINE.filled())))
                    .map_err(|e| err(&e))?;
            } else {
                chart
                    .draw_series(LineSeries::new(run, LINE.stroke_width(2)))
                    .map_err(|e| err(&e))?;
            }
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: Vec<(i64, Option<f64>)>, unit: Unit, target: Option<f64>) -> Series {
        Series {
            unit,
            points,
            target,
            tz: chrono_tz::Europe::Paris,
            weekday_labels: true,
        }
    }

    #[test]
    fn gaps_split_the_line() {
        let runs = segments(&[
            (0, Some(1.0)),
            (1, Some(2.0)),
            (2, None),
            (3, Some(3.0)),
            (4, None),
        ]);
        assert_eq!(runs, vec![vec![(0, 1.0), (1, 2.0)], vec![(3, 3.0)]]);
    }

    #[test]
    fn ratios_near_one_use_the_whole_scale_and_small_ones_zoom_in() {
        let high = series(vec![(0, Some(0.93))], Unit::Ratio, Some(0.95));
        assert_eq!(y_range(&high), (0.0, 1.0));
        let low = series(vec![(0, Some(0.004))], Unit::Ratio, Some(0.01));
        assert_eq!(y_range(&low), (0.0, 0.02));
        let empty = series(vec![], Unit::Count, None);
        assert_eq!(y_range(&empty), (0.0, 1.0));
    }

    #[test]
    fn the_svg_has_one_polyline_per_run_a_dot_for_a_lone_value_and_the_target() {
        let hour = 3_600_000;
        let t0 = 1_795_442_400_000;
        let points = vec![
            (t0, Some(0.9)),
            (t0 + hour, Some(0.8)),
            (t0 + 2 * hour, None),
            (t0 + 3 * hour, Some(0.97)),
            (t0 + 4 * hour, None),
            (t0 + 5 * hour, Some(0.5)),
            (t0 + 6 * hour, Some(0.6)),
        ];
        let svg = line_chart(&series(points, Unit::Ratio, Some(0.95))).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        let data_lines = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains("stroke=\"#4FA3FF\""))
            .count();
        assert_eq!(data_lines, 2, "two runs of values");
        assert_eq!(svg.matches("<circle").count(), 1, "the lone value");
        assert!(svg.contains("#FF5C5C"), "the target is drawn in red");
        assert!(
            svg.contains(">\n100%\n<") || svg.contains(">100%<"),
            "{svg}"
        );
        assert!(
            svg.contains("Mon 23"),
            "weekday labels in the zone: {svg:.2000}"
        );
    }

    #[test]
    fn an_empty_series_still_draws_axes() {
        let svg = line_chart(&series(vec![], Unit::Seconds, None)).unwrap();
        assert!(svg.contains("<svg") && !svg.contains("#4FA3FF"));
    }
}
