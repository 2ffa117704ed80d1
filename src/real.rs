//! The number type of the CPU twins. Every twin is generic over [`Real`], so the same plain loops run
//! in `f32` (what the GPU computes) and in `f64` (the oracle for GPU tests and finite differences).

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// A floating-point scalar: `f32` or `f64`.
pub trait Real:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
{
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn abs(self) -> Self;
    fn sqrt(self) -> Self;
    fn floor(self) -> Self;

    fn zero() -> Self {
        Self::from_f64(0.0)
    }

    /// -1, 0 or 1; 0 at 0 (unlike `f32::signum`, which gives 1 at +0).
    fn sign(self) -> Self {
        let zero = Self::zero();
        if self > zero {
            Self::from_f64(1.0)
        } else if self < zero {
            Self::from_f64(-1.0)
        } else {
            zero
        }
    }

    fn max(self, other: Self) -> Self {
        if other > self {
            other
        } else {
            self
        }
    }
}

impl Real for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn abs(self) -> Self {
        f32::abs(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn floor(self) -> Self {
        f32::floor(self)
    }
}

impl Real for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn abs(self) -> Self {
        f64::abs(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn floor(self) -> Self {
        f64::floor(self)
    }
}

/// Converts a slice to another [`Real`] type (f32 inputs to the f64 oracle, say).
pub fn convert<A: Real, B: Real>(xs: &[A]) -> Vec<B> {
    xs.iter().map(|x| B::from_f64(x.to_f64())).collect()
}
