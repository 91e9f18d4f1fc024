//! The report's charts, drawn as SVG by plotters: horizontal bars, columns,
//! a daily line with marked days, and a heat map.
//!
//! Input: labels and values already read from the run's tables. Output: one
//! `<svg>` element as text, with `data-points` (how many values it draws)
//! on a wrapping `<figure>` that [`Chart::html`] gives, so the page (and its
//! test) can tell a chart with data from an empty frame.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

/// The report's colours: bars, the baseline, marked days, text.
const BAR: RGBColor = RGBColor(46, 101, 160);
const ALT: RGBColor = RGBColor(214, 120, 40);
const MARK: RGBColor = RGBColor(200, 40, 40);
const GRID: RGBColor = RGBColor(225, 225, 225);

/// A drawn chart: its SVG and the number of values it shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Chart {
    /// The `<svg>` element.
    pub svg: String,
    /// Values drawn (bars, points or cells).
    pub points: usize,
}

fn failed(e: impl std::fmt::Debug) -> Error {
    Error::Report {
        reason: format!("a chart could not be drawn: {e:?}"),
    }
}

/// Draws into an SVG of `size` and returns it.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>,
) -> Result<String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        draw(&root)?;
        root.present().map_err(failed)?;
    }
    Ok(text)
}

/// Cuts a label to `n` characters, with an ellipsis.
fn short(label: &str, n: usize) -> String {
    if label.chars().count() <= n {
        label.to_string()
    } else {
        let cut: String = label.chars().take(n - 1).collect();
        format!("{cut}…")
    }
}

/// The upper end of a value axis over `values` (a little above the largest;
/// 1 when all are zero).
fn top(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.fold(0.0f64, f64::max);
    if max > 0.0 { max * 1.08 } else { 1.0 }
}

/// The category axis of `n` slots: plotters' integer ranges hold both ends,
/// so `0..n - 1` is n segments.
fn slots(n: usize) -> std::ops::Range<i32> {
    0..(n.max(1) as i32 - 1)
}

/// Every how many of `n` labels one is written, so that about `most` show.
fn label_step(n: usize, most: usize) -> usize {
    n.div_ceil(most.max(1)).max(1)
}

/// Horizontal bars, one per label, top to bottom in the order given;
/// `format` writes a value's tick label.
pub fn bars(labels: &[String], values: &[f64], format: fn(f64) -> String) -> Result<Chart> {
    let n = labels.len();
    let height = 60 + 22 * n.max(1) as u32;
    let svg = svg((720, height), |root| {
        let max = top(values.iter().copied());
        let mut chart = ChartBuilder::on(root)
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(210)
            .build_cartesian_2d(0.0..max, slots(n).into_segmented())
            .map_err(failed)?;
        let label_of = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => labels
                .get(n.saturating_sub(1 + *i as usize))
                .map(|l| short(l, 32))
                .unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(GRID)
            .y_labels(n.max(1))
            .y_label_formatter(&label_of)
            .x_label_formatter(&|v| format(*v))
            .x_labels(6)
            .draw()
            .map_err(failed)?;
        // the first label at the top
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let row = (n - 1 - i) as i32;
                Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(row)),
                        (*v, SegmentValue::Exact(row + 1)),
                    ],
                    BAR.filled(),
                )
                .into_dyn()
            }))
            .map_err(failed)?;
        Ok(())
    })?;
    Ok(Chart { svg, points: n })
}

