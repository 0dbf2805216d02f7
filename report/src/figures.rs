//! The figures, drawn with plotters' SVG backend into strings. Every figure has a title, axis
//! labels with units and a legend where there is more than one series; colours are greys (which
//! print as they look) or viridis for years (its lightness rises monotonically, so the year order
//! survives greyscale printing). Coordinates are integers in the SVG, so output is
//! byte-for-byte reproducible.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use crate::{Error, Result};

const FONT: &str = "sans-serif";
const DARK: RGBColor = RGBColor(40, 40, 40);
const MID: RGBColor = RGBColor(130, 130, 130);
const LIGHT: RGBColor = RGBColor(205, 205, 205);

fn err(figure: &str) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Figure {
        figure: figure.to_string(),
        reason,
    }
}

/// Runs `draw` on a `w × h` SVG canvas and returns the SVG text.
fn svg(
    figure: &str,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> std::result::Result<(), String>,
) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(figure)(e.to_string()))?;
        draw(&root).map_err(err(figure))?;
        root.present().map_err(|e| err(figure)(e.to_string()))?;
    }
    Ok(out)
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// The legend box every figure uses: white, framed, at `at`.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
) -> std::result::Result<(), String> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(s)
}

fn y_top(max: f64) -> f64 {
    if max > 0.0 {
        max * 1.12
    } else {
        1.0
    }
}

/// Stacked panels of counts per bin (bins start at the keys, `width` wide), sharing the x axis:
/// e.g. documents per decade above chunks per decade.
pub fn count_panels(
    figure: &str,
    title: &str,
    x_label: &str,
    width: i32,
    panels: &[(&str, &[(i32, u64)])],
) -> Result<String> {
    let keys = panels.iter().flat_map(|(_, d)| d.iter().map(|p| p.0));
    let (lo, hi) = keys.fold((i32::MAX, i32::MIN), |(a, b), k| (a.min(k), b.max(k)));
    let (lo, hi) = if lo > hi { (0, 1) } else { (lo, hi + width) };
    let height = 60 + 230 * panels.len() as u32;
    svg(figure, (900, height), |root| {
        let root = root.titled(title, (FONT, 20)).map_err(s)?;
        let areas = root.split_evenly((panels.len(), 1));
        for (area, (y_label, data)) in areas.iter().zip(panels) {
            let max = data.iter().map(|p| p.1).max().unwrap_or(0) as f64;
            let mut chart = ChartBuilder::on(area)
                .margin(8)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(lo as f64..hi as f64, 0.0..y_top(max))
                .map_err(s)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc(x_label)
                .y_desc(*y_label)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()
                .map_err(s)?;
            chart
                .draw_series(data.iter().map(|&(k, c)| {
                    Rectangle::new(
                        [(k as f64 + 0.1, 0.0), ((k + width) as f64 - 0.1, c as f64)],
                        MID.filled(),
                    )
                }))
                .map_err(s)?;
        }
        Ok(())
    })
}

/// Two counts per bin side by side (e.g. pairs before and after the per-year cap).
pub fn paired_bars(
    figure: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    width: i32,
    series: [(&str, &[(i32, u64)]); 2],
) -> Result<String> {
    let keys = series.iter().flat_map(|(_, d)| d.iter().map(|p| p.0));
    let (lo, hi) = keys.fold((i32::MAX, i32::MIN), |(a, b), k| (a.min(k), b.max(k)));
    let (lo, hi) = if lo > hi { (0, 1) } else { (lo, hi + width) };
    let max = series
        .iter()
        .flat_map(|(_, d)| d.iter().map(|p| p.1))
        .max()
        .unwrap_or(0) as f64;
    svg(figure, (900, 380), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(lo as f64..hi as f64, 0.0..y_top(max))
            .map_err(s)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(s)?;
        let w = width as f64;
        let styles = [LIGHT.filled(), DARK.filled()];
        for (i, ((label, data), style)) in series.iter().zip(styles).enumerate() {
            let x0 = 0.08 * w + i as f64 * 0.42 * w;
            chart
                .draw_series(data.iter().map(|&(k, c)| {
                    let k = k as f64;
                    Rectangle::new([(k + x0, 0.0), (k + x0 + 0.42 * w, c as f64)], style)
                }))
                .map_err(s)?
                .label(*label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], style));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })
}

