//! Typed errors at the library boundary. Each one says which kernel, shape or file it concerns, and
//! the CLI turns it into a one-line message that says what to do next.

use thiserror::Error;

/// Everything that can go wrong inside `nst`.
#[derive(Debug, Error)]
pub enum Error {
    /// No adapter matched: none at all, or none with the requested name or backend.
    #[error("no GPU adapter found{wanted}; {hint}")]
    NoAdapter {
        /// What was asked for (empty when any adapter would do), with a leading space.
        wanted: String,
        /// What the user can do about it.
        hint: String,
    },

    /// The adapter exists but refused to give a device.
    #[error("the adapter {adapter:?} refused to create a device: {message}")]
    RequestDevice { adapter: String, message: String },

    /// A backend name that wgpu does not know.
    #[error("unknown backend {0:?}: use vulkan, metal, dx12 or gl")]
    UnknownBackend(String),

    /// A WGSL file that naga or the driver rejected.
    #[error("shader {file}: {message}")]
    Shader { file: String, message: String },

    /// A kernel that names an entry point or shader the library does not have.
    #[error("kernel {kernel}: {message}")]
    UnknownKernel { kernel: String, message: String },

    /// A dispatch larger than the adapter allows, even folded into two dimensions.
    #[error(
        "kernel {kernel}: {workgroups} workgroups exceed the limit of {limit} per dimension \
         (folded into two dimensions, at most {limit}x{limit}); use a smaller image"
    )]
    DispatchTooLarge { kernel: String, workgroups: u64, limit: u32 },

    /// A buffer too large for one storage binding on this adapter.
    #[error(
        "kernel {kernel}: binding {binding} needs {bytes} bytes, over this adapter's storage binding \
         limit of {limit} bytes; use a smaller image"
    )]
    BindingTooLarge { kernel: String, binding: String, bytes: u64, limit: u64 },

    /// A buffer smaller than the kernel's shape needs, or the wrong number of buffers.
    #[error("kernel {kernel}: {message}")]
    Shape { kernel: String, message: String },

    /// A validation or out-of-memory error reported by wgpu inside an error scope.
    #[error("GPU error while {during}: {message}")]
    Gpu { during: String, message: String },

    /// A weight file that is missing, unreadable or not what nst expects.
    #[error("weights {origin}: {message}")]
    Weights { origin: String, message: String },

    /// A layer name that VGG19 does not have (as nst names them).
    #[error("unknown layer {name:?}: {hint}")]
    UnknownLayer { name: String, hint: String },

    /// An image too small or too large for the network or the adapter.
    #[error("image of {width}x{height} pixels: {message}")]
    ImageSize { height: usize, width: usize, message: String },

    /// An input image that cannot be opened or decoded.
    #[error("image {path}: {message}")]
    Image { path: String, message: String },

    /// An output path that cannot be written.
    #[error("output {path}: {message}")]
    Output { path: String, message: String },

    /// Render options that no render can use, in words that need no option named.
    #[error("{0}")]
    Options(String),

    /// A render option no render can use: `option` names its field of `RenderOptions`
    /// (`style_scale`, `adam.lr`; several joined by `/`), which the command line turns into its flag.
    #[error("{option}: {message}")]
    Option { option: &'static str, message: String },

    /// Waiting for the device or mapping a buffer failed.
    #[error("GPU device lost or stalled while {during}: {message}")]
    Device { during: String, message: String },
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;
