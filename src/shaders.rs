//! The WGSL files of `shaders/`, embedded into the binary, and their validation with naga (no GPU).

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
    "conv3x3", "relu", "maxpool2", "avgpool2", "gram", "sqdiff", "reduce", "tv", "adam", "image",
);

/// Parses and validates WGSL with naga, the front end wgpu itself uses. The error message is naga's,
/// with the line and column in `file`.
pub fn validate(
    file: &str,
    source: &str,
) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| e.emit_to_string_with_path(source, file))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string_with_path(source, file))?;
    Ok((module, info))
}

/// Validates every file of [`FILES`]; returns one `(path, message)` per broken file.
pub fn validate_all() -> Vec<(String, String)> {
    FILES
        .iter()
        .filter_map(|f| validate(&f.path(), f.source).err().map(|e| (f.path(), e)))
        .collect()
}
