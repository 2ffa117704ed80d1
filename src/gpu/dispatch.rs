//! The one place that turns a workgroup count into dispatch dimensions and checks binding sizes
//! against the adapter's limits.

use crate::error::{Error, Result};

/// Folds `workgroups` into `[x, y, 1]` with `x, y <= limit`, so that `x * y >= workgroups` with as
/// little excess as possible. Kernels compute their flat workgroup index as `id.x + id.y * num.x`
/// and ignore indices past the end.
pub fn fold_workgroups(kernel: &str, workgroups: u64, limit: u32) -> Result<[u32; 3]> {
    let limit64 = limit as u64;
    if workgroups <= limit64 {
        return Ok([workgroups as u32, 1, 1]);
    }
    let y = workgroups.div_ceil(limit64);
    if y > limit64 {
        return Err(Error::DispatchTooLarge { kernel: kernel.to_string(), workgroups, limit });
    }
    let x = workgroups.div_ceil(y);
    Ok([x as u32, y as u32, 1])
}

/// Checks that a buffer of `bytes` fits in one storage binding.
pub fn check_binding(kernel: &str, binding: &str, bytes: u64, limit: u64) -> Result<()> {
    if bytes > limit {
        return Err(Error::BindingTooLarge { kernel: kernel.to_string(), binding: binding.to_string(), bytes, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counts_stay_one_dimensional() {
        assert_eq!(fold_workgroups("k", 7, 65535).unwrap(), [7, 1, 1]);
        assert_eq!(fold_workgroups("k", 65535, 65535).unwrap(), [65535, 1, 1]);
    }

    #[test]
    fn large_counts_fold_into_two_dimensions_covering_every_group() {
        for n in [65536u64, 100_000, 65535 * 3 + 1, 1 << 31] {
            let [x, y, z] = fold_workgroups("k", n, 65535).unwrap();
            assert_eq!(z, 1);
            assert!(x <= 65535 && y <= 65535);
            let covered = x as u64 * y as u64;
            assert!(covered >= n, "{n}: {x}x{y} covers {covered}");
            assert!(covered - n < y as u64, "{n}: {x}x{y} wastes more than one row");
        }
    }

    #[test]
    fn counts_beyond_two_dimensions_are_a_typed_error() {
        let err = fold_workgroups("conv3x3.forward", 65535 * 65535 + 1, 65535).unwrap_err();
        assert!(matches!(err, Error::DispatchTooLarge { .. }));
        assert!(err.to_string().contains("conv3x3.forward"));
    }

    #[test]
    fn oversized_bindings_are_a_typed_error_naming_the_binding() {
        let err = check_binding("gram.forward", "features", 200, 128).unwrap_err();
        assert!(err.to_string().contains("features"), "{err}");
        assert!(check_binding("gram.forward", "features", 128, 128).is_ok());
    }
}