/// A histogram of `(start, end, count)` bins with an optional vertical marker (x, label).
pub fn histogram(
    figure: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    bins: &[(f64, f64, u64)],
    marker: Option<(f64, &str)>,
) -> Result<String> {
    let lo = bins.first().map_or(0.0, |b| b.0);
    let hi = bins.last().map_or(1.0, |b| b.1);
    let hi = marker.map_or(hi, |m| hi.max(m.0 * 1.05));
    let max = bins.iter().map(|b| b.2).max().unwrap_or(0) as f64;
    svg(figure, (900, 380), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(lo..hi, 0.0..y_top(max))
            .map_err(s)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(s)?;
        chart
            .draw_series(
                bins.iter()
                    .map(|&(a, b, c)| Rectangle::new([(a, 0.0), (b, c as f64)], MID.filled())),
            )
            .map_err(s)?
            .label("chunks")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], MID.filled()));
        if let Some((x, label)) = marker {
            let top = y_top(max);
            chart
                .draw_series(DashedLineSeries::new(
                    [(x, 0.0), (x, top)],
                    6,
                    4,
                    BLACK.stroke_width(2),
                ))
                .map_err(s)?
                .label(label)
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

/// Lines over a shared x axis, black then grey dashes; `marker` draws a vertical dashed line
/// (e.g. the saved checkpoint's step).
pub fn lines(
    figure: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    marker: Option<(f64, &str)>,
) -> Result<String> {
    let pts = || series.iter().flat_map(|(_, p)| p.iter());
    let (x0, x1) = pts().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (x0, x1) = if x0 < x1 {
        (x0, x1)
    } else {
        (x0 - 1.0, x0 + 1.0)
    };
    let pad = ((y1 - y0) * 0.08).max(1e-6);
    let (y0, y1) = if y0 <= y1 {
        (y0 - pad, y1 + pad)
    } else {
        (0.0, 1.0)
    };
    svg(figure, (900, 380), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(s)?;
        for (i, (label, points)) in series.iter().enumerate() {
            let style = if i == 0 {
                DARK.stroke_width(2)
            } else {
                MID.stroke_width(2)
            };
            if i == 0 {
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), style))
                    .map_err(s)?
                    .label(*label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], style));
            } else {
                chart
                    .draw_series(DashedLineSeries::new(points.iter().copied(), 8, 4, style))
                    .map_err(s)?
                    .label(*label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], style));
            }
            if points.len() <= 60 {
                chart
                    .draw_series(
                        points
                            .iter()
                            .map(|&p| Circle::new(p, 3, style.color.filled())),
                    )
                    .map_err(s)?;
            }
        }
        if let Some((x, label)) = marker {
            chart
                .draw_series(DashedLineSeries::new(
                    [(x, y0), (x, y1)],
                    4,
                    4,
                    BLACK.stroke_width(1),
                ))
                .map_err(s)?
                .label(label)
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.stroke_width(1)));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

/// One panel of the embedding map: points (x, y, year) and the per-decade centroid path.
pub struct MapPanel<'a> {
    pub label: &'a str,
    pub x_label: String,
    pub y_label: String,
    pub points: &'a [(f64, f64, i32)],
    /// (bin start year, x, y), in year order.
    pub centroids: &'a [(i32, f64, f64)],
    /// Legend of the centroid path ("per decade").
    pub centroid_label: String,
}

/// Year → viridis colour over `[lo, hi]`.
fn year_colour(year: i32, (lo, hi): (i32, i32)) -> RGBColor {
    let t = if hi > lo {
        (year - lo) as f64 / (hi - lo) as f64
    } else {
        0.5
    };
    ViridisRGB::get_color(t.clamp(0.0, 1.0))
}

/// Panels side by side (base model, tuned model), points coloured by year, the decade centroid
/// path on top (black line, white-ringed dots, first and last decade labelled), and a colour bar.
pub fn maps(figure: &str, title: &str, panels: &[MapPanel]) -> Result<String> {
    let years = panels.iter().flat_map(|p| p.points.iter().map(|q| q.2));
    let range = years.fold((i32::MAX, i32::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let width = 40 + 520 * panels.len() as u32 + 110;
    svg(figure, (width, 580), |root| {
        let root = root.titled(title, (FONT, 20)).map_err(s)?;
        let (plots, bar) = root.split_horizontally(width - 110);
        let areas = plots.split_evenly((1, panels.len()));
        for (area, panel) in areas.iter().zip(panels) {
            let pad = |lo: f64, hi: f64| {
                let d = ((hi - lo) * 0.05).max(1e-6);
                (lo - d)..(hi + d)
            };
            let (x0, x1, y0, y1) = panel.points.iter().fold(
                (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
                |(a, b, c, d), p| (a.min(p.0), b.max(p.0), c.min(p.1), d.max(p.1)),
            );
            let mut chart = ChartBuilder::on(area)
                .caption(panel.label, (FONT, 16))
                .margin(8)
                .x_label_area_size(40)
                .y_label_area_size(55)
                .build_cartesian_2d(pad(x0, x1), pad(y0, y1))
                .map_err(s)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc(panel.x_label.as_str())
                .y_desc(panel.y_label.as_str())
                .draw()
                .map_err(s)?;
            chart
                .draw_series(panel.points.iter().map(|&(x, y, year)| {
                    Circle::new((x, y), 2, year_colour(year, range).mix(0.75).filled())
                }))
                .map_err(s)?;
            let path: Vec<(f64, f64)> = panel.centroids.iter().map(|c| (c.1, c.2)).collect();
            chart
                .draw_series(LineSeries::new(path.iter().copied(), BLACK.stroke_width(2)))
                .map_err(s)?
                .label(panel.centroid_label.as_str())
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.stroke_width(2)));
            chart
                .draw_series(panel.centroids.iter().map(|&(d, x, y)| {
                    EmptyElement::at((x, y))
                        + Circle::new((0, 0), 5, WHITE.filled())
                        + Circle::new((0, 0), 4, year_colour(d + 5, range).filled())
                        + Circle::new((0, 0), 5, BLACK.stroke_width(1))
                }))
                .map_err(s)?;
            let ends = [panel.centroids.first(), panel.centroids.last()];
            chart
                .draw_series(ends.into_iter().flatten().map(|&(d, x, y)| {
                    EmptyElement::at((x, y))
                        + Text::new(d.to_string(), (7, -14), (FONT, 14).into_font())
                }))
                .map_err(s)?;
            legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        }
        colour_bar(&bar, range)
    })
}

/// A vertical viridis bar labelled with years.
fn colour_bar(
    area: &DrawingArea<SVGBackend, Shift>,
    (lo, hi): (i32, i32),
) -> std::result::Result<(), String> {
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0, 1) };
    let hi = hi.max(lo + 1);
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(48)
        .margin_right(10)
        .y_label_area_size(50)
        .caption("year", (FONT, 14))
        .build_cartesian_2d(0.0..1.0, lo as f64..hi as f64)
        .map_err(s)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        // plotters' default label font is tiny beside a narrow bar.
        .y_label_style((FONT, 13))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(s)?;
    let steps = 64;
    chart
        .draw_series((0..steps).map(|i| {
            let a = lo as f64 + (hi - lo) as f64 * i as f64 / steps as f64;
            let b = lo as f64 + (hi - lo) as f64 * (i + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                year_colour(a.round() as i32, (lo, hi)).filled(),
            )
        }))
        .map_err(s)?;
    Ok(())
}

