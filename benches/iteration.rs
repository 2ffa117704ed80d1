//! `cargo bench --bench iteration`: seconds per iteration (forward through relu5_1, the losses,
//! backward to the image, Adam) at 128, 256 and 512 px, with the direct conv and with the default
//! choice, the GPU memory, and where the time goes.

use nst::gpu::{Gpu, GpuOptions};
use nst::net::plan::ConvChoice;
use nst::net::Vgg19Weights;

fn main() {
    let gpu = Gpu::new(&GpuOptions::from_env()).unwrap_or_else(|e| panic!("benchmarks need an adapter: {e}"));
    let library = nst::shaders::library(&gpu).expect("the kernel library compiles");
    let weights = Vgg19Weights::embedded().expect("the embedded weights load");
    println!("adapter: {}", gpu.describe());
    let results = nst::bench::iteration_benchmarks(
        &gpu,
        &library,
        &weights,
        &[128, 256, 512],
        &[ConvChoice::Direct, ConvChoice::Auto],
        3,
    )
    .expect("benchmarks run");
    println!("{}", nst::bench::iteration_table(&results));
}
