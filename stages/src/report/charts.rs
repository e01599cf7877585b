//! The report's charts, drawn with `plotters` as SVG to sit inline in the
//! page: bars of NDCG@K / HR@K per model, metrics against K, training
//! curves, and the attention models' normalised attention entropy by
//! history length.

use std::collections::BTreeMap;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{ks_of, ModelRow};

pub(super) fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

/// plotters' SVG, made to sit inline in HTML: no XML namespace URL.
pub(super) fn inline_svg(svg: String) -> String {
    svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
}

/// A chart with numbers on both axes, drawn as SVG.
pub(super) type XyChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One named line in palette colour `colour`, with its legend entry (a
/// short stroke), and a dot on each point when `dots`.
fn draw_line(
    chart: &mut XyChart<'_, '_>,
    colour: usize,
    name: &str,
    pts: &[(f64, f64)],
    dots: bool,
) -> anyhow::Result<()> {
    let color = Palette99::pick(colour);
    chart
        .draw_series(LineSeries::new(pts.to_vec(), color.stroke_width(2)))
        .map_err(plot_err)?
        .label(name)
        .legend(move |(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 16, y)],
                Palette99::pick(colour).stroke_width(2),
            )
        });
    if dots {
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// The legend of the series drawn so far, boxed, at `position`.
pub(super) fn draw_legend<'a, 'b: 'a>(
    chart: &mut XyChart<'a, 'b>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

fn y_max(values: impl Iterator<Item = f64>) -> f64 {
    let m = values.fold(0.0f64, f64::max);
    if m > 0.0 {
        m * 1.15
    } else {
        1.0
    }
}

pub fn bar_chart(models: &[ModelRow], k: usize) -> anyhow::Result<String> {
    let n = models.len();
    let mut svg = String::new();
    {
        let width = (360 + 60 * n as u32).clamp(480, 1000);
        let root = SVGBackend::with_string(&mut svg, (width, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let panels = root.split_evenly((1, 2));
        for (panel, metric) in panels.iter().zip(["ndcg", "hr"]) {
            let key = format!("{metric}@{k}");
            let values: Vec<f64> = models
                .iter()
                .map(|m| m.detail.values.get(&key).copied().unwrap_or(0.0))
                .collect();
            let label = format!("{}@{k}", metric.to_uppercase());
            let mut chart = ChartBuilder::on(panel)
                .caption(&label, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d((0..n).into_segmented(), 0f64..y_max(values.iter().copied()))
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => {
                        models.get(*i).map_or(String::new(), |m| m.name.clone())
                    }
                    _ => String::new(),
                })
                .y_desc(&label)
                .draw()
                .map_err(plot_err)?;
            chart
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), *v),
                            (SegmentValue::Exact(i + 1), 0.0),
                        ],
                        Palette99::pick(i).filled(),
                    );
                    bar.set_margin(0, 0, 6, 6);
                    bar
                }))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(inline_svg(svg))
}

pub fn line_chart(models: &[ModelRow]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let panels = root.split_evenly((1, 2));
        for (panel, metric) in panels.iter().zip(["ndcg", "hr"]) {
            let ks = ks_of(models, metric);
            if ks.is_empty() {
                continue;
            }
            let series: BTreeMap<usize, Vec<(f64, f64)>> = models
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let pts = ks
                        .iter()
                        .filter_map(|k| {
                            let v = m.detail.values.get(&format!("{metric}@{k}"))?;
                            Some((*k as f64, *v))
                        })
                        .collect();
                    (i, pts)
                })
                .collect();
            let (lo, hi) = (ks[0] as f64, ks[ks.len() - 1] as f64);
            let pad = ((hi - lo) * 0.05).max(1.0);
            let label = format!("{}@K", metric.to_uppercase());
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("{label} against K"), ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(50)
                .build_cartesian_2d(
                    (lo - pad)..(hi + pad),
                    0f64..y_max(series.values().flatten().map(|p| p.1)),
                )
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("K")
                .y_desc(&label)
                .draw()
                .map_err(plot_err)?;
            for (i, pts) in &series {
                draw_line(&mut chart, *i, &models[*i].name, pts, true)?;
            }
            draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(inline_svg(svg))
}

/// One panel: `series` (e.g. `train_loss`) against epoch, a line per model
/// whose training curve has it.
pub fn training_curve(models: &[ModelRow], series: &str) -> anyhow::Result<String> {
    let lines: Vec<(usize, Vec<(f64, f64)>)> = models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let pts = m
                .curve
                .iter()
                .filter_map(|(epoch, values)| Some((*epoch, *values.get(series)?)))
                .collect::<Vec<_>>();
            (i, pts)
        })
        .filter(|(_, pts)| !pts.is_empty())
        .collect();
    let points = || lines.iter().flat_map(|(_, pts)| pts.iter());
    let last_epoch = points().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let pad = ((hi - lo) * 0.08).max(1e-6);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{series} per epoch"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5f64..last_epoch + 0.5, (lo - pad)..(hi + pad))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(series)
            .draw()
            .map_err(plot_err)?;
        for (i, pts) in &lines {
            draw_line(&mut chart, *i, &models[*i].name, pts, false)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present().map_err(plot_err)?;
    }
    Ok(inline_svg(svg))
}

/// H/ln n (evaluate's normalised attention entropy) against the
/// history-length bucket, a line per (model, layer): `labels` name the
/// buckets, each line's points are (bucket index, value).
pub fn attention_chart(
    labels: &[String],
    lines: &[(String, Vec<(usize, f64)>)],
) -> anyhow::Result<String> {
    let n = labels.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Normalised attention entropy (H/ln n)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..1.05)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc("history length")
            .y_desc("H/ln n")
            .draw()
            .map_err(plot_err)?;
        for (i, (name, pts)) in lines.iter().enumerate() {
            let pts: Vec<(f64, f64)> = pts.iter().map(|&(x, y)| (x as f64, y)).collect();
            draw_line(&mut chart, i, name, &pts, true)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
        root.present().map_err(plot_err)?;
    }
    Ok(inline_svg(svg))
}
