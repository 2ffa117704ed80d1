//! The kernel library: every shader module and compute pipeline, built once per device, and the
//! [`Step`], one recorded dispatch with its bind group made once and replayed.

use std::collections::HashMap;

use super::context::Gpu;
use super::dispatch::{check_binding, fold_workgroups};
use super::kernel::{Access, EntryPoint, Kernel};
use crate::error::{Error, Result};

struct Compiled {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// One WGSL module for the library to compile.
pub struct ShaderSource {
    /// The name entry points refer to ([`EntryPoint::shader`]).
    pub name: &'static str,
    /// Where it comes from, for messages (`shaders/relu.wgsl`).
    pub label: String,
    pub source: std::borrow::Cow<'static, str>,
}

/// What a kernel library compiles, handed to it by the kernel registry (`nst::shaders::library`):
/// the modules for this adapter and every entry point.
pub struct KernelSources {
    pub modules: Vec<ShaderSource>,
    pub entry_points: &'static [EntryPoint],
    /// Modules that exist only on some adapters (the subgroup kernels): where such a module is
    /// absent, its entry points are left out instead of refused.
    pub optional: Vec<&'static str>,
}

/// Every pipeline of a [`KernelSources`], compiled on one device.
pub struct KernelLibrary {
    pipelines: HashMap<(&'static str, &'static str), Compiled>,
}

fn layout_entries(entry: &EntryPoint) -> Vec<wgpu::BindGroupLayoutEntry> {
    let uniform = wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    std::iter::once(uniform)
        .chain(entry.bindings.iter().map(|b| wgpu::BindGroupLayoutEntry {
            binding: b.slot,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match b.access {
                Access::Texture | Access::TextureWrite => wgpu::BindingType::StorageTexture {
                    access: match b.access {
                        Access::Texture => wgpu::StorageTextureAccess::ReadOnly,
                        _ => wgpu::StorageTextureAccess::WriteOnly,
                    },
                    format: wgpu::TextureFormat::Rgba32Float,
                    view_dimension: wgpu::TextureViewDimension::D2,
                },
                access => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: access == Access::Read },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
            },
            count: None,
        }))
        .collect()
}

impl KernelLibrary {
    /// Compiles every module and entry point of `sources`. A shader the driver rejects is an
    /// [`Error::Shader`] naming the file and entry point.
    pub fn new(gpu: &Gpu, sources: KernelSources) -> Result<KernelLibrary> {
        let mut modules = HashMap::new();
        for ShaderSource { name, label: path, source } in sources.modules {
            let module = gpu
                .scoped(&format!("compiling {path}"), || {
                    // SAFETY: the one check left out is naga's guard of integer division and
                    // modulo (`a / select(b, 1, b == 0)`). Every divisor in nst's shaders is
                    // unsigned: a constant or a shape (channels, widths, tiles), at least 1 for
                    // every map the engine builds (render refuses images below the deepest
                    // layer's smallest side); a zero divisor would give undefined values, not
                    // memory access. On lavapipe the guard cost 25-45% of the Winograd transforms
                    // (`nst bench`, docs/measurements.md). Bounds checks and loop bounding stay on.
                    unsafe {
                        gpu.device.create_shader_module_trusted(
                            wgpu::ShaderModuleDescriptor {
                                label: Some(name),
                                source: wgpu::ShaderSource::Wgsl(source),
                            },
                            wgpu::ShaderRuntimeChecks { int_div_checks: false, ..wgpu::ShaderRuntimeChecks::checked() },
                        )
                    }
                })
                .map_err(|e| Error::Shader { file: path.clone(), message: e.to_string() })?;
            modules.insert(name, module);
        }
        let mut pipelines = HashMap::new();
        for entry in sources.entry_points {
            let name = entry.name();
            let Some(module) = modules.get(entry.shader) else {
                if sources.optional.contains(&entry.shader) {
                    continue; // a subgroup kernel on an adapter without subgroups
                }
                return Err(Error::UnknownKernel {
                    kernel: name.clone(),
                    message: format!("no file shaders/{}.wgsl is registered", entry.shader),
                });
            };
            let compiled = gpu
                .scoped(&format!("building the pipeline {name}"), || {
                    let layout = gpu.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some(&name),
                        entries: &layout_entries(entry),
                    });
                    let pipeline_layout = gpu.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some(&name),
                        bind_group_layouts: &[Some(&layout)],
                        immediate_size: 0,
                    });
                    let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(&name),
                        layout: Some(&pipeline_layout),
                        module,
                        entry_point: Some(entry.entry),
                        compilation_options: Default::default(),
                        cache: None,
                    });
                    Compiled { pipeline, layout }
                })
                .map_err(|e| Error::Shader {
                    file: format!("shaders/{}.wgsl ({})", entry.shader, entry.entry),
                    message: e.to_string(),
                })?;
            pipelines.insert((entry.shader, entry.entry), compiled);
        }
        Ok(KernelLibrary { pipelines })
    }

    fn get(&self, entry: &EntryPoint) -> Result<&Compiled> {
        self.pipelines.get(&(entry.shader, entry.entry)).ok_or_else(|| Error::UnknownKernel {
            kernel: entry.name(),
            message: "not built for this device (it needs subgroups, or is not among the library's entry points)"
                .to_string(),
        })
    }

    /// Whether kernel `K` was built (subgroup kernels exist only where the adapter has subgroups).
    pub fn has<K: Kernel>(&self) -> bool {
        self.pipelines.contains_key(&(K::ENTRY.shader, K::ENTRY.entry))
    }
}

