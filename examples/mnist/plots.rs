//! PNG plots for the MNIST example: training curves, first-layer filters and
//! the test-set confusion matrix.
//!
//! Everything is drawn with `plotters`' bitmap backend. Text goes through the
//! `ab_glyph` feature, which has no system font lookup, so DejaVu Sans is
//! bundled (`assets/DejaVuSans.ttf`, license in `assets/DejaVuSans-LICENSE.txt`)
//! and registered once at runtime.
//!
//! Every PNG is written atomically: drawn to `.<name>.tmp.png` in the target
//! directory, then renamed over `<name>.png`, so a reader never sees a
//! half-written image.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle, FontTransform, RGBColor};

static FONT_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/DejaVuSans.ttf"
));

/// Font family every text style below uses; registered by [`ensure_font`].
const FONT: &str = "sans-serif";

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

const INK: RGBColor = RGBColor(33, 33, 33);
const MUTED: RGBColor = RGBColor(110, 110, 110);
const GRID: RGBColor = RGBColor(200, 200, 200);
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const TEST_COLOR: RGBColor = RGBColor(214, 39, 40);

/// Registers the bundled font for the family names plotters may ask for.
/// Runs once; later calls return the first outcome.
fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for family in [FONT, "serif", "monospace"] {
                for style in [FontStyle::Normal, FontStyle::Bold] {
                    register_font(family, style, FONT_BYTES).map_err(|_| {
                        "bundled font assets/DejaVuSans.ttf could not be parsed".to_string()
                    })?;
                }
            }
            Ok(())
        })
        .clone()
}

/// Draws a `size` PNG with `draw` and atomically places it at `dir/file_name`.
fn render<F>(dir: &Path, file_name: &str, size: (u32, u32), draw: F) -> Result<PathBuf, String>
where
    F: FnOnce(&Area<'_>) -> Result<(), String>,
{
    ensure_font()?;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("creating plot directory {}: {e}", dir.display()))?;
    let final_path = dir.join(file_name);
    let stem = file_name.strip_suffix(".png").unwrap_or(file_name);
    let tmp_path = dir.join(format!(".{stem}.tmp.png"));

    let drawn = {
        let root = BitMapBackend::new(&tmp_path, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| e.to_string()))
        // `root` is dropped here; after a failed draw its Drop may still write
        // the temporary file, which is removed below.
    };
    let placed = drawn
        .map_err(|e| format!("drawing {}: {e}", final_path.display()))
        .and_then(|()| {
            std::fs::rename(&tmp_path, &final_path).map_err(|e| {
                format!(
                    "renaming {} to {}: {e}",
                    tmp_path.display(),
                    final_path.display()
                )
            })
        });
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    placed.map(|()| final_path)
}

fn text_style(size: f64, color: RGBColor) -> TextStyle<'static> {
    TextStyle {
        font: (FONT, size).into_font(),
        color: color.to_backend_color(),
        pos: Pos::new(HPos::Left, VPos::Top),
    }
}

fn title_style() -> TextStyle<'static> {
    let mut style = text_style(26.0, INK);
    style.font = style.font.style(FontStyle::Bold);
    style
}

/// Writes `message` in the middle of an otherwise empty plot.
fn draw_placeholder(root: &Area<'_>, title: &str, message: &str) -> Result<(), String> {
    let (w, h) = root.dim_in_pixel();
    let centre = Pos::new(HPos::Center, VPos::Center);
    root.draw_text(title, &title_style().pos(centre), (w as i32 / 2, 40))
        .map_err(|e| e.to_string())?;
    root.draw_text(
        message,
        &text_style(20.0, MUTED).pos(centre),
        (w as i32 / 2, h as i32 / 2),
    )
    .map_err(|e| e.to_string())
}

/// Finite (min, max) of `values`, or `None` if there is none.
fn finite_range(values: impl IntoIterator<Item = f32>) -> Option<(f32, f32)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Epoch axis range: 1..=n, widened around the single point when n == 1.
fn epoch_range(n: usize) -> std::ops::Range<i32> {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    if n <= 1 {
        0..2
    } else {
        1..n
    }
}

/// Tick label for epoch `e`; blank outside 1..=n (the padding around a
/// single epoch).
fn epoch_label(e: i32, n: usize) -> String {
    if e >= 1 && usize::try_from(e).is_ok_and(|e| e <= n) {
        e.to_string()
    } else {
        String::new()
    }
}

