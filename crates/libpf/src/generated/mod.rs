// placeholder, replaced by cargo xtask codegen
pub mod frame_types;
