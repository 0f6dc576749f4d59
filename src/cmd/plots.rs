//! Training plots from `metrics.jsonl`: `losses.png` (the three losses per step) and
//! `data_wait.png` (the trainer's wait for data against the step time), PNG via plotters with the
//! bundled DejaVu Sans, so nothing depends on the machine's fonts.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::anyhow;
use ecamp_model::train::metrics::StepMetrics;
use plotters::prelude::*;

const FONT: &str = "sans-serif";

fn register_font() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        result = plotters::style::register_font(FONT, FontStyle::Normal, bytes).map_err(|_| anyhow!("invalid font"));
    });
    result
}

/// One named series of (step, value) points.
struct Series<'a> {
    name: &'a str,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Writes both plots into `dir`; returns their paths.
pub fn write(dir: &Path, metrics: &[StepMetrics]) -> anyhow::Result<Vec<PathBuf>> {
    register_font()?;
    let step = |f: fn(&StepMetrics) -> f64| metrics.iter().map(|m| (m.step as f64, f(m))).collect::<Vec<_>>();
    let losses = dir.join("losses.png");
    chart(
        &losses,
        "ECAMP pre-training losses",
        "loss",
        &[
            Series { name: "MIM", colour: RGBColor(31, 119, 180), points: step(|m| m.mim) },
            Series { name: "SR", colour: RGBColor(255, 127, 14), points: step(|m| m.sr) },
            Series { name: "MLM", colour: RGBColor(44, 160, 44), points: step(|m| m.mlm) },
            Series { name: "MLM, masked tokens only", colour: RGBColor(148, 103, 189), points: step(|m| m.mlm_masked) },
        ],
    )?;
    let wait = dir.join("data_wait.png");
    chart(
        &wait,
        "Data wait against step time",
        "milliseconds",
        &[
            Series { name: "step time", colour: RGBColor(31, 119, 180), points: step(|m| m.step_s * 1e3) },
            Series { name: "data wait", colour: RGBColor(214, 39, 40), points: step(|m| m.data_wait_s * 1e3) },
        ],
    )?;
    Ok(vec![losses, wait])
}

/// A line chart with a log-scale y axis.
fn chart(path: &Path, title: &str, y_desc: &str, series: &[Series]) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return Err(anyhow!("no positive values to plot in {}", path.display()));
    }
    let steps = series.iter().flat_map(|s| s.points.last().map(|p| p.0)).fold(1.0, f64::max);
    let root = BitMapBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..steps, (lo * 0.8..hi * 1.25).log_scale())
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("step").y_desc(y_desc).label_style((FONT, 14)).draw().map_err(|e| err(&e))?;
    for s in series {
        let colour = s.colour;
        let points = s.points.iter().copied().filter(|p| p.1.is_finite() && p.1 > 0.0);
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A grouped bar chart: one group per category, one bar per series (values in 0..=1, e.g. AUC),
/// with a dashed line at `reference` (e.g. chance).
pub fn bars(
    path: &Path,
    title: &str,
    categories: &[String],
    series: &[(&str, Vec<f64>)],
    reference: f64,
) -> anyhow::Result<()> {
    register_font()?;
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    const COLOURS: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(170, 170, 170), RGBColor(255, 127, 14)];
    let root = BitMapBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let groups = categories.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..groups, 0f64..1f64)
        .map_err(|e| err(&e))?;
    let names = categories.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(categories.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 { names.get(i).cloned().unwrap_or_default() } else { String::new() }
        })
        .y_desc("ROC-AUC")
        .label_style((FONT, 14))
        .draw()
        .map_err(|e| err(&e))?;
    let width = 0.8 / series.len().max(1) as f64;
    for (k, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let rects = values.iter().enumerate().map(|(i, v)| {
            let x0 = i as f64 + 0.1 + k as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width * 0.95, v.clamp(0.0, 1.0))], colour.filled())
        });
        chart
            .draw_series(rects)
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.filled()));
    }
    chart
        .draw_series(DashedLineSeries::new([(0.0, reference), (groups, reference)], 6, 4, BLACK.stroke_width(1)))
        .map_err(|e| err(&e))?;
    chart
        .configure_series_labels()
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
