//! The kernel registry: the WGSL files of `shaders/`, embedded into the binary, the shaders
//! generated per adapter, the kernel library they make with [`crate::ops::ENTRY_POINTS`], and
//! their validation with naga (no GPU). The `gpu` layer knows none of this: [`library`] hands it
//! the sources.

use crate::gpu::{Gpu, KernelLibrary, KernelSources, ShaderSource};
use crate::ops::conv3x3_subgroup::{self, Operands};
use crate::ops::winograd;

/// One file of `shaders/`.
#[derive(Clone, Copy, Debug)]
pub struct ShaderFile {
    /// File stem: `conv3x3` for `shaders/conv3x3.wgsl`.
    pub name: &'static str,
    /// The WGSL source.
    pub source: &'static str,
}

impl ShaderFile {
    /// `shaders/NAME.wgsl`.
    pub fn path(&self) -> String {
        format!("shaders/{}.wgsl", self.name)
    }
}

macro_rules! shader_files {
    ($($name:literal),* $(,)?) => {
        /// Every shader the engine uses.
        pub const FILES: &[ShaderFile] = &[
            $(ShaderFile { name: $name, source: include_str!(concat!("../shaders/", $name, ".wgsl")) },)*
        ];
    };
}

shader_files!(
    "conv3x3",
    "relu",
    "maxpool2",
    "avgpool2",
    "gram",
    "gram_blocked",
    "transpose",
    "sqdiff",
    "reduce",
    "tv",
    "adam",
    "vector",
    "image",
);

/// A shader generated per adapter from a template in `shaders/` (`*.wgsl.tmpl`): the subgroup
/// kernels, specialised for the adapter's smallest subgroup size.
#[derive(Clone, Copy, Debug)]
pub struct GeneratedShader {
    /// The name entry points refer to.
    pub name: &'static str,
    /// The template file, for messages.
    pub template: &'static str,
    /// The WGSL for a given smallest subgroup size.
    pub generate: fn(usize) -> String,
    /// Whether it needs subgroup operations (else every adapter builds it).
    pub subgroups: bool,
}

fn conv_co16(sg: usize) -> String {
    conv3x3_subgroup::instantiate(sg, 16, Operands::Storage)
}

fn conv_co4(sg: usize) -> String {
    conv3x3_subgroup::instantiate(sg, 4, Operands::Storage)
}

fn conv_tex_co16(sg: usize) -> String {
    conv3x3_subgroup::instantiate(sg, 16, Operands::Texture)
}

fn conv_tex_co4(sg: usize) -> String {
    conv3x3_subgroup::instantiate(sg, 4, Operands::Texture)
}

fn conv1x1_co32(sg: usize) -> String {
    conv3x3_subgroup::instantiate_sized(sg, 32, Operands::Storage, 1)
}

fn conv1x1_tex_co32(sg: usize) -> String {
    conv3x3_subgroup::instantiate_sized(sg, 32, Operands::Texture, 1)
}

fn gram_subgroup(sg: usize) -> String {
    crate::ops::gram_subgroup::instantiate(sg)
}

fn winograd_f2(_sg: usize) -> String {
    winograd::instantiate_transforms(2)
}

fn winograd_f4(_sg: usize) -> String {
    winograd::instantiate_transforms(4)
}

fn winograd_gemm_subgroup(sg: usize) -> String {
    winograd::instantiate_gemm(winograd::GemmFlavour::Subgroup, Operands::Storage, sg)
}

fn winograd_gemm(sg: usize) -> String {
    winograd::instantiate_gemm(winograd::GemmFlavour::Portable, Operands::Storage, sg)
}

fn winograd_gemm_subgroup_tex(sg: usize) -> String {
    winograd::instantiate_gemm(winograd::GemmFlavour::Subgroup, Operands::Texture, sg)
}

fn winograd_gemm_tex(sg: usize) -> String {
    winograd::instantiate_gemm(winograd::GemmFlavour::Portable, Operands::Texture, sg)
}

fn winograd_gemm_subgroup_narrow(sg: usize) -> String {
    winograd::instantiate_gemm(winograd::GemmFlavour::SubgroupNarrow, Operands::Storage, sg)
}

fn winograd_gemm_subgroup_tex_narrow(sg: usize) -> String {
    winograd::instantiate_gemm(winograd::GemmFlavour::SubgroupNarrow, Operands::Texture, sg)
}

const CONV_TEMPLATE: &str = "shaders/conv3x3_subgroup.wgsl.tmpl";
const WINOGRAD_TEMPLATE: &str = "shaders/winograd.wgsl.tmpl";
const WINOGRAD_GEMM_TEMPLATE: &str = "shaders/winograd_gemm.wgsl.tmpl";

