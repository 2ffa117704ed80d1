//! The `nst` command line.

use std::process::ExitCode;

mod cli;

use clap::{Parser, Subcommand};
use nst::gpu::{Gpu, GpuOptions};
use nst::net::{Tape, Vgg19Weights};

#[derive(Parser)]
#[command(name = "nst", version, about = "Neural style transfer on any Vulkan, Metal or DX12 GPU")]
struct Cli {
    /// Use the adapter whose name contains NAME (case-insensitive). Default: NST_ADAPTER, else the
    /// best adapter found (a discrete GPU before an integrated one before a software one).
    #[arg(long, global = true, value_name = "NAME", help_heading = "Device")]
    adapter: Option<String>,
    /// Restrict the search to one backend: vulkan, metal, dx12 or gl. Default: NST_BACKEND, else all.
    #[arg(long, global = true, value_name = "BACKEND", help_heading = "Device")]
    backend: Option<String>,
    /// A VGG19 weight file (nst's safetensors format, quantised or full precision) instead of the
    /// weights built into the binary.
    #[arg(long, global = true, value_name = "PATH", help_heading = "Device")]
    weights: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render CONTENT in the style of STYLE (or a blend of several) into OUTPUT: Adam or L-BFGS on
    /// VGG19's content and style losses, on the GPU. Exit codes: 0 done, 1 error, 2 bad arguments,
    /// 3 the loss stopped being finite (the last good image is written), 130 interrupted (the
    /// current image is written).
    Render(Box<cli::render::RenderArgs>),
    /// Time every kernel family at VGG19's shapes and whole iterations on the chosen adapter.
    Bench {
        /// Image sides whose VGG19 layer shapes the kernels run at.
        #[arg(long, value_delimiter = ',', default_value = "256,512")]
        kernel_sides: Vec<usize>,
        /// Image sides of the whole-iteration benchmark (square images, default layers).
        #[arg(long, value_delimiter = ',', default_value = "128,256,512")]
        sides: Vec<usize>,
        /// Timed runs per measurement (the median is reported), after one warm-up run.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// The 3x3 conv choices the whole iterations run with, each in turn (auto, direct,
        /// winograd; see `nst render --conv`).
        #[arg(long, value_delimiter = ',', default_value = "auto")]
        conv: Vec<nst::net::plan::ConvChoice>,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Run every kernel on the chosen adapter against its CPU twin at small sizes and print the
    /// largest error per kernel; exits with 1 if any kernel is out of tolerance.
    Check,
    /// List the adapters found, open the chosen one, compile every kernel, check the weights, and
    /// print the adapter's limits and the GPU memory a render of SIZE needs.
    Info {
        /// Image size for the memory estimate: the side of a square (512) or WIDTHxHEIGHT (640x480).
        #[arg(long, default_value = "512")]
        size: String,
    },
}

fn options(cli: &Cli) -> GpuOptions {
    let env = GpuOptions::from_env();
    GpuOptions { adapter: cli.adapter.clone().or(env.adapter), backend: cli.backend.clone().or(env.backend) }
}

fn info(options: &GpuOptions, weights: Option<&std::path::Path>, size: &str) -> nst::Result<()> {
    // A long edge alone is a square: there is no content image to give the other side.
    let (width, height) = match size.parse::<nst::render::Size>() {
        Ok(size) => size.of(1, 1),
        Err(message) => {
            eprintln!("nst: {message}");
            std::process::exit(2);
        }
    };
    let adapters = Gpu::adapters(options)?;
    println!("adapters found ({}):", adapters.len());
    for a in &adapters {
        println!("  {} ({:?}, {:?}, driver {})", a.name, a.device_type, a.backend, a.driver_info);
    }
    let gpu = Gpu::new(options)?;
    let start = std::time::Instant::now();
    let library = nst::shaders::library(&gpu)?;
    println!("chosen: {}", gpu.describe());
    println!("  kernels: {} compiled in {:.2} s", nst::ops::ENTRY_POINTS.len(), start.elapsed().as_secs_f64());
    let l = &gpu.limits;
    println!("  storage binding limit: {} MiB", l.max_storage_buffer_binding_size >> 20);
    println!("  buffer size limit: {} MiB", l.max_buffer_size >> 20);
    println!("  storage offset alignment: {} bytes", l.min_storage_buffer_offset_alignment);
    println!("  workgroups per dimension: {}", l.max_compute_workgroups_per_dimension);
    let (_, origin) = Vgg19Weights::load(weights)?;
    println!("weights: {origin}");
    let spec = nst::render::RenderOptions::default().loss_spec(width, height);
    let plan = nst::net::Plan::new(&Tape::build(&spec)?, &nst::net::Capabilities::of(&gpu, &library));
    let m = plan.memory();
    // The network's plan, and Adam (the default optimiser) on the image.
    let total = m.total() + nst::optim::Adam::bytes(4 * width * height);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "memory for {width}x{height} with the default layers: {:.0} MiB (largest buffer {:.0} MiB)",
        mib(total),
        mib(m.largest_buffer)
    );
    match gpu.memory {
        Some(bytes) => println!("  this adapter has {:.0} MiB", mib(bytes)),
        None => println!("  this adapter does not say how much memory it has"),
    }
    if let Err(e) = plan.check_fits_with(nst::optim::Adam::bytes(4 * width * height)) {
        println!("  does not fit: {e}");
    } else if plan.banded_ops() > 0 {
        println!(
            "  {} ops run in bands of rows: their maps are larger than the {:.0} MiB one binding holds",
            plan.banded_ops(),
            mib(l.max_storage_buffer_binding_size)
        );
    }
    let options = nst::render::RenderOptions::default();
    let largest = |shape| nst::render::largest_fitting_size(&gpu, &library, &options, shape);
    match largest((width, height)) {
        Some((w, h)) if w == h => println!("largest square that fits this adapter: {w}x{h}"),
        Some((w, h)) => println!("largest of this aspect ratio that fits this adapter: {w}x{h}"),
        None => println!("no size of this aspect ratio fits this adapter"),
    }
    Ok(())
}