/// Tukey's whisker ends: the most extreme of `values` within 1.5 × IQR of the box [q1, q3].
fn whiskers(values: &[f64], q1: f64, q3: f64) -> (f64, f64) {
    let fence = 1.5 * (q3 - q1);
    values
        .iter()
        .filter(|&&x| x >= q1 - fence && x <= q3 + fence)
        .fold((q1, q3), |(a, b), &x| (a.min(x), b.max(x)))
}

/// Box plots of values per group (e.g. document precocity per decade), Tukey's: box =
/// quartiles (plotters' linear interpolation), whiskers to the most extreme values within
/// 1.5 × IQR of the box, values beyond them drawn as points.
pub fn boxplots(
    figure: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    width: i32,
    groups: &[(i32, Vec<f64>)],
) -> Result<String> {
    let lo = groups.first().map_or(0, |g| g.0);
    let hi = groups.last().map_or(1, |g| g.0 + width);
    let vals = || groups.iter().flat_map(|g| g.1.iter().copied());
    let (y0, y1) = vals().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (y0, y1) = if y0 < y1 {
        let d = (y1 - y0) * 0.06;
        (y0 - d, y1 + d)
    } else if y0 == y1 {
        (y0 - 1.0, y0 + 1.0)
    } else {
        (0.0, 1.0)
    };
    svg(figure, (900, 400), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(lo as f64..hi as f64, y0..y1)
            .map_err(s)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(s)?;
        let style = DARK.stroke_width(1);
        for (k, v) in groups.iter().filter(|g| !g.1.is_empty()) {
            let [_, q1, median, q3, _] = Quartiles::new(v).values().map(f64::from);
            let (w0, w1) = whiskers(v, q1, q3);
            let centre = *k as f64 + width as f64 / 2.0;
            let half = width as f64 * 0.3;
            let line = |a: (f64, f64), b: (f64, f64)| PathElement::new(vec![a, b], style);
            chart
                .draw_series([Rectangle::new(
                    [(centre - half, q1), (centre + half, q3)],
                    style,
                )])
                .map_err(s)?;
            chart
                .draw_series([
                    line((centre - half, median), (centre + half, median)),
                    line((centre, q3), (centre, w1)),
                    line((centre, q1), (centre, w0)),
                    line((centre - half / 2.0, w1), (centre + half / 2.0, w1)),
                    line((centre - half / 2.0, w0), (centre + half / 2.0, w0)),
                ])
                .map_err(s)?;
            chart
                .draw_series(
                    v.iter()
                        .filter(|&&x| x < w0 || x > w1)
                        .map(|&x| Circle::new((centre, x), 2, style)),
                )
                .map_err(s)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiskers_end_at_data_within_the_fences() {
        // Box [1, 3], fences at -2 and 6: 5.5 is the last value inside, 9 an outlier.
        let v = [-1.0, 1.0, 2.0, 3.0, 5.5, 9.0];
        assert_eq!(whiskers(&v, 1.0, 3.0), (-1.0, 5.5));
        // Nothing beyond the box: the whiskers are the box's edges.
        assert_eq!(whiskers(&[1.0, 3.0], 1.0, 3.0), (1.0, 3.0));
    }
}
