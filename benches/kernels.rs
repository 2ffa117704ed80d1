//! `cargo bench --bench kernels`: every kernel family at VGG19's shapes for 256 and 512 px images,
//! on the adapter nst would choose (`NST_ADAPTER` picks another). The same measurements as
//! `nst bench`; see src/bench.rs.

use nst::gpu::{Gpu, GpuOptions};

fn main() {
    let gpu = Gpu::new(&GpuOptions::from_env()).unwrap_or_else(|e| panic!("benchmarks need an adapter: {e}"));
    let library = nst::shaders::library(&gpu).expect("the kernel library compiles");
    println!("adapter: {}", gpu.describe());
    let results = nst::bench::kernel_benchmarks(&gpu, &library, &[256, 512], 3).expect("benchmarks run");
    println!("{}", nst::bench::kernel_table(&results));
}