/// Decimals that tell ticks apart on an axis spanning `span` (plotters puts
/// at most 8 ticks at multiples of 1, 2 or 5 × 10^k, so a step is never
/// finer than 0.1 × 10^floor(log10 span)).
fn tick_decimals(span: f64) -> usize {
    if span.is_finite() && span > 0.0 {
        (1 - span.log10().floor() as i32).clamp(0, 6) as usize
    } else {
        3
    }
}

/// `v` with `decimals` decimals and an explicit sign, never "-0.000".
fn signed(v: f32, decimals: usize) -> String {
    let s = format!("{v:+.decimals$}");
    if s.trim_start_matches(['+', '-'])
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.replacen('-', "+", 1)
    } else {
        s
    }
}

/// (epoch, value) points, 1-based, skipping non-finite values.
fn epoch_points(values: &[f32], scale: f32) -> Vec<(i32, f64)> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| (i as i32 + 1, f64::from(v * scale)))
        .collect()
}

/// Loss and accuracy curves per epoch: `loss.png` (train loss per epoch) and
/// `accuracy.png` (test accuracy, and train accuracy if given) in `dir`.
///
/// Accuracies may be fractions (0..=1) or percentages: if any value exceeds
/// 1.0 they are all taken as percentages. Both are plotted in percent.
/// Series may have different lengths; non-finite values are skipped.
pub fn curves(
    dir: &Path,
    train_loss: &[f32],
    train_acc: &[f32],
    test_acc: &[f32],
) -> Result<Vec<PathBuf>, String> {
    let loss = render(dir, "loss.png", (900, 560), |root| {
        draw_loss(root, train_loss)
    })?;
    let acc = render(dir, "accuracy.png", (900, 560), |root| {
        draw_accuracy(root, train_acc, test_acc)
    })?;
    Ok(vec![loss, acc])
}