/// What a binding is bound to.
#[derive(Clone, Copy, Debug)]
pub enum Resource<'a> {
    Buffer(&'a wgpu::Buffer),
    /// `size` bytes of a buffer from byte `offset` (a band of a map too large for one binding);
    /// `offset` must be a multiple of the adapter's `min_storage_buffer_offset_alignment`.
    Range {
        buffer: &'a wgpu::Buffer,
        offset: u64,
        size: u64,
    },
    /// An rgba32float texture, bound whole.
    Texture(&'a wgpu::Texture),
}

/// One dispatch of one kernel: pipeline, bind group, params buffer and dispatch size, made once and
/// recorded into as many command encoders as needed.
pub struct Step {
    name: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    params: wgpu::Buffer,
    workgroups: [u32; 3],
}

/// Params buffers are padded to 16 bytes, the uniform address space's alignment.
fn padded_params<P: bytemuck::Pod>(params: &P) -> Vec<u8> {
    let mut bytes = bytemuck::bytes_of(params).to_vec();
    bytes.resize(bytes.len().next_multiple_of(16), 0);
    bytes
}

impl Step {
    /// Binds `buffers` (in the order of `K::ENTRY.bindings`) to kernel `K` with `params`, checking
    /// the count, every buffer's size against the shape and the adapter's limits, and the dispatch.
    pub fn new<K: Kernel>(
        gpu: &Gpu,
        library: &KernelLibrary,
        params: &K::Params,
        buffers: &[&wgpu::Buffer],
    ) -> Result<Step> {
        let resources: Vec<Resource> = buffers.iter().map(|&b| Resource::Buffer(b)).collect();
        Self::bind::<K>(gpu, library, params, &resources)
    }

    /// [`Step::new`] for kernels with texture bindings: `resources` in the order of
    /// `K::ENTRY.bindings`, each a buffer or a texture as the binding asks.
    pub fn bind<K: Kernel>(
        gpu: &Gpu,
        library: &KernelLibrary,
        params: &K::Params,
        resources: &[Resource],
    ) -> Result<Step> {
        let entry = K::ENTRY;
        let name = entry.name();
        let shape_error = |message: String| Error::Shape { kernel: name.clone(), message };
        if resources.len() != entry.bindings.len() {
            let names: Vec<_> = entry.bindings.iter().map(|b| b.name).collect();
            return Err(shape_error(format!(
                "expects {} resources ({}), got {}",
                names.len(),
                names.join(", "),
                resources.len()
            )));
        }
        let lens = K::binding_lens(params);
        let limit = gpu.limits.max_storage_buffer_binding_size;
        let mut views = Vec::new();
        for ((binding, resource), len) in entry.bindings.iter().zip(resources).zip(&lens) {
            let needed = len * 4;
            if needed == 0 {
                return Err(shape_error(format!("binding {} would be empty", binding.name)));
            }
            match (binding.access, resource) {
                (Access::Texture | Access::TextureWrite, Resource::Texture(t)) => {
                    let bytes = 16 * t.width() as u64 * t.height() as u64;
                    if t.format() != wgpu::TextureFormat::Rgba32Float || bytes < needed {
                        return Err(shape_error(format!(
                            "binding {} needs an rgba32float texture of {needed} bytes, got {:?} of {bytes}",
                            binding.name,
                            t.format()
                        )));
                    }
                    views.push(Some(t.create_view(&wgpu::TextureViewDescriptor {
                        label: Some(binding.name),
                        ..Default::default()
                    })));
                }
                (Access::Read | Access::ReadWrite, Resource::Buffer(buffer)) => {
                    check_binding(&name, binding.name, needed, limit)?;
                    if buffer.size() < needed {
                        return Err(shape_error(format!(
                            "binding {} needs {needed} bytes, the buffer has {}",
                            binding.name,
                            buffer.size()
                        )));
                    }
                    check_binding(&name, binding.name, buffer.size(), limit)?;
                    views.push(None);
                }
                (Access::Read | Access::ReadWrite, &Resource::Range { buffer, offset, size }) => {
                    check_binding(&name, binding.name, size, limit)?;
                    let alignment = gpu.limits.min_storage_buffer_offset_alignment as u64;
                    if size < needed || offset + size > buffer.size() || !offset.is_multiple_of(alignment) {
                        return Err(shape_error(format!(
                            "binding {} needs {needed} bytes at an offset aligned to {alignment}, got {size} \
                             bytes at {offset} of a buffer of {}",
                            binding.name,
                            buffer.size()
                        )));
                    }
                    views.push(None);
                }
                _ => return Err(shape_error(format!("binding {} gets the wrong kind of resource", binding.name))),
            }
        }
        let workgroups =
            fold_workgroups(&name, K::workgroups(params), gpu.limits.max_compute_workgroups_per_dimension)?;
        let compiled = library.get(&entry)?;
        let params_buffer = gpu.params_buffer(&format!("{name} params"), &padded_params(params));
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params_buffer.as_entire_binding() }];
        for ((b, resource), view) in entry.bindings.iter().zip(resources).zip(&views) {
            let resource = match (resource, view) {
                (Resource::Buffer(buffer), _) => buffer.as_entire_binding(),
                (&Resource::Range { buffer, offset, size }, _) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset,
                    size: wgpu::BufferSize::new(size),
                }),
                (Resource::Texture(_), Some(view)) => wgpu::BindingResource::TextureView(view),
                (Resource::Texture(_), None) => unreachable!("every texture got a view"),
            };
            entries.push(wgpu::BindGroupEntry { binding: b.slot, resource });
        }
        let bind_group = gpu.scoped(&format!("binding resources to {name}"), || {
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&name),
                layout: &compiled.layout,
                entries: &entries,
            })
        })?;
        Ok(Step { name, pipeline: compiled.pipeline.clone(), bind_group, params: params_buffer, workgroups })
    }

    /// Replaces the params (same kernel, same shape), for values that change between iterations
    /// such as Adam's step count. The write lands before the next submitted command buffer.
    pub fn write_params<P: bytemuck::Pod>(&self, gpu: &Gpu, params: &P) {
        gpu.queue.write_buffer(&self.params, 0, &padded_params(params));
    }

    /// Records the dispatch into a compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// `shader.entry` of the kernel this step runs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The folded dispatch size.
    pub fn workgroups(&self) -> [u32; 3] {
        self.workgroups
    }
}