fn check(options: &GpuOptions) -> nst::Result<()> {
    let gpu = Gpu::new(options)?;
    let library = nst::shaders::library(&gpu)?;
    println!("adapter: {}", gpu.describe());
    println!("every kernel against its CPU twin (f64 from the same f32 inputs):");
    let start = std::time::Instant::now();
    let results = nst::check::run(&gpu, &library)?;
    let width = results.iter().map(|r| r.kernel.len()).max().unwrap_or(0);
    let shape_width = results.iter().map(|r| r.shape.len()).max().unwrap_or(0);
    println!("  {:width$}  {:shape_width$}  {:>10}  {:>10}  result", "kernel", "shape", "max error", "max value");
    for r in &results {
        println!(
            "  {:width$}  {:shape_width$}  {:>10.2e}  {:>10.2e}  {}",
            r.kernel,
            r.shape,
            r.max_error,
            r.max_value,
            if r.passed { "pass" } else { "FAIL" }
        );
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    println!("{} checks, {failed} failed, in {:.1} s", results.len(), start.elapsed().as_secs_f64());
    if failed > 0 {
        eprintln!(
            "nst: {failed} kernels disagree with the CPU reference on this adapter; try another adapter \
             (--adapter) or driver, and report the table above"
        );
        std::process::exit(1);
    }
    Ok(())
}

fn bench(
    options: &GpuOptions,
    weights: Option<&std::path::Path>,
    kernel_sides: &[usize],
    sides: &[usize],
    reps: usize,
    conv: &[nst::net::plan::ConvChoice],
    json: bool,
) -> nst::Result<()> {
    let gpu = Gpu::new(options)?;
    let library = nst::shaders::library(&gpu)?;
    let (weights, _) = Vgg19Weights::load(weights)?;
    if !json {
        println!("adapter: {}", gpu.describe());
        println!("kernels at VGG19 shapes ({reps} runs each, median, after a warm-up run):");
    }
    let kernels = nst::bench::kernel_benchmarks(&gpu, &library, kernel_sides, reps)?;
    if !json {
        println!("{}", nst::bench::kernel_table(&kernels));
        println!("whole iterations (forward, losses, backward, Adam) with the default layers:");
    }
    let iterations = nst::bench::iteration_benchmarks(&gpu, &library, &weights, sides, conv, reps)?;
    if json {
        println!("{}", nst::bench::to_json(&gpu.describe(), &kernels, &iterations));
    } else {
        println!("{}", nst::bench::iteration_table(&iterations));
    }
    Ok(())
}

/// Parses the command line; a usage error becomes one line that says what to do (help and
/// version print as usual).
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("nst: {message}; see `nst --help` or `nst render --help`");
            std::process::exit(2);
        }
    }
}

fn main() -> ExitCode {
    let cli = parse();
    let options = options(&cli);
    if let Command::Render(args) = &cli.command {
        return match cli::render::run(args, &options, cli.weights.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(cli::render::Failure::Error(e)) => {
                eprintln!("nst: {}", cli::message(&e));
                ExitCode::FAILURE
            }
            Err(cli::render::Failure::Diverged(message)) => {
                eprintln!("nst: {message}");
                ExitCode::from(3)
            }
            Err(cli::render::Failure::Interrupted(message)) => {
                eprintln!("nst: {message}");
                ExitCode::from(130)
            }
        };
    }
    let result = match cli.command {
        Command::Render(_) => unreachable!("handled above"),
        Command::Check => check(&options),
        Command::Info { size } => info(&options, cli.weights.as_deref(), &size),
        Command::Bench { kernel_sides, sides, reps, conv, json } => {
            bench(&options, cli.weights.as_deref(), &kernel_sides, &sides, reps.max(1), &conv, json)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nst: {}", cli::message(&e));
            ExitCode::FAILURE
        }
    }
}
