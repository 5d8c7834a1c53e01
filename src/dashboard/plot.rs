//! Plots of a job's runs over time, drawn as SVG by plotters: one point per run, its colour
//! by status (the table beside it says the same in words).

use chrono::{DateTime, Utc};
use plotters::prelude::*;

use crate::store::{RunDot, RunStatus};

/// Width and height of a plot, in SVG units (it scales to the page's width).
const SIZE: (u32, u32) = (760, 240);
/// Axis and label grey, readable on light and dark backgrounds.
const INK: RGBColor = RGBColor(128, 128, 128);
const OK: RGBColor = RGBColor(46, 160, 67);
const BAD: RGBColor = RGBColor(215, 58, 73);
const OTHER: RGBColor = RGBColor(191, 135, 0);

/// Which figure of a run a plot shows.
#[derive(Debug, Clone, Copy)]
pub(super) enum Measure {
    Duration,
    Lateness,
    /// User and system CPU time.
    Cpu,
    /// Peak resident memory.
    PeakMemory,
}

impl Measure {
    /// The figure in the axis's unit.
    fn of(self, d: &RunDot) -> Option<f64> {
        match self {
            Measure::Duration => d.duration_ms.map(|v| v as f64),
            Measure::Lateness => d.lateness_ms.map(|v| v as f64),
            Measure::Cpu => d.cpu_us.map(|v| v as f64 / 1e6),
            Measure::PeakMemory => d.peak_rss_bytes.map(|v| v as f64 / f64::from(1u32 << 20)),
        }
    }

    fn axis(self) -> &'static str {
        match self {
            Measure::Duration => "duration (ms)",
            Measure::Lateness => "lateness (ms)",
            Measure::Cpu => "CPU time (s)",
            Measure::PeakMemory => "peak memory (MiB)",
        }
    }
}

/// The SVG of `measure` over `dots`' firing times; `None` when no run has the figure (or
/// plotters fails, which is logged).
pub(super) fn svg(dots: &[RunDot], measure: Measure) -> Option<String> {
    let points: Vec<(f64, f64, RGBColor)> = dots
        .iter()
        .filter_map(|d| {
            let v = measure.of(d)?;
            Some((d.scheduled_for.timestamp() as f64, v, colour(d.status)))
        })
        .collect();
    if points.is_empty() {
        return None;
    }
    let mut out = String::new();
    match draw(&mut out, &points, measure) {
        Ok(()) => Some(out),
        Err(e) => {
            tracing::warn!(error = %e, "cannot draw a dashboard plot");
            None
        }
    }
}

fn colour(status: RunStatus) -> RGBColor {
    match super::layout::status_class(status) {
        "ok" => OK,
        "bad" => BAD,
        _ => OTHER,
    }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(out: &mut String, points: &[(f64, f64, RGBColor)], measure: Measure) -> DrawResult {
    let (mut x0, mut x1) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    if x1 - x0 < 60.0 {
        x0 -= 30.0;
        x1 += 30.0;
    }
    let y_lo = points.iter().map(|p| p.1).fold(0.0, f64::min);
    let y_hi = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    let label = ("sans-serif", 13).into_font().color(&INK);
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y_lo..y_hi)?;
    let span = x1 - x0;
    chart
        .configure_mesh()
        .x_labels(5)
        .y_labels(5)
        .x_label_formatter(&|x| time_label(*x, span))
        .y_label_formatter(&|y| {
            if y_hi < 10.0 {
                format!("{y:.2}")
            } else {
                format!("{y:.0}")
            }
        })
        .y_desc(measure.axis())
        .label_style(label.clone())
        .axis_desc_style(label)
        .axis_style(INK)
        .bold_line_style(INK.mix(0.25))
        .light_line_style(INK.mix(0.08))
        .draw()?;
    chart.draw_series(
        points
            .iter()
            .map(|&(x, y, c)| Circle::new((x, y), 3, c.filled())),
    )?;
    root.present()?;
    Ok(())
}

/// A time axis label: the date and hour over a long span, the time of day over a short one.
fn time_label(x: f64, span: f64) -> String {
    let Some(t) = DateTime::<Utc>::from_timestamp(x as i64, 0) else {
        return String::new();
    };
    if span > 2.0 * 86_400.0 {
        t.format("%m-%d %H:%M").to_string()
    } else {
        t.format("%H:%M:%S").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(id: i64, secs: i64, status: &str, ms: i64) -> RunDot {
        RunDot {
            id,
            scheduled_for: DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
            status: status.parse().unwrap(),
            attempt: 1,
            duration_ms: Some(ms),
            lateness_ms: None,
            cpu_us: Some(ms * 1000),
            peak_rss_bytes: None,
        }
    }

    #[test]
    fn one_circle_per_run_with_the_figure_and_none_without() {
        let dots = [
            dot(1, 0, "succeeded", 120),
            dot(2, 60, "failed", 900),
            dot(3, 120, "succeeded", 80),
        ];
        let svg = svg(&dots, Measure::Duration).unwrap();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(svg.matches("fill=\"#D73A49\"").count(), 1, "{svg}");
        assert!(svg.contains("duration (ms)"));
        assert_eq!(super::svg(&dots, Measure::Lateness), None);
        let cpu = super::svg(&dots, Measure::Cpu).unwrap();
        assert_eq!(cpu.matches("<circle").count(), 3);
        assert!(cpu.contains("CPU time (s)"));
        assert_eq!(super::svg(&dots, Measure::PeakMemory), None);
    }
}