/// One command of an iteration: a dispatch, or a copy of a buffer into an rgba32float texture.
pub enum Command {
    Dispatch(Step),
    /// Copies `extent` texels (width, height) from `buffer` (rows of `16 * extent[0]` bytes) into
    /// `texture` at `origin` (the fast conv's input: a map inside its zero border).
    CopyToTexture {
        buffer: wgpu::Buffer,
        texture: wgpu::Texture,
        origin: [u32; 2],
        extent: [u32; 2],
    },
    /// Copies the whole of `from` into `to` (same size).
    CopyBuffer {
        from: wgpu::Buffer,
        to: wgpu::Buffer,
    },
}

/// The name of a command that copies a map into its texture ([`Command::name`], [`Planned::name`]).
pub const COPY_TO_TEXTURE: &str = "copy to texture";
/// The name of a command that copies one buffer into another.
pub const COPY_BUFFER: &str = "copy buffer";

impl Command {
    /// What the command runs: the kernel's `shader.entry`, or the kind of copy.
    pub fn name(&self) -> &str {
        match self {
            Command::Dispatch(step) => step.name(),
            Command::CopyToTexture { .. } => COPY_TO_TEXTURE,
            Command::CopyBuffer { .. } => COPY_BUFFER,
        }
    }
}

/// A kernel chosen but not yet bound: its entry point and the function that binds it. What a plan
/// records, device-neutral until [`bind_planned`] turns it into a [`Step`].
#[derive(Clone, Copy)]
pub struct KernelRef {
    pub entry: EntryPoint,
    bind: fn(&Gpu, &KernelLibrary, &[u8], &[Resource]) -> Result<Step>,
}