/// Every generated shader; those that need subgroups are built only on adapters with subgroup
/// operations.
pub const GENERATED: &[GeneratedShader] = &[
    GeneratedShader { name: "conv3x3_subgroup_co16", template: CONV_TEMPLATE, generate: conv_co16, subgroups: true },
    GeneratedShader { name: "conv3x3_subgroup_co4", template: CONV_TEMPLATE, generate: conv_co4, subgroups: true },
    GeneratedShader {
        name: "conv3x3_subgroup_tex_co16",
        template: CONV_TEMPLATE,
        generate: conv_tex_co16,
        subgroups: true,
    },
    GeneratedShader {
        name: "conv3x3_subgroup_tex_co4",
        template: CONV_TEMPLATE,
        generate: conv_tex_co4,
        subgroups: true,
    },
    GeneratedShader { name: "conv1x1_subgroup_co32", template: CONV_TEMPLATE, generate: conv1x1_co32, subgroups: true },
    GeneratedShader {
        name: "conv1x1_subgroup_tex_co32",
        template: CONV_TEMPLATE,
        generate: conv1x1_tex_co32,
        subgroups: true,
    },
    GeneratedShader {
        name: crate::ops::gram_subgroup::SHADER,
        template: "shaders/gram_subgroup.wgsl.tmpl",
        generate: gram_subgroup,
        subgroups: true,
    },
    GeneratedShader {
        name: winograd::transforms_shader(2),
        template: WINOGRAD_TEMPLATE,
        generate: winograd_f2,
        subgroups: false,
    },
    GeneratedShader {
        name: winograd::transforms_shader(4),
        template: WINOGRAD_TEMPLATE,
        generate: winograd_f4,
        subgroups: false,
    },
    GeneratedShader {
        name: winograd::gemm_shader(winograd::GemmFlavour::Subgroup, Operands::Storage),
        template: WINOGRAD_GEMM_TEMPLATE,
        generate: winograd_gemm_subgroup,
        subgroups: true,
    },
    GeneratedShader {
        name: winograd::gemm_shader(winograd::GemmFlavour::Portable, Operands::Storage),
        template: WINOGRAD_GEMM_TEMPLATE,
        generate: winograd_gemm,
        subgroups: false,
    },
    GeneratedShader {
        name: winograd::gemm_shader(winograd::GemmFlavour::Subgroup, Operands::Texture),
        template: WINOGRAD_GEMM_TEMPLATE,
        generate: winograd_gemm_subgroup_tex,
        subgroups: true,
    },
    GeneratedShader {
        name: winograd::gemm_shader(winograd::GemmFlavour::Portable, Operands::Texture),
        template: WINOGRAD_GEMM_TEMPLATE,
        generate: winograd_gemm_tex,
        subgroups: false,
    },
    GeneratedShader {
        name: winograd::gemm_shader(winograd::GemmFlavour::SubgroupNarrow, Operands::Storage),
        template: WINOGRAD_GEMM_TEMPLATE,
        generate: winograd_gemm_subgroup_narrow,
        subgroups: true,
    },
    GeneratedShader {
        name: winograd::gemm_shader(winograd::GemmFlavour::SubgroupNarrow, Operands::Texture),
        template: WINOGRAD_GEMM_TEMPLATE,
        generate: winograd_gemm_subgroup_tex_narrow,
        subgroups: true,
    },
];

/// The sources of every kernel for an adapter whose smallest subgroup is `subgroup_size` (none:
/// no subgroup operations, so no generated shaders).
pub fn sources(subgroup_size: Option<u32>) -> KernelSources {
    let mut modules: Vec<ShaderSource> =
        FILES.iter().map(|f| ShaderSource { name: f.name, label: f.path(), source: f.source.into() }).collect();
    for g in GENERATED {
        match (subgroup_size, g.subgroups) {
            (Some(sg), _) => {
                let label = format!("{} as {} (subgroup size {sg})", g.template, g.name);
                modules.push(ShaderSource { name: g.name, label, source: (g.generate)(sg as usize).into() });
            }
            (None, false) => {
                let label = format!("{} as {}", g.template, g.name);
                modules.push(ShaderSource { name: g.name, label, source: (g.generate)(1).into() });
            }
            (None, true) => {}
        }
    }
    KernelSources {
        modules,
        entry_points: crate::ops::ENTRY_POINTS,
        optional: GENERATED.iter().filter(|g| g.subgroups).map(|g| g.name).collect(),
    }
}

/// Compiles every kernel for `gpu`: the library a render, a check or a benchmark runs on.
pub fn library(gpu: &Gpu) -> crate::Result<KernelLibrary> {
    KernelLibrary::new(gpu, sources(gpu.subgroup_size))
}

/// Subgroup sizes the generated shaders are checked at: every power of two an adapter may report.
pub const SUBGROUP_SIZES: [usize; 6] = [4, 8, 16, 32, 64, 128];

/// Parses and validates WGSL with naga, the front end wgpu itself uses. The error message is naga's,
/// with the line and column in `file`. Subgroup operations are allowed in compute shaders (the
/// engine uses the kernels that need them only where the adapter has them).
pub fn validate(file: &str, source: &str) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string_with_path(source, file))?;
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default() | naga::valid::Capabilities::SUBGROUP,
    );
    validator
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(naga::valid::SubgroupOperationSet::all());
    let info = validator.validate(&module).map_err(|e| e.emit_to_string_with_path(source, file))?;
    Ok((module, info))
}

/// Validates every file of [`FILES`] and every generated shader at every size of
/// [`SUBGROUP_SIZES`]; returns one `(name, message)` per broken source.
pub fn validate_all() -> Vec<(String, String)> {
    let mut broken: Vec<(String, String)> =
        FILES.iter().filter_map(|f| validate(&f.path(), f.source).err().map(|e| (f.path(), e))).collect();
    for g in GENERATED {
        for sg in SUBGROUP_SIZES {
            let name = format!("{} as {} (subgroup size {sg})", g.template, g.name);
            if let Err(e) = validate(&name, &(g.generate)(sg)) {
                broken.push((name, e));
            }
        }
    }
    broken
}
