//! The GPU context: adapter choice, a device with the adapter's own limits, error scopes, buffers and
//! readback.

use crate::error::{Error, Result};

/// Which adapter to use. Both fields match case-insensitively.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// A substring of the adapter's name (`NST_ADAPTER`, `--adapter`).
    pub adapter: Option<String>,
    /// `vulkan`, `metal`, `dx12` or `gl` (`NST_BACKEND`, `--backend`).
    pub backend: Option<String>,
}

impl GpuOptions {
    /// Options from the environment: `NST_ADAPTER` and `NST_BACKEND`.
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|s: &String| !s.is_empty());
        GpuOptions { adapter: var("NST_ADAPTER"), backend: var("NST_BACKEND") }
    }

    /// The backends to search, in order: without a choice, Vulkan, Metal and DX12 first, and GL
    /// only when none of them has an adapter (probing GL also probes the window system, which
    /// prints warnings on headless machines).
    fn backends(&self) -> Result<Vec<wgpu::Backends>> {
        let one = |b| Ok(vec![b]);
        match self.backend.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => Ok(vec![wgpu::Backends::PRIMARY, wgpu::Backends::SECONDARY]),
            Some("vulkan") => one(wgpu::Backends::VULKAN),
            Some("metal") => one(wgpu::Backends::METAL),
            Some("dx12") => one(wgpu::Backends::DX12),
            Some("gl") => one(wgpu::Backends::GL),
            Some(other) => Err(Error::UnknownBackend(other.to_string())),
        }
    }
}

/// A device and queue on the chosen adapter.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// The adapter's smallest subgroup size, when the device has subgroup operations (and
    /// `NST_NO_SUBGROUPS` is not set); the fast kernels need them.
    pub subgroup_size: Option<u32>,
    /// The adapter's memory in bytes where it is known: for a GPU on Vulkan its largest
    /// device-local heap; for a software adapter the memory the machine has available when the
    /// device opens, less 1 GiB for the process itself (Linux); else None.
    pub memory: Option<u64>,
}

/// Lower is better: real GPUs first, then software, native APIs before GL.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (device, backend)
}

/// The adapters of the first backend group in `options` that has any.
fn enumerate(options: &GpuOptions) -> Result<Vec<wgpu::Adapter>> {
    for backends in options.backends()? {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        if !adapters.is_empty() {
            return Ok(adapters);
        }
    }
    Ok(Vec::new())
}

/// The hint printed when no adapter exists at all.
pub fn no_adapter_hint() -> String {
    if cfg!(target_os = "linux") {
        "install mesa-vulkan-drivers for a software Vulkan adapter (apt-get install mesa-vulkan-drivers), \
         or a GPU driver with Vulkan support"
            .to_string()
    } else {
        "install a GPU driver with Vulkan, Metal or DX12 support".to_string()
    }
}

impl Gpu {
    /// Every adapter wgpu finds for the options' backends, best first.
    pub fn adapters(options: &GpuOptions) -> Result<Vec<wgpu::AdapterInfo>> {
        let mut infos: Vec<_> = enumerate(options)?.iter().map(|a| a.get_info()).collect();
        infos.sort_by_key(rank);
        Ok(infos)
    }

