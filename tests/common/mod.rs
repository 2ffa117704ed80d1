//! Shared test support: a seeded generator, the GPU (one device and kernel library per test binary),
//! and closeness checks that name the worst element.

#![allow(dead_code)]

use std::sync::OnceLock;

use nst::gpu::{Gpu, GpuOptions, KernelLibrary};

/// SplitMix64: small, seeded, the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn vec_f32(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi) as f32).collect()
    }
    pub fn vec_f64(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    /// Integers in lo..=hi as floats: many exact ties and exact zeros.
    pub fn vec_ties(&mut self, n: usize, lo: i32, hi: i32) -> Vec<f32> {
        (0..n).map(|_| (lo + self.below((hi - lo + 1) as usize) as i32) as f32).collect()
    }
}

static GPU: OnceLock<Option<(Gpu, KernelLibrary)>> = OnceLock::new();

/// The test GPU and its kernel library. Without an adapter the test fails, with the install hint;
/// only outside CI, and only when `NST_SKIP_GPU_TESTS=1` says so, does it skip (loudly).
pub fn gpu() -> Option<&'static (Gpu, KernelLibrary)> {
    let found = GPU.get_or_init(|| match Gpu::new(&GpuOptions::from_env()) {
        Ok(gpu) => {
            let library = nst::shaders::library(&gpu).expect("the kernel library compiles");
            eprintln!("GPU tests run on {}", gpu.describe());
            Some((gpu, library))
        }
        Err(e) => {
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            let skip = std::env::var("NST_SKIP_GPU_TESTS").is_ok_and(|v| v == "1");
            if skip && !in_ci {
                eprintln!("SKIPPING GPU TESTS (NST_SKIP_GPU_TESTS=1): {e}");
                None
            } else {
                panic!("GPU tests need an adapter: {e}");
            }
        }
    });
    found.as_ref()
}

/// Coordinates of flat index `i` in a row-major `shape`.
fn coords(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        out[d] = i % shape[d];
        i /= shape[d];
    }
    out
}

/// Checks `|got - want| <= atol + rtol * |want|` everywhere. On failure, names the worst element
/// (by how far past its tolerance it is) with its coordinates in `shape`. On success prints the
/// largest absolute and relative error, for the record (`cargo test -- --nocapture`).
pub fn assert_close(what: &str, got: &[f32], want: &[f64], shape: &[usize], atol: f64, rtol: f64) {
    assert_close_bound(what, got, want, shape, |_| atol, rtol);
}

/// [`assert_close`] with a per-element absolute tolerance `atol(i)`, for kernels whose rounding error
/// scales with intermediate terms rather than with the result (a difference of large terms).
pub fn assert_close_bound(
    what: &str,
    got: &[f32],
    want: &[f64],
    shape: &[usize],
    atol: impl Fn(usize) -> f64,
    rtol: f64,
) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    assert_eq!(shape.iter().product::<usize>(), want.len(), "{what}: shape {shape:?} does not match length");
    let mut worst = (0usize, f64::NEG_INFINITY);
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    let mut failures = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        let allowed = atol(i) + rtol * w.abs();
        let ratio = if err.is_nan() { f64::INFINITY } else { err / allowed };
        if ratio > worst.1 {
            worst = (i, ratio);
        }
        // Written so that NaN counts as a failure.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(err <= allowed) {
            failures += 1;
        }
        max_abs = max_abs.max(err);
        max_rel = max_rel.max(err / w.abs().max(atol(i)).max(f64::MIN_POSITIVE));
    }
    let (i, _) = worst;
    assert!(
        failures == 0,
        "{what}: {failures} of {} elements out of tolerance (atol {:e}, rtol {rtol:e}); worst at {:?} \
         (flat {i}) of shape {shape:?}: got {}, want {}, error {:e}",
        want.len(),
        atol(i),
        coords(i, shape),
        got[i],
        want[i],
        (got[i] as f64 - want[i]).abs()
    );
    println!("max error {what}: abs {max_abs:.3e} rel {max_rel:.3e} over {} elements", want.len());
}

/// Exact equality for integer outputs, naming the first mismatch.
pub fn assert_same_u32(what: &str, got: &[u32], want: &[u32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        panic!("{what}: first mismatch at {i}: got {:#010x}, want {:#010x}", got[i], want[i]);
    }
    println!("max error {what}: exact over {} elements", want.len());
}

pub fn bytes(x: &[f32]) -> &[u8] {
    bytemuck::cast_slice(x)
}

pub fn floats(b: &[u8]) -> Vec<f32> {
    bytemuck::cast_slice(b).to_vec()
}

pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}
