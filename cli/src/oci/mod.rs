//! OCI image layouts (image-spec v1 "layout" directories), both ways:
//!
//! ```text
//! read:  oci-layout + index.json ─► manifest ─► layers (tar | tar+gzip, digests checked)
//!        ─► flatten in order (whiteouts, opaque dirs) ─► initrd::Tree
//! write: initrd::Tree ─► deterministic tar ─► gzip ─► blobs/sha256 + config + manifest + index
//! ```
//!
//! Ownership and extended attributes are not carried into the tree: the
//! initrd is root-owned by construction (the flatten report counts what was
//! dropped). The writer's tar is checked against ember-fs's node-side tar
//! reader in its tests.

mod digest;
mod error;
mod flatten;
mod layout;
mod spec;
mod tar_writer;
mod write;

pub use digest::Digest;
pub use error::Error;
pub use flatten::flatten_layout;
pub use write::{write_layout, ImageSpec};
