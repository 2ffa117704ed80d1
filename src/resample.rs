//! Resizing: the 8-bit inputs to their working size (Lanczos), and the optimiser's state between
//! the scales of a coarse-to-fine render (the image and Adam's moments, channels-last f32 maps,
//! bilinear on the host, once per scale).

/// Resizes a `height x width x channels` channels-last map to `new_height x new_width` bilinearly,
/// with pixel centres aligned (a pixel's centre at `(x + 0.5) * width / new_width - 0.5` in the
/// source, clamped to the edge). A constant map stays constant; the channels are independent.
pub fn bilinear(
    src: &[f32],
    (height, width): (usize, usize),
    channels: usize,
    (new_height, new_width): (usize, usize),
) -> Vec<f32> {
    assert_eq!(src.len(), height * width * channels, "the map has height x width x channels values");
    assert!(height > 0 && width > 0 && new_height > 0 && new_width > 0, "sizes are positive");
    // For each output coordinate: the two source indices and the weight of the second.
    let taps = |n: usize, new_n: usize| -> Vec<(usize, usize, f32)> {
        (0..new_n)
            .map(|o| {
                let c = ((o as f64 + 0.5) * n as f64 / new_n as f64 - 0.5).clamp(0.0, (n - 1) as f64);
                let i0 = c.floor() as usize;
                let i1 = (i0 + 1).min(n - 1);
                (i0, i1, (c - i0 as f64) as f32)
            })
            .collect()
    };
    let (rows, cols) = (taps(height, new_height), taps(width, new_width));
    let mut out = vec![0.0; new_height * new_width * channels];
    for (oy, &(y0, y1, wy)) in rows.iter().enumerate() {
        for (ox, &(x0, x1, wx)) in cols.iter().enumerate() {
            for c in 0..channels {
                let at = |y: usize, x: usize| src[(y * width + x) * channels + c];
                let top = at(y0, x0) + wx * (at(y0, x1) - at(y0, x0));
                let bottom = at(y1, x0) + wx * (at(y1, x1) - at(y1, x0));
                out[(oy * new_width + ox) * channels + c] = top + wy * (bottom - top);
            }
        }
    }
    out
}

/// Resizes an 8-bit image with a Lanczos filter (a no-op at the same size): how every input
/// reaches its working size.
pub fn resize(img: &image::RgbImage, width: usize, height: usize) -> image::RgbImage {
    if img.width() as usize == width && img.height() as usize == height {
        return img.clone();
    }
    image::imageops::resize(img, width as u32, height as u32, image::imageops::FilterType::Lanczos3)
}

#[cfg(test)]
mod tests {
    use super::bilinear;

    #[test]
    fn a_constant_map_stays_constant_at_odd_sizes() {
        let src = vec![3.5; 301 * 199 * 4];
        let out = bilinear(&src, (199, 301), 4, (281, 427));
        assert_eq!(out.len(), 281 * 427 * 4);
        assert!(out.iter().all(|&v| v == 3.5));
    }

    #[test]
    fn the_same_size_is_the_identity() {
        let src: Vec<f32> = (0..5 * 7 * 3).map(|i| i as f32 * 0.25).collect();
        assert_eq!(bilinear(&src, (5, 7), 3, (5, 7)), src);
    }

    #[test]
    fn a_ramp_is_resampled_at_the_pixel_centres() {
        // Source values are their x coordinate; doubling the width puts output pixel centres at
        // (ox + 0.5) / 2 - 0.5 in the source, clamped to 0..=3.
        let src: Vec<f32> = (0..2 * 4).map(|i| (i % 4) as f32).collect();
        let out = bilinear(&src, (2, 4), 1, (2, 8));
        let want = [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0];
        for (o, w) in out[..8].iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
        assert_eq!(&out[8..], &out[..8]);
    }
}
