//! Running containers: user namespace, mounts, process.

pub mod probe;
