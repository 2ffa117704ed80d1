//! The kernels. Each module pairs one file of `shaders/` with its params struct (mirrored field by
//! field in WGSL), its shape arithmetic, its [`Kernel`] descriptions and its CPU
//! twin: plain loops over the same params and arguments, generic over [`Real`], the
//! oracle of the tests. Forward and backward live side by side.

pub mod adam;
pub mod avgpool2;
pub mod conv3x3;
pub mod conv3x3_subgroup;
pub mod gram;
pub mod gram_subgroup;
pub mod image;
pub mod maxpool2;
pub mod reduce;
pub mod relu;
pub mod sqdiff;
pub mod transpose;
pub mod tv;
pub mod vector;
pub mod winograd;

use crate::gpu::EntryPoint;
use crate::gpu::Kernel;
use crate::Real;

/// Every entry point of every shader; the kernel library compiles exactly these.
pub const ENTRY_POINTS: &[EntryPoint] = &[
    conv3x3::Forward::ENTRY,
    conv3x3::BackwardInput::ENTRY,
    conv3x3_subgroup::Forward16::ENTRY,
    conv3x3_subgroup::Forward4::ENTRY,
    conv3x3_subgroup::Forward16Tex::ENTRY,
    conv3x3_subgroup::Forward4Tex::ENTRY,
    conv3x3_subgroup::Pointwise32::ENTRY,
    conv3x3_subgroup::Pointwise32Tex::ENTRY,
    relu::Forward::ENTRY,
    relu::Backward::ENTRY,
    relu::Backward4::ENTRY,
    relu::Mask::ENTRY,
    relu::Mask4::ENTRY,
    maxpool2::Forward::ENTRY,
    maxpool2::Backward::ENTRY,
    maxpool2::Forward4::ENTRY,
    maxpool2::Backward4::ENTRY,
    avgpool2::Forward::ENTRY,
    avgpool2::Backward::ENTRY,
    gram::Forward::ENTRY,
    gram::ForwardBlocked::ENTRY,
    gram::Backward::ENTRY,
    gram::Symmetrize::ENTRY,
    gram::SymmetrizeTiled::ENTRY,
    gram::Scale::ENTRY,
    gram_subgroup::Partials::ENTRY,
    gram_subgroup::Sum::ENTRY,
    transpose::Forward::ENTRY,
    sqdiff::Forward::ENTRY,
    sqdiff::Backward::ENTRY,
    reduce::Sum::ENTRY,
    tv::Forward::ENTRY,
    tv::Backward::ENTRY,
    adam::Step::ENTRY,
    vector::DotPartials::ENTRY,
    vector::Axpby::ENTRY,
    vector::Scale::ENTRY,
    vector::StepClamped::ENTRY,
    image::ToNetwork::ENTRY,
    image::FromNetwork::ENTRY,
    winograd::InputF2::ENTRY,
    winograd::InputF2Map::ENTRY,
    winograd::OutputF2::ENTRY,
    winograd::OutputF2Masked::ENTRY,
    winograd::InputF4::ENTRY,
    winograd::InputF4Map::ENTRY,
    winograd::OutputF4::ENTRY,
    winograd::OutputF4Masked::ENTRY,
    winograd::GemmSubgroup::ENTRY,
    winograd::Gemm::ENTRY,
    winograd::GemmSubgroupTex::ENTRY,
    winograd::GemmSubgroupNarrow::ENTRY,
    winograd::GemmSubgroupTexNarrow::ENTRY,
    winograd::GemmTex::ENTRY,
];

/// Elements per workgroup of the two-stage reductions (sqdiff, tv, vector.dot_partials):
/// [`REDUCE_WORKGROUP`] invocations x 32 elements.
pub const REDUCE_BLOCK: usize = 1024;

/// Invocations per workgroup of the first reduction stage. On lavapipe every `workgroupBarrier` of
/// the tree switches between the workgroup's SIMD groups: with 32 invocations (4 groups of 8, 5
/// levels) `sqdiff.forward` took 35 ms at 512x512x64 against 120 ms with 256 (32 groups, 8 levels)
/// and 48 with 64; 8 invocations took 28 ms, but leave most of a real GPU's 32- or 64-wide
/// subgroup idle.
pub const REDUCE_WORKGROUP: u32 = 32;

/// Number of partial sums the first reduction stage writes for `len` elements.
pub fn partial_count(len: usize) -> usize {
    len.div_ceil(REDUCE_BLOCK)
}

/// Whether ReLU's gradient passes where its forward output is `output`: where it is positive (not
/// at the kink 0, not at NaN), as the shaders' `select(0, g, output > 0)`.
pub(crate) fn relu_passes<T: Real>(output: T) -> bool {
    output > T::zero()
}

/// Writes `value` (`accumulate == 0`) or adds it (`accumulate != 0`), as the backward kernels do.
pub(crate) fn store<T: Real>(dst: &mut T, value: T, accumulate: u32) {
    if accumulate != 0 {
        *dst += value;
    } else {
        *dst = value;
    }
}
