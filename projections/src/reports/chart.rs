//! A report as an SVG bar chart, drawn with `plotters` (SVG backend only): one bar per row,
//! labelled `metric · key · detail`, with named axes and the report's title and period.

use super::{Kind, Report, ReportError, Row};
use plotters::prelude::*;

/// Most bars drawn; a longer report is cut (the CSV and JSON always hold every row).
pub const MAX_BARS: usize = 60;
const WIDTH: u32 = 1_200;
const HEIGHT: u32 = 700;

/// The axes' names, per report.
pub fn axis_names(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Daily => ("metric · relying party · outcome", "count"),
        Kind::Weekly => ("metric · program · status", "applications or points"),
        Kind::Monthly => ("metric · key · detail", "count, hours or percent"),
    }
}

fn label(r: &Row) -> String {
    [r.metric.as_str(), r.key.as_str(), r.detail.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" · ")
}

fn render_err(e: impl std::fmt::Display) -> ReportError {
    ReportError::Render(e.to_string())
}

pub fn bar_chart(report: &Report) -> Result<String, ReportError> {
    let rows: Vec<&Row> = report.rows.iter().take(MAX_BARS).collect();
    let labels: Vec<String> = rows.iter().map(|r| label(r)).collect();
    let values: Vec<f64> = rows.iter().map(|r| r.value.as_f64()).collect();
    let top = values.iter().copied().fold(1.0, f64::max) * 1.1;
    // Corrections can make a day's net approved points negative.
    let bottom = values.iter().copied().fold(0.0, f64::min) * 1.1;
    let bars = i32::try_from(rows.len().max(1)).unwrap_or(1);
    let (x_name, y_name) = axis_names(report.kind);
    let caption = format!(
        "{} — {} to {} ({})",
        report.title, report.from, report.to, report.time_zone
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(render_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(220)
            .y_label_area_size(80)
            .build_cartesian_2d((0..bars).into_segmented(), bottom..top)
            .map_err(render_err)?;
        let formatter = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| labels.get(i).cloned())
                .unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_name)
            .y_desc(y_name)
            .x_labels(rows.len().max(1))
            .x_label_formatter(&formatter)
            .y_label_formatter(&|v: &f64| {
                if v.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            })
            .x_label_style(
                ("sans-serif", 11)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .draw()
            .map_err(render_err)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let i = i32::try_from(i).unwrap_or(0);
                Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    BLUE.mix(0.7).filled(),
                )
            }))
            .map_err(render_err)?;
        root.present().map_err(render_err)?;
    }
    Ok(svg)
}
