//! The binary's subcommands that need more than a few lines.

pub mod progress;
pub mod render;