fn bind_bytes<K: Kernel>(gpu: &Gpu, library: &KernelLibrary, params: &[u8], resources: &[Resource]) -> Result<Step> {
    let params: K::Params = bytemuck::pod_read_unaligned(params);
    Step::bind::<K>(gpu, library, &params, resources)
}

impl KernelRef {
    /// Kernel `K`.
    pub fn of<K: Kernel>() -> KernelRef {
        KernelRef { entry: K::ENTRY, bind: bind_bytes::<K> }
    }
}

impl std::fmt::Debug for KernelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.entry.name())
    }
}

/// One command of an iteration as a plan holds it, its operands named by `R` (buffer and texture
/// indices in a plan, or the resources themselves); [`bind_planned`] makes it a [`Command`].
#[derive(Clone, Debug)]
pub enum Planned<R> {
    /// A dispatch of `kernel` with its params (the Pod bytes of `K::Params`) on `operands`, in the
    /// order of the kernel's bindings.
    Dispatch { kernel: KernelRef, params: Vec<u8>, operands: Vec<R> },
    /// [`Command::CopyToTexture`].
    CopyToTexture { buffer: R, texture: R, origin: [u32; 2], extent: [u32; 2] },
    /// [`Command::CopyBuffer`].
    CopyBuffer { from: R, to: R },
}

impl<R> Planned<R> {
    /// A dispatch of kernel `K` with `params` on `operands`.
    pub fn dispatch<K: Kernel>(params: &K::Params, operands: Vec<R>) -> Planned<R> {
        Planned::Dispatch { kernel: KernelRef::of::<K>(), params: bytemuck::bytes_of(params).to_vec(), operands }
    }

    /// The same command with its operands renamed by `f`.
    pub fn map<S>(self, mut f: impl FnMut(R) -> S) -> Planned<S> {
        match self {
            Planned::Dispatch { kernel, params, operands } => {
                Planned::Dispatch { kernel, params, operands: operands.into_iter().map(f).collect() }
            }
            Planned::CopyToTexture { buffer, texture, origin, extent } => {
                Planned::CopyToTexture { buffer: f(buffer), texture: f(texture), origin, extent }
            }
            Planned::CopyBuffer { from, to } => Planned::CopyBuffer { from: f(from), to: f(to) },
        }
    }

    /// What the command runs: the kernel's `shader.entry`, or the kind of copy.
    pub fn name(&self) -> String {
        match self {
            Planned::Dispatch { kernel, .. } => kernel.entry.name(),
            Planned::CopyToTexture { .. } => COPY_TO_TEXTURE.into(),
            Planned::CopyBuffer { .. } => COPY_BUFFER.into(),
        }
    }
}

/// Binds one planned command to its resources: a [`Step`] for a dispatch (with every check of
/// [`Step::bind`]), or the copy.
pub fn bind_planned(gpu: &Gpu, library: &KernelLibrary, planned: &Planned<Resource>) -> Result<Command> {
    let kind_error = |what: &str| Error::Shape { kernel: planned.name(), message: format!("copies {what}") };
    Ok(match planned {
        Planned::Dispatch { kernel, params, operands } => {
            Command::Dispatch((kernel.bind)(gpu, library, params, operands)?)
        }
        Planned::CopyToTexture { buffer, texture, origin, extent } => match (buffer, texture) {
            (Resource::Buffer(b), Resource::Texture(t)) => {
                Command::CopyToTexture { buffer: (*b).clone(), texture: (*t).clone(), origin: *origin, extent: *extent }
            }
            _ => return Err(kind_error("from a buffer into a texture")),
        },
        Planned::CopyBuffer { from, to } => match (from, to) {
            (Resource::Buffer(from), Resource::Buffer(to)) => {
                Command::CopyBuffer { from: (*from).clone(), to: (*to).clone() }
            }
            _ => return Err(kind_error("from a buffer into a buffer")),
        },
    })
}

