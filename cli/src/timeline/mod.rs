//! Boot timelines from serial logs: parse the kernel's and the init's
//! stamped lines into phases and instants, then draw them (SVG) or hand
//! them to scripts (JSON).

pub mod json;
pub mod line;
pub mod model;
pub mod svg;

pub use model::{Timeline, Which};
