//! Colour controls of a render, on the CPU in f64: matching a style image's colour statistics to
//! the content's (`--color-match`), and keeping the content's colours in the result
//! (`--preserve-colors`).

// 3x3 matrix arithmetic reads best with explicit indices.
#![allow(clippy::needless_range_loop)]

use image::RgbImage;

/// Channel means and covariance of an RGB image (values 0..255).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorStats {
    pub mean: [f64; 3],
    /// Population covariance (divided by the number of pixels).
    pub cov: [[f64; 3]; 3],
}

/// The statistics of `pixels`, RGB triples.
pub fn stats_of(pixels: &[[f64; 3]]) -> ColorStats {
    let n = pixels.len().max(1) as f64;
    let mut mean = [0.0; 3];
    for p in pixels {
        for c in 0..3 {
            mean[c] += p[c] / n;
        }
    }
    let mut cov = [[0.0; 3]; 3];
    for p in pixels {
        for i in 0..3 {
            for j in 0..3 {
                cov[i][j] += (p[i] - mean[i]) * (p[j] - mean[j]) / n;
            }
        }
    }
    ColorStats { mean, cov }
}

/// The statistics of an 8-bit image.
pub fn stats(img: &RgbImage) -> ColorStats {
    stats_of(&img.pixels().map(|p| p.0.map(f64::from)).collect::<Vec<_>>())
}