/// Vertical columns, one per label, left to right (a histogram's bins, the
/// days of a list); `format` writes a value's tick label.
pub fn columns(labels: &[String], values: &[f64], format: fn(f64) -> String) -> Result<Chart> {
    let n = labels.len();
    let width = (120 + 34 * n.max(1) as u32).clamp(360, 900);
    // room for a label of ten characters every 70 pixels or so
    let step = label_step(n, (width as usize - 100) / 70);
    let svg = svg((width, 240), |root| {
        let max = top(values.iter().copied());
        let mut chart = ChartBuilder::on(root)
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(slots(n).into_segmented(), 0.0..max)
            .map_err(failed)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(GRID)
            .x_labels(n.max(1))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if (*i as usize).is_multiple_of(step) => labels
                    .get(*i as usize)
                    .map(|l| short(l, 10))
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| format(*v))
            .y_labels(5)
            .draw()
            .map_err(failed)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                Rectangle::new(
                    [
                        (SegmentValue::Exact(i as i32), 0.0),
                        (SegmentValue::Exact(i as i32 + 1), *v),
                    ],
                    BAR.filled(),
                )
            }))
            .map_err(failed)?;
        Ok(())
    })?;
    Ok(Chart { svg, points: n })
}

/// A daily series: `values` (and `baseline`, dashed, when given) over the
/// days labelled `days`, with the days of `marked` shaded.
pub fn daily(
    days: &[String],
    values: &[f64],
    baseline: Option<&[f64]>,
    marked: &[bool],
    format: fn(f64) -> String,
) -> Result<Chart> {
    let n = days.len();
    let svg = svg((900, 260), |root| {
        let max = top(values.iter().chain(baseline.unwrap_or(&[]).iter()).copied());
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5..(n.max(1) as f64 - 0.5), 0.0..max)
            .map_err(failed)?;
        chart
            .configure_mesh()
            .light_line_style(GRID)
            .x_labels(8)
            .x_label_formatter(&|v| {
                let i = v.round();
                if (v - i).abs() < 1e-9 && i >= 0.0 {
                    days.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| format(*v))
            .y_labels(5)
            .draw()
            .map_err(failed)?;
        chart
            .draw_series(
                marked
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| **m)
                    .map(|(i, _)| {
                        Rectangle::new(
                            [(i as f64 - 0.5, 0.0), (i as f64 + 0.5, max)],
                            MARK.mix(0.15).filled(),
                        )
                    }),
            )
            .map_err(failed)?;
        if let Some(base) = baseline {
            chart
                .draw_series(DashedLineSeries::new(
                    base.iter().enumerate().map(|(i, v)| (i as f64, *v)),
                    6,
                    4,
                    ALT.stroke_width(2),
                ))
                .map_err(failed)?;
        }
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(i, v)| (i as f64, *v)),
                BAR.stroke_width(2),
            ))
            .map_err(failed)?;
        if n <= 120 {
            chart
                .draw_series(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| Circle::new((i as f64, *v), 2, BAR.filled())),
                )
                .map_err(failed)?;
        }
        Ok(())
    })?;
    Ok(Chart { svg, points: n })
}

