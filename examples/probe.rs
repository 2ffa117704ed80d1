use nst::gpu::*;
use nst::ops::conv3x3::Conv3x3Params;
fn main() {
    let gpu = Gpu::new(&GpuOptions::from_env()).unwrap();
    println!("{}", gpu.describe());
    let sg = gpu.subgroup_size.unwrap() as usize;
    let variant = std::env::var("V").unwrap_or_default();
    for co_tile in [4usize, 8, 16, 32, 64] {
        let src = if variant.is_empty() {
            nst::ops::conv3x3_subgroup::instantiate(
                sg,
                co_tile,
                if std::env::var("TEX").is_ok() {
                    nst::ops::conv3x3_subgroup::Operands::Texture
                } else {
                    nst::ops::conv3x3_subgroup::Operands::Storage
                },
            )
        } else {
            std::fs::read_to_string(&variant).unwrap().replace("{{CO}}", &co_tile.to_string())
        };
        let desc = wgpu::ShaderModuleDescriptor { label: None, source: wgpu::ShaderSource::Wgsl(src.into()) };
        let module = if std::env::var("UNCHECKED").is_ok() {
            let mut checks = wgpu::ShaderRuntimeChecks::checked();
            checks.bounds_checks = false;
            unsafe { gpu.device.create_shader_module_trusted(desc, checks) }
        } else {
            gpu.device.create_shader_module(desc)
        };
        let pipe = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some("forward"),
            compilation_options: Default::default(),
            cache: None,
        });
        let (side, c) = (64usize, 256usize);
        let p = Conv3x3Params::new(side, side, c, c).with_relu(true);
        let w = gpu.buffer_zeroed("w", 4 * p.weights_len() as u64);
        let b = gpu.buffer_zeroed("b", 4 * p.bias_len() as u64);
        let x = gpu.buffer_zeroed("x", 4 * p.input_len() as u64);
        let y = gpu.buffer_zeroed("y", 4 * p.output_len() as u64);
        let tex = std::env::var("TEX").is_ok();
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: None,
            size: wgpu::Extent3d { width: (side * c / 4) as u32, height: side as u32, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = texture.create_view(&Default::default());
        let tex2 = tex;
        let wtex = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: None,
            size: wgpu::Extent3d { width: (9 * c / 4) as u32, height: c as u32, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let wview = wtex.create_view(&Default::default());
        let mut bytes = bytemuck::bytes_of(&p).to_vec();
        bytes.resize(32, 0);
        let pb = gpu.params_buffer("p", &bytes);
        let bg = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: pb.as_entire_binding() },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: if tex2 { wgpu::BindingResource::TextureView(&wview) } else { w.as_entire_binding() },
                },
                wgpu::BindGroupEntry { binding: 2, resource: b.as_entire_binding() },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: if tex { wgpu::BindingResource::TextureView(&view) } else { x.as_entire_binding() },
                },
                wgpu::BindGroupEntry { binding: 4, resource: y.as_entire_binding() },
            ],
        });
        let ppg: usize = std::env::var("PPG").map(|v| v.parse().unwrap()).unwrap_or(256);
        let groups = (side * side).div_ceil(ppg) * (c / co_tile);
        let run = || {
            let mut e = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = e.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipe);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(groups as u32, 1, 1);
            }
            gpu.queue.submit([e.finish()]);
        };
        run();
        gpu.wait("w").unwrap();
        let t = std::time::Instant::now();
        for _ in 0..3 {
            run();
        }
        gpu.wait("w").unwrap();
        let s = t.elapsed().as_secs_f64() / 3.0;
        println!("co_tile {co_tile}: {:.1} ms, {:.1} GFLOP/s", s * 1e3, p.flops() as f64 / s / 1e9);
    }
}
