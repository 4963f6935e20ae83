//! warren: rootless OCI containers for HPC batch jobs.
//!
//! Data flow, one module per step:
//! `reference` → `registry` (or `oci_layout`) via `source` → `pull` → blobs in `store`
//! → `image::layer` (decompress) → `image::flatten` (apply whiteouts) → `image::squash`
//! → `store` (publish) → `runtime` (user namespace, mounts, process) → exec.
//! `admin` (subid provisioning, doctor) and `cli` sit on top.

pub mod admin;
pub mod cli;
pub mod config;
pub mod digest;
pub mod image;
pub mod oci_layout;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod source;
pub mod store;
pub mod subid;
pub mod util;