/// A heat map: `cells[r][c]` shaded by its share of the largest, labelled
/// with `format`; rows and columns named by `rows` and `cols`.
pub fn heat_map(
    rows: &[String],
    cols: &[String],
    cells: &[Vec<Option<f64>>],
    format: fn(f64) -> String,
) -> Result<Chart> {
    let (nr, nc) = (rows.len().max(1), cols.len().max(1));
    let cell = 64u32;
    let size = (150 + cell * nc as u32, 70 + 30 * nr as u32);
    let max = cells
        .iter()
        .flatten()
        .flatten()
        .copied()
        .fold(0.0f64, f64::max);
    let mut points = 0;
    let svg = svg(size, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(8)
            .x_label_area_size(26)
            .y_label_area_size(110)
            .build_cartesian_2d(slots(nc).into_segmented(), slots(nr).into_segmented())
            .map_err(failed)?;
        let name = |names: &[String], v: &SegmentValue<i32>, flip: bool| match v {
            SegmentValue::CenterOf(i) => {
                let i = if flip {
                    names.len().saturating_sub(1 + *i as usize)
                } else {
                    *i as usize
                };
                names.get(i).map(|l| short(l, 14)).unwrap_or_default()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(nc)
            .y_labels(nr)
            .x_label_formatter(&|v| name(cols, v, false))
            .y_label_formatter(&|v| name(rows, v, true))
            .draw()
            .map_err(failed)?;
        let mut shapes = Vec::new();
        let mut labels = Vec::new();
        for (r, row) in cells.iter().enumerate() {
            let y = (nr - 1 - r) as i32;
            for (c, v) in row.iter().enumerate() {
                let Some(v) = v else { continue };
                points += 1;
                let share = if max > 0.0 { v / max } else { 0.0 };
                let shade = RGBColor(
                    (255.0 - share * (255.0 - 46.0)) as u8,
                    (255.0 - share * (255.0 - 101.0)) as u8,
                    (255.0 - share * (255.0 - 160.0)) as u8,
                );
                let (x0, x1) = (
                    SegmentValue::Exact(c as i32),
                    SegmentValue::Exact(c as i32 + 1),
                );
                let (y0, y1) = (SegmentValue::Exact(y), SegmentValue::Exact(y + 1));
                shapes.push(Rectangle::new([(x0, y0), (x1, y1)], shade.filled()));
                let ink = if share > 0.55 { WHITE } else { BLACK };
                labels.push(Text::new(
                    format(*v),
                    (SegmentValue::CenterOf(c as i32), SegmentValue::CenterOf(y)),
                    ("sans-serif", 12).into_font().color(&ink).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Center,
                        ),
                    ),
                ));
            }
        }
        chart.draw_series(shapes).map_err(failed)?;
        chart.draw_series(labels).map_err(failed)?;
        Ok(())
    })?;
    Ok(Chart { svg, points })
}

/// A share as a percentage, for ticks and cells.
pub fn percent(v: f64) -> String {
    let p = v * 100.0;
    if p != 0.0 && p.abs() < 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// A count, for ticks.
pub fn count(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("reason_{i}")).collect()
    }

    #[test]
    fn every_chart_draws_its_values() {
        let b = bars(&labels(3), &[3.0, 2.0, 1.0], count).unwrap();
        assert_eq!(b.points, 3);
        assert!(b.svg.starts_with("<svg"), "{}", &b.svg[..60]);
        // each label once, and no slot without a bar
        for l in labels(3) {
            assert_eq!(b.svg.matches(&format!(">\n{l}\n<")).count(), 1, "{l}");
        }
        // three bars beside the background and the frame
        assert!(b.svg.matches("<rect").count() >= 4);
        let c = columns(&labels(4), &[0.0, 1.0, 5.0, 2.0], count).unwrap();
        assert_eq!(c.points, 4);
        let d = daily(
            &labels(10),
            &[0.1; 10],
            Some(&[0.05; 10]),
            &[
                false, true, false, false, false, false, false, false, false, false,
            ],
            percent,
        )
        .unwrap();
        assert!(d.svg.contains("<polyline"), "a line is drawn");
        let h = heat_map(
            &labels(2),
            &labels(2),
            &[vec![Some(0.5), None], vec![Some(0.1), Some(0.2)]],
            percent,
        )
        .unwrap();
        assert_eq!(h.points, 3);
        assert!(h.svg.contains("50%"));
    }

    #[test]
    fn empty_charts_draw_a_frame() {
        let b = bars(&[], &[], count).unwrap();
        assert_eq!(b.points, 0);
        assert!(b.svg.starts_with("<svg"));
    }

    #[test]
    fn labels_and_ticks_read_right() {
        assert_eq!(short("abcdef", 4), "abc…");
        assert_eq!(percent(0.123), "12%");
        assert_eq!(percent(0.004), "0.4%");
        assert_eq!(count(1_500_000.0), "1.5M");
        assert_eq!(count(25_000.0), "25k");
        assert_eq!(count(12.0), "12");
        assert_eq!(label_step(30, 11), 3);
        assert_eq!(label_step(5, 11), 1);
    }
}