/// [`bind_planned`] for each command, in order.
pub fn bind_all(gpu: &Gpu, library: &KernelLibrary, planned: Vec<Planned<Resource>>) -> Result<Vec<Command>> {
    planned.iter().map(|p| bind_planned(gpu, library, p)).collect()
}

/// Records `commands` in order into one command encoder (consecutive dispatches share a compute
/// pass; a copy ends the pass) and submits it.
pub fn submit_commands(gpu: &Gpu, label: &str, commands: &[&Command]) -> Result<()> {
    gpu.scoped(&format!("running {label}"), || {
        let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        let mut i = 0;
        while i < commands.len() {
            match commands[i] {
                Command::CopyToTexture { buffer, texture, origin, extent } => {
                    encoder.copy_buffer_to_texture(
                        wgpu::TexelCopyBufferInfo {
                            buffer,
                            layout: wgpu::TexelCopyBufferLayout {
                                offset: 0,
                                bytes_per_row: Some(16 * extent[0]),
                                rows_per_image: Some(extent[1]),
                            },
                        },
                        wgpu::TexelCopyTextureInfo {
                            texture,
                            mip_level: 0,
                            origin: wgpu::Origin3d { x: origin[0], y: origin[1], z: 0 },
                            aspect: wgpu::TextureAspect::All,
                        },
                        wgpu::Extent3d { width: extent[0], height: extent[1], depth_or_array_layers: 1 },
                    );
                    i += 1;
                }
                Command::CopyBuffer { from, to } => {
                    encoder.copy_buffer_to_buffer(from, 0, to, 0, from.size().min(to.size()));
                    i += 1;
                }
                Command::Dispatch(_) => {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(label),
                        timestamp_writes: None,
                    });
                    while let Some(Command::Dispatch(step)) = commands.get(i) {
                        step.record(&mut pass);
                        i += 1;
                    }
                }
            }
        }
        gpu.queue.submit([encoder.finish()]);
    })
}

/// Records `steps` in order into one compute pass of one command encoder and submits it.
pub fn submit(gpu: &Gpu, label: &str, steps: &[&Step]) -> Result<()> {
    gpu.scoped(&format!("running {label}"), || {
        let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        {
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
            for step in steps {
                step.record(&mut pass);
            }
        }
        gpu.queue.submit([encoder.finish()]);
    })
}

/// Runs kernel `K` once on fresh buffers holding `inputs` (one per binding, in order; read-write
/// bindings start with their given contents) and returns the contents of the read-write bindings
/// afterwards, in order. For tests and `nst check`; a render builds its steps once instead.
pub fn run_once<K: Kernel>(
    gpu: &Gpu,
    library: &KernelLibrary,
    params: &K::Params,
    inputs: &[&[u8]],
) -> Result<Vec<Vec<u8>>> {
    let entry = K::ENTRY;
    let name = entry.name();
    if inputs.len() != entry.bindings.len() {
        return Err(Error::Shape {
            kernel: name,
            message: format!("expects {} inputs, got {}", entry.bindings.len(), inputs.len()),
        });
    }
    let buffers: Vec<wgpu::Buffer> = entry
        .bindings
        .iter()
        .zip(inputs)
        .map(|(b, data)| {
            let label = format!("{name} {}", b.name);
            if data.is_empty() {
                gpu.buffer_zeroed(&label, 4)
            } else {
                gpu.buffer_from(&label, data)
            }
        })
        .collect();
    let refs: Vec<&wgpu::Buffer> = buffers.iter().collect();
    let step = Step::new::<K>(gpu, library, params, &refs)?;
    submit(gpu, &name, &[&step])?;
    let outputs: Vec<&wgpu::Buffer> = entry
        .bindings
        .iter()
        .zip(&buffers)
        .filter(|(b, _)| b.access == Access::ReadWrite)
        .map(|(_, buffer)| buffer)
        .collect();
    gpu.read_buffers(&outputs)
}
