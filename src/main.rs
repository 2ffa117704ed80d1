//! The `nst` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nst::gpu::{Gpu, GpuOptions, KernelLibrary};

#[derive(Parser)]
#[command(
    name = "nst",
    version,
    about = "Neural style transfer on any Vulkan, Metal or DX12 GPU"
)]
struct Cli {
    /// Use the adapter whose name contains NAME (case-insensitive). Default: NST_ADAPTER, else the
    /// best adapter found (a discrete GPU before an integrated one before a software one).
    #[arg(long, global = true, value_name = "NAME")]
    adapter: Option<String>,
    /// Restrict the search to one backend: vulkan, metal, dx12 or gl. Default: NST_BACKEND, else all.
    #[arg(long, global = true, value_name = "BACKEND")]
    backend: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the adapters found, then open the chosen one, compile every kernel and print its limits.
    Info,
}

fn options(cli: &Cli) -> GpuOptions {
    let env = GpuOptions::from_env();
    GpuOptions {
        adapter: cli.adapter.clone().or(env.adapter),
        backend: cli.backend.clone().or(env.backend),
    }
}

fn info(options: &GpuOptions) -> nst::Result<()> {
    let adapters = Gpu::adapters(options)?;
    println!("adapters found ({}):", adapters.len());
    for a in &adapters {
        println!(
            "  {} ({:?}, {:?}, driver {})",
            a.name, a.device_type, a.backend, a.driver_info
        );
    }
    let gpu = Gpu::new(options)?;
    let start = std::time::Instant::now();
    KernelLibrary::new(&gpu)?;
    println!("chosen: {}", gpu.describe());
    println!(
        "  kernels: {} compiled in {:.2} s",
        nst::ops::ENTRY_POINTS.len(),
        start.elapsed().as_secs_f64()
    );
    let l = &gpu.limits;
    println!(
        "  storage binding limit: {} MiB",
        l.max_storage_buffer_binding_size >> 20
    );
    println!("  buffer size limit: {} MiB", l.max_buffer_size >> 20);
    println!(
        "  workgroups per dimension: {}",
        l.max_compute_workgroups_per_dimension
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = options(&cli);
    let result = match cli.command {
        Command::Info => info(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nst: {e}");
            ExitCode::FAILURE
        }
    }
}