fn draw_loss(root: &Area<'_>, train_loss: &[f32]) -> Result<(), String> {
    let title = "Training loss per epoch";
    let Some((lo, hi)) = finite_range(train_loss.iter().copied()) else {
        return draw_placeholder(root, title, "no loss values recorded");
    };
    // Loss is non-negative for cross-entropy; start the axis at zero when it
    // is, so the curve's drop is shown honestly.
    let (lo, hi) = (f64::from(lo), f64::from(hi));
    let y_lo = if lo >= 0.0 {
        0.0
    } else {
        lo - 0.05 * (hi - lo).max(1e-3)
    };
    let y_hi = if hi > y_lo {
        hi + 0.08 * (hi - y_lo)
    } else {
        y_lo + 1.0
    };

    let mut chart = ChartBuilder::on(root)
        .caption(title, title_style())
        .margin(18)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(epoch_range(train_loss.len()), y_lo..y_hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("mean cross-entropy loss")
        .x_labels(train_loss.len().clamp(2, 12))
        .x_label_formatter(&|&e| epoch_label(e, train_loss.len()))
        .y_labels(8)
        .y_label_formatter(&|v| format!("{v:.*}", tick_decimals(y_hi - y_lo)))
        .label_style(text_style(15.0, INK))
        .axis_desc_style(text_style(18.0, INK))
        .light_line_style(WHITE)
        .bold_line_style(GRID.mix(0.6))
        .draw()
        .map_err(|e| e.to_string())?;

    let points = epoch_points(train_loss, 1.0);
    let last = points.last().map(|&(_, v)| v);
    let style = TRAIN_COLOR.stroke_width(3);
    let label = match last {
        Some(v) => format!("train loss (last {v:.4})"),
        None => "train loss".to_string(),
    };
    chart
        .draw_series(LineSeries::new(points, style).point_size(4))
        .map_err(|e| e.to_string())?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(text_style(16.0, INK))
        .background_style(WHITE.mix(0.9))
        .border_style(MUTED)
        .draw()
        .map_err(|e| e.to_string())
}

fn draw_accuracy(root: &Area<'_>, train_acc: &[f32], test_acc: &[f32]) -> Result<(), String> {
    let title = "Accuracy per epoch";
    let all = train_acc.iter().chain(test_acc).copied();
    let Some((lo, hi)) = finite_range(all) else {
        return draw_placeholder(root, title, "no accuracy values recorded");
    };
    let scale = if hi > 1.0 { 1.0 } else { 100.0 };
    let (lo, hi) = (f64::from(lo * scale), f64::from(hi * scale));
    // Zoom in on the data (MNIST accuracies cluster near 100 %), keeping at
    // least a 2-point span and staying inside 0..=100 where the data does.
    let span = (hi - lo).max(2.0);
    let mut y_lo = lo - 0.1 * span;
    let mut y_hi = hi + 0.1 * span;
    if lo >= 0.0 {
        y_lo = y_lo.max(0.0);
    }
    if hi <= 100.0 {
        y_hi = y_hi.min(100.0);
    }
    if y_hi - y_lo < 1.0 {
        y_lo = y_hi - 1.0;
    }

    let epochs = train_acc.len().max(test_acc.len());
    let mut chart = ChartBuilder::on(root)
        .caption(title, title_style())
        .margin(18)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(epoch_range(epochs), y_lo..y_hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("accuracy (%)")
        .x_labels(epochs.clamp(2, 12))
        .x_label_formatter(&|&e| epoch_label(e, epochs))
        .y_labels(8)
        .y_label_formatter(&|v| format!("{v:.*}", tick_decimals(y_hi - y_lo)))
        .label_style(text_style(15.0, INK))
        .axis_desc_style(text_style(18.0, INK))
        .light_line_style(WHITE)
        .bold_line_style(GRID.mix(0.6))
        .draw()
        .map_err(|e| e.to_string())?;

    for (name, values, color) in [
        ("train", train_acc, TRAIN_COLOR),
        ("test", test_acc, TEST_COLOR),
    ] {
        let points = epoch_points(values, scale);
        let Some(&(_, last)) = points.last() else {
            continue;
        };
        let best =
            points
                .iter()
                .copied()
                .fold((0, f64::NEG_INFINITY), |b, p| if p.1 > b.1 { p } else { b });
        let label = if best.1 > last {
            format!(
                "{name} (last {last:.2} %, best {:.2} % at epoch {})",
                best.1, best.0
            )
        } else {
            format!("{name} (last {last:.2} %)")
        };
        let style = color.stroke_width(3);
        chart
            .draw_series(LineSeries::new(points, style).point_size(4))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(text_style(16.0, INK))
        .background_style(WHITE.mix(0.9))
        .border_style(MUTED)
        .draw()
        .map_err(|e| e.to_string())
}

/// First-layer filters of shape `count × 1 × kh × kw`, each tile scaled to its own range:
/// `filters.png`.
pub fn filters(
    dir: &Path,
    weights: &[f32],
    count: usize,
    kh: usize,
    kw: usize,
) -> Result<PathBuf, String> {
    if count == 0 || kh == 0 || kw == 0 {
        return Err(format!("filters: empty filter shape {count}×1×{kh}×{kw}"));
    }
    let needed = count
        .checked_mul(kh)
        .and_then(|n| n.checked_mul(kw))
        .ok_or_else(|| format!("filters: shape {count}×1×{kh}×{kw} overflows"))?;
    if weights.len() != needed {
        return Err(format!(
            "filters: {} weights given, shape {count}×1×{kh}×{kw} needs {needed}",
            weights.len()
        ));
    }
    let tiles: Vec<Tile> = weights
        .chunks_exact(kh * kw)
        .enumerate()
        .map(|(k, w)| (format!("filter {}", k + 1), kh, kw, w))
        .collect();
    let title = format!("First-layer filters: {count} × ({kh}×{kw})");
    let cols = (1..=count).find(|c| c * c >= count).unwrap_or(count).min(8);
    grid(dir, "filters.png", &title, &tiles, cols)
}

/// One tile of [`grid`]: label, height, width, row-major values.
pub type Tile<'a> = (String, usize, usize, &'a [f32]);

/// A grid of grayscale tiles (`cols` per row, at most as many as tiles), each scaled to its own range (black = most
/// negative, white = most positive, red = not finite), labelled with its name and range:
/// `dir/file`.
pub fn grid(
    dir: &Path,
    file: &str,
    title: &str,
    tiles: &[Tile],
    cols: usize,
) -> Result<PathBuf, String> {
    if tiles.is_empty()
        || tiles
            .iter()
            .any(|t| t.1 == 0 || t.2 == 0 || t.3.len() != t.1 * t.2)
    {
        return Err(format!("{file}: empty or mis-sized tiles"));
    }
    ensure_font()?;
    let subtitle =
        "each tile scaled to its own range: black = most negative, white = most positive";
    let subtitle_style = text_style(15.0, MUTED);
    let count = tiles.len();
    let cols = cols.clamp(1, count);
    let rows = count.div_ceil(cols);
    let side_max = tiles.iter().map(|t| t.1.max(t.2)).max().unwrap_or(1);
    let px = (150 / side_max).max(2); // enlarged pixel size, the same for every tile
    let (tile_w, tile_h) = (
        tiles.iter().map(|t| t.2).max().unwrap_or(1) * px,
        tiles.iter().map(|t| t.1).max().unwrap_or(1) * px,
    );
    let cell_w = tile_w.max(150) + 30;
    let label_h = 48;
    let cell_h = label_h + tile_h + 24;
    let (top, side, bottom) = (90, 20, 10);
    let width =
        (side * 2 + cols * cell_w).max(estimate_width(subtitle, &subtitle_style) + 2 * side);
    let height = top + rows * cell_h + bottom;
    let size = (
        u32::try_from(width).map_err(|_| format!("{file}: image too wide"))?,
        u32::try_from(height).map_err(|_| format!("{file}: image too tall"))?,
    );
    let x0 = (width - cols * cell_w) / 2;
    render(dir, file, size, |root| {
        let centre_top = Pos::new(HPos::Center, VPos::Top);
        let err = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.draw_text(
            title,
            &title_style().pos(centre_top),
            (width as i32 / 2, 14),
        )
        .map_err(err)?;
        root.draw_text(
            subtitle,
            &subtitle_style.pos(centre_top),
            (width as i32 / 2, 52),
        )
        .map_err(err)?;
        for (k, (label, th, tw, vals)) in tiles.iter().enumerate() {
            let (r, c) = (k / cols, k % cols);
            let cx = (x0 + c * cell_w + cell_w / 2) as i32;
            let cy = (top + r * cell_h) as i32;
            let range = finite_range(vals.iter().copied());
            root.draw_text(label, &text_style(17.0, INK).pos(centre_top), (cx, cy))
                .map_err(err)?;
            let range_text = match range {
                Some((lo, hi)) => format!("{} … {}", signed(lo, 3), signed(hi, 3)),
                None => "no finite values".to_string(),
            };
            root.draw_text(
                &range_text,
                &text_style(14.0, MUTED).pos(centre_top),
                (cx, cy + 22),
            )
            .map_err(err)?;
            let (tw_px, th_px) = (tw * px, th * px);
            let tx = cx - (tw_px / 2) as i32;
            let ty = cy + label_h as i32;
            for (i, &w) in vals.iter().enumerate() {
                let color = match range {
                    _ if !w.is_finite() => RGBColor(220, 30, 30),
                    Some((lo, hi)) if hi > lo => {
                        let g = (((w - lo) / (hi - lo)) * 255.0).round().clamp(0.0, 255.0) as u8;
                        RGBColor(g, g, g)
                    }
                    _ => RGBColor(128, 128, 128),
                };
                let (y, x) = ((i / tw * px) as i32, (i % tw * px) as i32);
                root.draw(&Rectangle::new(
                    [(tx + x, ty + y), (tx + x + px as i32, ty + y + px as i32)],
                    color.filled(),
                ))
                .map_err(err)?;
            }
            // Frame, just outside the tile so it hides no value.
            root.draw(&Rectangle::new(
                [
                    (tx - 2, ty - 2),
                    (tx + tw_px as i32 + 1, ty + th_px as i32 + 1),
                ],
                MUTED.stroke_width(1),
            ))
            .map_err(err)?;
        }
        Ok(())
    })
}

/// Test-set confusion matrix (rows = true class, cols = predicted), cells
/// shaded by row-normalised value with the count written in each cell,
/// class names on the axes: `confusion.png`.
///
/// The title gives the overall accuracy; a column on the right gives each
/// class's recall (diagonal / row total).
pub fn confusion(
    dir: &Path,
    matrix: &[[u32; 10]; 10],
    class_names: &[&str; 10],
) -> Result<PathBuf, String> {
    ensure_font()?;
    // Measure class names to size the margins; long names on the x axis are
    // written vertically.
    let name_style = text_style(16.0, INK);
    let name_w = class_names
        .iter()
        .map(|n| estimate_width(n, &name_style))
        .max()
        .unwrap_or(0);
    let cell = 62usize;
    let rotate_x = name_w + 6 > cell;
    let left = 50 + name_w + 14;
    let top = 92;
    let recall_w = 90;
    let x_names_h = if rotate_x { name_w + 14 } else { 28 };
    let bottom = x_names_h + 48;
    let width = left + 10 * cell + recall_w + 16;
    let height = top + 10 * cell + bottom;
    let size = (
        u32::try_from(width).map_err(|_| "confusion: image too wide".to_string())?,
        u32::try_from(height).map_err(|_| "confusion: image too tall".to_string())?,
    );

    let total: u64 = matrix.iter().flatten().map(|&v| u64::from(v)).sum();
    let correct: u64 = (0..10).map(|i| u64::from(matrix[i][i])).sum();

    render(dir, "confusion.png", size, |root| {
        let err = |e: DrawingAreaErrorKind<_>| e.to_string();
        let centre = Pos::new(HPos::Center, VPos::Center);
        let (gx, gy) = (left as i32, top as i32);
        let c = cell as i32;

        let title = if total > 0 {
            format!(
                "Test-set confusion matrix: accuracy {:.2} % ({correct} / {total})",
                100.0 * correct as f64 / total as f64
            )
        } else {
            "Test-set confusion matrix: no samples counted".to_string()
        };
        root.draw_text(&title, &title_style().pos(centre), (width as i32 / 2, 26))
            .map_err(err)?;
        root.draw_text(
            "colour = share of the true class's row (square-root scale): blue = correct, red = mistaken",
            &text_style(15.0, MUTED).pos(centre),
            (width as i32 / 2, 58),
        )
        .map_err(err)?;

        for (i, row) in matrix.iter().enumerate() {
            let row_sum: u64 = row.iter().map(|&v| u64::from(v)).sum();
            for (j, &count) in row.iter().enumerate() {
                let frac = if row_sum > 0 {
                    count as f64 / row_sum as f64
                } else {
                    0.0
                };
                let (x, y) = (gx + j as i32 * c, gy + i as i32 * c);
                // Square root so that a few percent of mistakes still shows.
                let t = frac.sqrt();
                let fill = if i == j {
                    ramp(t, BLUE_END)
                } else {
                    ramp(t, RED_END)
                };
                root.draw(&Rectangle::new([(x, y), (x + c, y + c)], fill.filled()))
                    .map_err(err)?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + c, y + c)],
                    GRID.stroke_width(1),
                ))
                .map_err(err)?;
                let ink = if t > 0.6 {
                    WHITE
                } else if count == 0 {
                    GRID
                } else {
                    INK
                };
                let size = if count >= 10_000 { 13.0 } else { 16.0 };
                root.draw_text(
                    &count.to_string(),
                    &text_style(size, ink).pos(centre),
                    (x + c / 2, y + c / 2),
                )
                .map_err(err)?;
            }
            // Recall column.
            let recall = if row_sum > 0 {
                format!("{:.1} %", 100.0 * f64::from(row[i]) / row_sum as f64)
            } else {
                "–".to_string()
            };
            let y = gy + i as i32 * c + c / 2;
            root.draw_text(
                &recall,
                &text_style(15.0, INK).pos(centre),
                (gx + 10 * c + recall_w as i32 / 2, y),
            )
            .map_err(err)?;
            // Row (true class) name.
            root.draw_text(
                class_names[i],
                &name_style.pos(Pos::new(HPos::Right, VPos::Center)),
                (gx - 8, y),
            )
            .map_err(err)?;
        }
        // Outer frame.
        root.draw(&Rectangle::new(
            [(gx, gy), (gx + 10 * c, gy + 10 * c)],
            INK.stroke_width(1),
        ))
        .map_err(err)?;

        // Column (predicted class) names.
        for (j, name) in class_names.iter().enumerate() {
            let x = gx + j as i32 * c + c / 2;
            let y = gy + 10 * c + 8;
            let style = if rotate_x {
                name_style
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Right, VPos::Center))
            } else {
                name_style.pos(Pos::new(HPos::Center, VPos::Top))
            };
            root.draw_text(name, &style, (x, y)).map_err(err)?;
        }

        // Axis titles and the recall header.
        let axis = text_style(18.0, INK);
        root.draw_text(
            "predicted class",
            &axis.pos(centre),
            (gx + 5 * c, gy + 10 * c + x_names_h as i32 + 22),
        )
        .map_err(err)?;
        root.draw_text(
            "true class",
            &axis.transform(FontTransform::Rotate270).pos(centre),
            (22, gy + 5 * c),
        )
        .map_err(err)?;
        root.draw_text(
            "recall",
            &axis.pos(centre),
            (gx + 10 * c + recall_w as i32 / 2, gy - 16),
        )
        .map_err(err)?;
        Ok(())
    })
}

/// Width in pixels of `text` in `style` (the ab_glyph layout estimate).
fn estimate_width(text: &str, style: &TextStyle<'_>) -> usize {
    style
        .font
        .box_size(text)
        .map(|(w, _)| w as usize)
        .unwrap_or(text.chars().count() * 10)
}

const BLUE_END: RGBColor = RGBColor(8, 48, 107);
const RED_END: RGBColor = RGBColor(165, 15, 21);

/// White → `end` ramp for `t` in 0..=1.
fn ramp(t: f64, end: RGBColor) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mix = |b: u8| (255.0 + (f64::from(b) - 255.0) * t).round() as u8;
    RGBColor(mix(end.0), mix(end.1), mix(end.2))
}