    /// Opens the best adapter that matches `options`, with the adapter's own limits.
    pub fn new(options: &GpuOptions) -> Result<Gpu> {
        let mut adapters = enumerate(options)?;
        let found: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
        if let Some(wanted) = &options.adapter {
            let wanted = wanted.to_lowercase();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&wanted));
        }
        adapters.sort_by_key(|a| rank(&a.get_info()));
        let Some(adapter) = adapters.into_iter().next() else {
            let mut wanted = String::new();
            if let Some(name) = &options.adapter {
                wanted += &format!(" matching {name:?}");
            }
            if let Some(backend) = &options.backend {
                wanted += &format!(" on backend {backend}");
            }
            let hint =
                if found.is_empty() { no_adapter_hint() } else { format!("adapters found: {}", found.join("; ")) };
            return Err(Error::NoAdapter { wanted, hint });
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let no_subgroups = std::env::var("NST_NO_SUBGROUPS").is_ok_and(|v| !v.is_empty() && v != "0");
        let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP) && !no_subgroups;
        let required_features = if subgroups { wgpu::Features::SUBGROUP } else { wgpu::Features::empty() };
        let desc = wgpu::DeviceDescriptor {
            label: Some("nst device"),
            required_features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::RequestDevice { adapter: info.name.clone(), message: e.to_string() })?;
        let subgroup_size = subgroups.then_some(info.subgroup_min_size);
        // A software adapter's memory is the machine's (lavapipe reports a heap of 2 GiB but
        // allocates past it: a 1024x681 render with 2165 MiB ran).
        let memory = match info.device_type {
            // Less 1 GiB for the process itself (weights, compiled kernels, images, readbacks:
            // 0.45 GB measured beyond the plan at 1024x681).
            wgpu::DeviceType::Cpu => available_memory().map(|m| m.saturating_sub(1 << 30)),
            _ => device_memory(&adapter),
        };
        Ok(Gpu { device, queue, info, limits, subgroup_size, memory })
    }

    /// One line naming the adapter: name, type and backend, and the subgroup size the fast
    /// kernels use.
    pub fn describe(&self) -> String {
        match self.subgroup_size {
            Some(s) => format!("{}, subgroups of {s}+", describe(&self.info)),
            None => format!("{}, no subgroups", describe(&self.info)),
        }
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns a captured error into
    /// [`Error::Gpu`] naming `during`.
    pub fn scoped<T>(&self, during: &str, f: impl FnOnce() -> T) -> Result<T> {
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let value = f();
        let memory = pollster::block_on(memory.pop());
        let validation = pollster::block_on(validation.pop());
        match memory.or(validation) {
            None => Ok(value),
            Some(e) => Err(Error::Gpu { during: during.to_string(), message: e.to_string() }),
        }
    }

    /// A storage buffer holding `contents`, usable as a kernel binding and for copies both ways.
    pub fn buffer_from(&self, label: &str, contents: &[u8]) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: storage_usage(),
        })
    }

    /// A uniform buffer holding a kernel's params, rewritable between submissions.
    pub fn params_buffer(&self, label: &str, contents: &[u8]) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// A zero-filled storage buffer of `bytes` bytes.
    pub fn buffer_zeroed(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: storage_usage(),
            mapped_at_creation: false,
        })
    }

    /// Blocks until the queue is idle.
    pub fn wait(&self, during: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Device { during: during.to_string(), message: e.to_string() })
    }

    /// Copies `buffers` back to the host in one submission, in order.
    pub fn read_buffers(&self, buffers: &[&wgpu::Buffer]) -> Result<Vec<Vec<u8>>> {
        let mut encoder =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("nst readback") });
        let staging: Vec<wgpu::Buffer> = buffers
            .iter()
            .map(|b| {
                let s = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("nst readback staging"),
                    size: b.size(),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                encoder.copy_buffer_to_buffer(b, 0, &s, 0, b.size());
                s
            })
            .collect();
        self.queue.submit([encoder.finish()]);
        let (sender, receiver) = std::sync::mpsc::channel();
        for (i, s) in staging.iter().enumerate() {
            let sender = sender.clone();
            s.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = sender.send((i, r));
            });
        }
        drop(sender);
        self.wait("reading buffers back")?;
        for (i, r) in receiver.iter() {
            r.map_err(|e| Error::Device { during: format!("mapping readback buffer {i}"), message: e.to_string() })?;
        }
        staging
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let bytes = s
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| Error::Device {
                        during: format!("reading mapped buffer {i}"),
                        message: e.to_string(),
                    })?
                    .to_vec();
                s.unmap();
                Ok(bytes)
            })
            .collect()
    }
}

fn storage_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend)
}

/// The largest device-local memory heap of a Vulkan adapter, from the driver (wgpu has no
/// portable query); None on other backends.
fn device_memory(adapter: &wgpu::Adapter) -> Option<u64> {
    // SAFETY: the hal adapter is only read, while `adapter` lives.
    let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
    let instance = hal.shared_instance().raw_instance();
    // SAFETY: the physical device belongs to this instance.
    let properties = unsafe { instance.get_physical_device_memory_properties(hal.raw_physical_device()) };
    properties
        .memory_heaps_as_slice()
        .iter()
        .filter(|h| h.flags.contains(ash::vk::MemoryHeapFlags::DEVICE_LOCAL))
        .map(|h| h.size)
        .max()
}

/// The memory the machine can give a process now (`MemAvailable` of /proc/meminfo), where the
/// system says.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
