//! Running containers: user namespace, mounts, process.
