//! Shader checks that need no GPU: every WGSL file parses and validates with naga, and every kernel
//! description on the Rust side agrees with its shader (entry point, workgroup size, bindings and
//! their access, params struct size).

use std::collections::BTreeMap;
use std::path::Path;

use nst::gpu::{Access, EntryPoint};
use nst::shaders;

fn shader_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders")
}

#[test]
fn every_wgsl_file_in_shaders_validates_with_naga() {
    let mut broken = Vec::new();
    let mut count = 0;
    for entry in std::fs::read_dir(shader_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        count += 1;
        let source = std::fs::read_to_string(&path).unwrap();
        let name = format!("shaders/{}", path.file_name().unwrap().to_string_lossy());
        if let Err(message) = shaders::validate(&name, &source) {
            broken.push(format!("{name}:\n{message}"));
        }
    }
    assert!(count > 0, "no .wgsl files found in {}", shader_dir().display());
    assert!(broken.is_empty(), "{} of {count} shader files are broken:\n\n{}", broken.len(), broken.join("\n\n"));
}

#[test]
fn a_broken_shader_is_reported_with_its_file_name_and_nagas_message() {
    let err = shaders::validate("shaders/broken.wgsl", "fn main( { }").unwrap_err();
    assert!(err.contains("shaders/broken.wgsl"), "{err}");
    let err = shaders::validate("shaders/typo.wgsl", "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }")
        .unwrap_err();
    assert!(err.contains("shaders/typo.wgsl"), "{err}");
}

#[test]
fn every_file_in_shaders_is_embedded_and_every_embedded_file_exists() {
    let on_disk: Vec<String> = std::fs::read_dir(shader_dir())
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            (path.extension()? == "wgsl").then(|| path.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    for name in &on_disk {
        assert!(shaders::FILES.iter().any(|f| f.name == name), "shaders/{name}.wgsl is not in shaders::FILES");
    }
    for file in shaders::FILES {
        assert!(on_disk.contains(&file.name.to_string()), "{} is embedded but missing on disk", file.path());
    }
}

/// The bindings an entry point statically uses: slot -> (is uniform, access).
fn used_bindings(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    index: usize,
) -> BTreeMap<u32, (bool, Access, Option<u32>)> {
    let function = info.get_entry_point(index);
    let mut used = BTreeMap::new();
    for (handle, var) in module.global_variables.iter() {
        if function[handle].is_empty() {
            continue;
        }
        let Some(binding) = &var.binding else {
            continue;
        };
        assert_eq!(binding.group, 0, "{:?} is not in group 0", var.name);
        let (uniform, access) = match var.space {
            naga::AddressSpace::Uniform => (true, Access::Read),
            naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => {
                (false, Access::ReadWrite)
            }
            naga::AddressSpace::Storage { .. } => (false, Access::Read),
            naga::AddressSpace::Handle => match &module.types[var.ty].inner {
                naga::TypeInner::Image { class: naga::ImageClass::Storage { access, .. }, .. }
                    if access.contains(naga::StorageAccess::STORE) =>
                {
                    (false, Access::TextureWrite)
                }
                _ => (false, Access::Texture),
            },
            other => panic!("{:?} is in address space {other:?}", var.name),
        };
        let span = match &module.types[var.ty].inner {
            naga::TypeInner::Struct { span, .. } => Some(*span),
            _ => None,
        };
        used.insert(binding.binding, (uniform, access, span));
    }
    used
}

/// The source of a shader by name: a file of `shaders/`, or a generated shader at subgroup size 8.
fn source_of(name: &str) -> Option<(String, String)> {
    if let Some(f) = shaders::FILES.iter().find(|f| f.name == name) {
        return Some((f.path(), f.source.to_string()));
    }
    shaders::GENERATED.iter().find(|g| g.name == name).map(|g| (g.template.to_string(), (g.generate)(8)))
}

fn check_entry(entry: &EntryPoint) -> Result<(), String> {
    let (path, source) = source_of(entry.shader).ok_or_else(|| format!("no shader {}", entry.shader))?;
    let (module, info) = shaders::validate(&path, &source)?;
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == entry.entry)
        .ok_or_else(|| format!("{path} has no entry point {}", entry.entry))?;
    let ep = &module.entry_points[index];
    if ep.stage != naga::ShaderStage::Compute {
        return Err("not a compute entry point".into());
    }
    if ep.workgroup_size != [entry.workgroup_size, 1, 1] {
        return Err(format!("workgroup size {:?} in WGSL, {} in Rust", ep.workgroup_size, entry.workgroup_size));
    }
    let mut used = used_bindings(&module, &info, index);
    let Some((true, _, Some(span))) = used.remove(&0) else {
        return Err("binding 0 is not a params uniform struct".into());
    };
    if span as usize != entry.params_bytes {
        return Err(format!("params struct is {span} bytes in WGSL, {} in Rust", entry.params_bytes));
    }
    let declared: BTreeMap<u32, Access> = entry.bindings.iter().map(|b| (b.slot, b.access)).collect();
    let in_shader: BTreeMap<u32, Access> = used.iter().map(|(&slot, &(_, access, _))| (slot, access)).collect();
    if declared != in_shader {
        return Err(format!("bindings in Rust {declared:?}, used by the shader {in_shader:?}"));
    }
    Ok(())
}

#[test]
fn every_kernel_description_matches_its_shader_bindings_workgroup_and_params() {
    let failures: Vec<String> = nst::ops::ENTRY_POINTS
        .iter()
        .filter_map(|e| check_entry(e).err().map(|m| format!("{}: {m}", e.name())))
        .collect();
    assert!(failures.is_empty(), "kernel descriptions disagree with shaders:\n{}", failures.join("\n"));
}

#[test]
fn every_entry_point_of_every_shader_has_a_kernel_description() {
    for file in shaders::FILES {
        let (module, _) = shaders::validate(&file.path(), file.source).unwrap();
        for ep in &module.entry_points {
            assert!(
                nst::ops::ENTRY_POINTS.iter().any(|e| e.shader == file.name && e.entry == ep.name),
                "{}: entry point {} is not in ops::ENTRY_POINTS",
                file.path(),
                ep.name
            );
        }
    }
}

#[test]
fn every_generated_shader_validates_at_every_subgroup_size() {
    let broken = shaders::validate_all();
    assert!(
        broken.is_empty(),
        "{} broken sources:\n\n{}",
        broken.len(),
        broken.iter().map(|(n, m)| format!("{n}:\n{m}")).collect::<Vec<_>>().join("\n\n")
    );
}

#[test]
fn every_template_in_shaders_is_used_by_a_generated_shader() {
    for entry in std::fs::read_dir(shader_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".wgsl.tmpl") {
            let relative = format!("shaders/{name}");
            assert!(shaders::GENERATED.iter().any(|g| g.template == relative), "{relative} is not used");
        }
    }
}
