//! SVG plots of the throughput and latency tables (plotters, no fonts needed).

use std::path::Path;

use plotters::prelude::*;

use crate::report::CellSummary;
use crate::systems::SystemKind;

/// The systems in `s`, in [`SystemKind`] order.
fn systems(s: &[CellSummary]) -> Vec<String> {
    let mut v: Vec<String> = s.iter().map(|c| c.system.clone()).collect();
    v.sort_by(|a, b| (SystemKind::rank(a), a).cmp(&(SystemKind::rank(b), b)));
    v.dedup();
    v
}

/// A system's colour, fixed by its kind so it does not change with the set
/// of systems measured (the four peers keep the colours of earlier plots).
fn color(system: &str) -> RGBColor {
    match SystemKind::from_id(system) {
        Some(SystemKind::LapwingQuic) => RGBColor(0x1f, 0x77, 0xb4),
        Some(SystemKind::Nats) => RGBColor(0xd6, 0x27, 0x28),
        Some(SystemKind::NatsTls) => RGBColor(0x2c, 0xa0, 0x2c),
        Some(SystemKind::Redis) => RGBColor(0xff, 0x7f, 0x0e),
        Some(SystemKind::LapwingGrpc) => RGBColor(0x94, 0x67, 0xbd),
        None => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in values.filter(|v| *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (1.0, 10.0);
    }
    (lo / 2.0, hi * 2.0)
}

type Chart<'a, X, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>;

/// One system's line, with a marker per point and a legend entry.
fn draw_system<X, Y>(
    chart: &mut Chart<'_, X, Y>,
    system: &str,
    pts: Vec<(f64, f64)>,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let color = color(system);
    chart
        .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
        .label(system)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    Ok(())
}

/// The legend box of a panel.
fn draw_legend<X, Y>(chart: &mut Chart<'_, X, Y>, at: SeriesLabelPosition) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Scenario A: delivered msgs/s against subscribers, one panel per payload.
pub fn throughput(summary: &[CellSummary], path: &Path) -> anyhow::Result<()> {
    let a: Vec<&CellSummary> = summary
        .iter()
        .filter(|c| c.cell.scenario == "A" && c.delivered_rate.is_some())
        .collect();
    let mut payloads: Vec<usize> = a.iter().map(|c| c.cell.payload).collect();
    payloads.sort_unstable();
    payloads.dedup();
    if payloads.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (520 * payloads.len() as u32, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, payloads.len()));
    let (lo, hi) = log_range(a.iter().filter_map(|c| c.delivered_rate.map(|d| d.median)));
    let max_n = a
        .iter()
        .map(|c| c.cell.subscribers)
        .max()
        .unwrap_or(10)
        .max(10) as f64;
    for (panel, payload) in panels.iter().zip(&payloads) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("A: delivered msgs/s, {payload} B payload"),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d((0.8f64..max_n * 1.25).log_scale(), (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("subscribers (one connection each)")
            .y_desc("delivered msgs/s (median)")
            .draw()?;
        for sys in &systems(summary) {
            let mut pts: Vec<(f64, f64)> = a
                .iter()
                .filter(|c| &c.system == sys && c.cell.payload == *payload)
                .filter_map(|c| {
                    c.delivered_rate
                        .map(|d| (c.cell.subscribers as f64, d.median))
                })
                .collect();
            pts.sort_by(|x, y| x.0.total_cmp(&y.0));
            if pts.is_empty() {
                continue;
            }
            draw_system(&mut chart, sys, pts)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    }
    root.present()?;
    Ok(())
}

/// Scenario B: latency percentiles, one panel per subscriber count.
pub fn latency(summary: &[CellSummary], path: &Path) -> anyhow::Result<()> {
    let b: Vec<&CellSummary> = summary
        .iter()
        .filter(|c| c.cell.scenario == "B" && c.p99_us.is_some())
        .collect();
    let mut ns: Vec<usize> = b.iter().map(|c| c.cell.subscribers).collect();
    ns.sort_unstable();
    ns.dedup();
    if ns.is_empty() {
        return Ok(());
    }
    let labels = ["p50", "p90", "p99", "p99.9", "max"];
    let pcts = |c: &CellSummary| {
        [
            c.p50_us,
            c.p90_us,
            c.p99_us.map(|s| s.median),
            c.p999_us,
            c.max_us,
        ]
    };
    let (lo, hi) = log_range(b.iter().flat_map(|c| pcts(c).into_iter().flatten()));
    let root = SVGBackend::new(path, (520 * ns.len() as u32, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, ns.len()));
    for (panel, n) in panels.iter().zip(&ns) {
        let rate = b.iter().find_map(|c| c.cell.rate).unwrap_or(0);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("B: publish-to-deliver latency, N={n}, {rate} msgs/s"),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.3f64..4.3f64, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(5)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && (0.0..5.0).contains(&i) {
                    labels[i as usize].to_string()
                } else {
                    String::new()
                }
            })
            .y_desc("µs (median of runs)")
            .draw()?;
        for sys in &systems(summary) {
            let Some(c) = b
                .iter()
                .find(|c| &c.system == sys && c.cell.subscribers == *n)
            else {
                continue;
            };
            let pts: Vec<(f64, f64)> = pcts(c)
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| v.filter(|v| *v > 0.0).map(|v| (i as f64, v)))
                .collect();
            draw_system(&mut chart, sys, pts)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    root.present()?;
    Ok(())
}

/// One line of a [`timeline`] panel: `(seconds, value)` points.
#[derive(Debug, Clone)]
pub struct Series {
    /// The panel's caption and y axis.
    pub title: String,
    /// The unit on the y axis.
    pub unit: String,
    /// `(seconds since start, value)`.
    pub points: Vec<(f64, f64)>,
}

/// Panels stacked vertically, each one series against time (the soak's RSS
/// and throughput); linear axes from zero, so a slow drift shows as a slope.
pub fn timeline(title: &str, series: &[Series], path: &Path) -> anyhow::Result<()> {
    let colors = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x94, 0x67, 0xbd),
    ];
    let root =
        SVGBackend::new(path, (900, 260 * series.len().max(1) as u32 + 30)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let panels = root.split_evenly((series.len().max(1), 1));
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    for (i, (panel, s)) in panels.iter().zip(series).enumerate() {
        let y_max = s.points.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(panel)
            .caption(&s.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(s.unit.as_str())
            .draw()?;
        let color = colors[i % colors.len()];
        chart.draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))?;
    }
    root.present()?;
    Ok(())
}
