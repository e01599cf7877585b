//! The report's 2-D map of item embeddings: the first two principal
//! components of an `embed.infonce` table, one dot per item coloured by its
//! domain, so cross-domain structure (or its absence) is visible at a
//! glance.
//!
//! PCA by power iteration on the covariance matrix (D × D, D = the
//! embedding size): a handful of matrix–vector products, deflated once for
//! the second component; deterministic (fixed start vector). At most
//! [`MAX_POINTS`] items are drawn, every k-th row, so the SVG stays small.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, StringArray};
use plotters::prelude::*;

use super::charts::{draw_legend, inline_svg, plot_err};
use crate::table;

/// Most dots drawn.
pub const MAX_POINTS: usize = 4000;

/// Rows of the embedding table (row 0, padding, left out) with the domain
/// of each.
pub struct Embeddings {
    pub rows: Vec<Vec<f32>>,
    pub domains: Vec<String>,
}

/// Reads `embeddings.safetensors` (tensor `embeddings`, [V + 1, D] float32)
/// and `items.parquet` (`row`, `domain`) from an `embed.infonce` output.
pub fn read(dir: &Path) -> anyhow::Result<Embeddings> {
    let path = dir.join("embeddings.safetensors");
    let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not safetensors ({e:?})", path.display()))?;
    let t = tensors
        .tensor("embeddings")
        .map_err(|e| anyhow::anyhow!("{}: no `embeddings` tensor ({e:?})", path.display()))?;
    anyhow::ensure!(
        t.dtype() == safetensors::Dtype::F32 && t.shape().len() == 2,
        "{}: `embeddings` must be a 2-D float32 tensor",
        path.display()
    );
    let (n, d) = (t.shape()[0], t.shape()[1]);
    let values: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let items = dir.join("items.parquet");
    let batch = table::read(&items)?;
    let rows = table::int64(&batch, "row", &items)?;
    let domain_col = batch
        .column_by_name("domain")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
    let mut domain_of: BTreeMap<i64, String> = BTreeMap::new();
    for i in 0..batch.num_rows() {
        let domain = match &domain_col {
            Some(c) if c.is_valid(i) => c.value(i).to_string(),
            _ => "unknown".into(),
        };
        domain_of.insert(rows.value(i), domain);
    }
    let mut out = Embeddings {
        rows: vec![],
        domains: vec![],
    };
    for r in 1..n {
        out.rows.push(values[r * d..(r + 1) * d].to_vec());
        out.domains.push(
            domain_of
                .get(&(r as i64))
                .cloned()
                .unwrap_or_else(|| "unknown".into()),
        );
    }
    Ok(out)
}

/// The rows projected on their first two principal components.
pub fn pca_2d(rows: &[Vec<f32>]) -> Vec<(f64, f64)> {
    let Some(d) = rows.first().map(Vec::len) else {
        return vec![];
    };
    let n = rows.len() as f64;
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / n)
        .collect();
    let centred: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(x, m)| *x as f64 - m).collect())
        .collect();
    let mut cov = vec![vec![0.0; d]; d];
    for r in &centred {
        for i in 0..d {
            for j in 0..d {
                cov[i][j] += r[i] * r[j] / n;
            }
        }
    }
    let first = top_eigenvector(&cov);
    let lambda = rayleigh(&cov, &first);
    for i in 0..d {
        for j in 0..d {
            cov[i][j] -= lambda * first[i] * first[j];
        }
    }
    let second = top_eigenvector(&cov);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    centred
        .iter()
        .map(|r| (dot(r, &first), dot(r, &second)))
        .collect()
}

fn mat_vec(m: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
    m.iter()
        .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

fn rayleigh(m: &[Vec<f64>], v: &[f64]) -> f64 {
    mat_vec(m, v).iter().zip(v).map(|(a, b)| a * b).sum()
}

/// Power iteration from a fixed, non-degenerate start.
fn top_eigenvector(m: &[Vec<f64>]) -> Vec<f64> {
    let d = m.len();
    let mut v: Vec<f64> = (0..d).map(|i| 1.0 + (i as f64 * 0.618).fract()).collect();
    for _ in 0..200 {
        let w = mat_vec(m, &v);
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm < 1e-12 {
            break;
        }
        v = w.into_iter().map(|x| x / norm).collect();
    }
    v
}

/// The map as inline SVG.
pub fn map_svg(e: &Embeddings) -> anyhow::Result<String> {
    let step = e.rows.len().div_ceil(MAX_POINTS).max(1);
    let picked: Vec<usize> = (0..e.rows.len()).step_by(step).collect();
    let rows: Vec<Vec<f32>> = picked.iter().map(|&i| e.rows[i].clone()).collect();
    let points = pca_2d(&rows);
    let domains: Vec<&str> = picked.iter().map(|&i| e.domains[i].as_str()).collect();
    let names: Vec<&str> = {
        let mut d = domains.clone();
        d.sort_unstable();
        d.dedup();
        d
    };
    let bounds = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = points
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(x), hi.max(x))
            });
        let pad = ((hi - lo) * 0.05).max(1e-6);
        (lo - pad)..(hi + pad)
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Item embeddings, first two principal components",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(bounds(|p| p.0), bounds(|p| p.1))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("PC 1")
            .y_desc("PC 2")
            .draw()
            .map_err(plot_err)?;
        for (k, name) in names.iter().enumerate() {
            let color = Palette99::pick(k);
            let dots = points
                .iter()
                .zip(&domains)
                .filter(|(_, d)| *d == name)
                .map(|(p, _)| Circle::new(*p, 2, color.mix(0.6).filled()));
            chart
                .draw_series(dots)
                .map_err(plot_err)?
                .label(name.to_string())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, Palette99::pick(k).filled()));
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present().map_err(plot_err)?;
    }
    Ok(inline_svg(svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_directions_of_largest_spread() {
        // points spread along (1, 1, 0) by ±10, along (1, -1, 0) by ±1, and
        // not at all along z
        let mut rows = vec![];
        for a in [-10.0f32, -5.0, 5.0, 10.0] {
            for b in [-1.0f32, 1.0] {
                rows.push(vec![a + b, a - b, 3.0]);
            }
        }
        let p = pca_2d(&rows);
        // first component: ±a·√2 (sign free), second: ±b·√2
        for (i, (x, y)) in p.iter().enumerate() {
            let (a, b) = ([-10.0, -5.0, 5.0, 10.0][i / 2], [-1.0, 1.0][i % 2]);
            assert!(
                (x.abs() - a * f64::sqrt(2.0) * a.signum()).abs() < 1e-6,
                "{p:?}"
            );
            assert!(
                (y.abs() - f64::abs(b) * f64::sqrt(2.0)).abs() < 1e-6,
                "{p:?}"
            );
        }
    }
}
