//! Boot timelines: parse the kernel's and the init's stamped lines of a
//! serial log into phases and instants, or take the phase table a node's
//! Report carried; then draw them (SVG) or hand them to scripts (JSON).
//! One renderer for `ember timeline` and the boot server's console.
#![forbid(unsafe_code)]

pub mod json;
pub mod line;
pub mod model;
pub mod report;
pub mod svg;

pub use model::{Timeline, Which};
