//! The plugstack arguments: parsed by the library (`warren::admin::doctor::slurm::plugstack`)
//! so that `warren doctor` and the plugin agree on what a valid line is.

pub use warren::admin::doctor::slurm::plugstack::*;