/// Eigen-decomposition of a symmetric 3x3 matrix by cyclic Jacobi rotations: (values, vectors as
/// columns).
fn eigen_symmetric(m: [[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut a = m;
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..50 {
        let off = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
        if off <= 1e-30 * (a[0][0].powi(2) + a[1][1].powi(2) + a[2][2].powi(2)).max(1e-300) {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q] == 0.0 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
            // a = Jᵀ a J with J the rotation in the (p, q) plane.
            for k in 0..3 {
                let (akp, akq) = (a[k][p], a[k][q]);
                a[k][p] = c * akp - s * akq;
                a[k][q] = s * akp + c * akq;
            }
            for k in 0..3 {
                let (apk, aqk) = (a[p][k], a[q][k]);
                a[p][k] = c * apk - s * aqk;
                a[q][k] = s * apk + c * aqk;
            }
            for row in &mut v {
                let (vp, vq) = (row[p], row[q]);
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    ([a[0][0], a[1][1], a[2][2]], v)
}

/// `m^power` for a symmetric positive semi-definite matrix (eigenvalues floored at `floor` so that
/// a flat image's covariance can still be inverted).
fn symmetric_power(m: [[f64; 3]; 3], power: f64, floor: f64) -> [[f64; 3]; 3] {
    let (values, vectors) = eigen_symmetric(m);
    let mut out = [[0.0; 3]; 3];
    for (k, &lambda) in values.iter().enumerate() {
        let f = lambda.max(floor).powf(power);
        for i in 0..3 {
            for j in 0..3 {
                out[i][j] += vectors[i][k] * f * vectors[j][k];
            }
        }
    }
    out
}

fn mul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

/// The affine map `x -> A (x - mean_from) + mean_to` with `A = cov_to^(1/2) cov_from^(-1/2)`
/// (symmetric square roots): it gives pixels with statistics `from` the mean and covariance `to`.
pub fn matching_transform(from: &ColorStats, to: &ColorStats) -> ([[f64; 3]; 3], [f64; 3]) {
    // Variances below 1e-2 (a flat channel) are treated as 1e-2.
    let a = mul(symmetric_power(to.cov, 0.5, 0.0), symmetric_power(from.cov, -0.5, 1e-2));
    let mut offset = to.mean;
    for i in 0..3 {
        for j in 0..3 {
            offset[i] -= a[i][j] * from.mean[j];
        }
    }
    (a, offset)
}

/// Applies an affine colour map to RGB triples.
pub fn apply(pixels: &mut [[f64; 3]], (a, offset): &([[f64; 3]; 3], [f64; 3])) {
    for p in pixels {
        let x = *p;
        for i in 0..3 {
            p[i] = offset[i] + (0..3).map(|j| a[i][j] * x[j]).sum::<f64>();
        }
    }
}

/// `style` recoloured so that its channel means and covariance equal `content`'s (then clamped
/// to 0..255 and rounded).
pub fn color_match(style: &RgbImage, content: &RgbImage) -> RgbImage {
    let mut pixels: Vec<[f64; 3]> = style.pixels().map(|p| p.0.map(f64::from)).collect();
    let transform = matching_transform(&stats_of(&pixels), &stats(content));
    apply(&mut pixels, &transform);
    let bytes = pixels.iter().flat_map(|p| p.map(|v| v.clamp(0.0, 255.0).round() as u8)).collect();
    RgbImage::from_raw(style.width(), style.height(), bytes).expect("one triple per pixel")
}

/// RGB (0..255) to full-range YCbCr as JPEG defines it (ITU-R BT.601 coefficients).
pub fn ycbcr([r, g, b]: [f64; 3]) -> [f64; 3] {
    [
        0.299 * r + 0.587 * g + 0.114 * b,
        128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b,
        128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b,
    ]
}

/// The inverse of [`ycbcr`].
pub fn rgb([y, cb, cr]: [f64; 3]) -> [f64; 3] {
    [y + 1.402 * (cr - 128.0), y - 0.344_136 * (cb - 128.0) - 0.714_136 * (cr - 128.0), y + 1.772 * (cb - 128.0)]
}

/// `--preserve-colors`: each pixel keeps the result's luma Y and takes the content's chroma
/// (Cb, Cr) in full-range YCbCr; `result` and `content` have the same size.
pub fn preserve_colors(result: &mut [[f64; 3]], content: &RgbImage) {
    for (p, c) in result.iter_mut().zip(content.pixels()) {
        let [y, _, _] = ycbcr(*p);
        let [_, cb, cr] = ycbcr(c.0.map(f64::from));
        *p = rgb([y, cb, cr]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ycbcr_and_back_is_the_identity() {
        for p in [[0.0, 0.0, 0.0], [255.0, 255.0, 255.0], [12.0, 200.0, 99.5], [255.0, 0.0, 128.0]] {
            let back = rgb(ycbcr(p));
            for c in 0..3 {
                assert!((back[c] - p[c]).abs() < 1e-4, "{p:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn symmetric_square_roots_square_back() {
        let m = [[400.0, 120.0, -30.0], [120.0, 250.0, 60.0], [-30.0, 60.0, 90.0]];
        let root = symmetric_power(m, 0.5, 0.0);
        let square = mul(root, root);
        let inverse = mul(symmetric_power(m, -0.5, 0.0), root);
        for i in 0..3 {
            for j in 0..3 {
                assert!((square[i][j] - m[i][j]).abs() < 1e-9 * 400.0, "{square:?}");
                assert!((inverse[i][j] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9, "{inverse:?}");
            }
        }
    }

    #[test]
    fn the_matching_transform_gives_the_target_mean_and_covariance_exactly() {
        let mut state = 5u64;
        let mut next = || (crate::rng::splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
        let from: Vec<[f64; 3]> = (0..500)
            .map(|_| {
                let t = next();
                [40.0 + 100.0 * t + 20.0 * next(), 80.0 + 30.0 * next(), 200.0 - 90.0 * t]
            })
            .collect();
        let to: Vec<[f64; 3]> =
            (0..300).map(|_| [next() * 255.0, 100.0 + 50.0 * next(), 30.0 + 10.0 * next()]).collect();
        let (sf, st) = (stats_of(&from), stats_of(&to));
        let mut moved = from.clone();
        apply(&mut moved, &matching_transform(&sf, &st));
        let got = stats_of(&moved);
        for i in 0..3 {
            assert!((got.mean[i] - st.mean[i]).abs() < 1e-9, "{got:?} vs {st:?}");
            for j in 0..3 {
                assert!((got.cov[i][j] - st.cov[i][j]).abs() < 1e-8, "{got:?} vs {st:?}");
            }
        }
    }
}
