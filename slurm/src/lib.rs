//! warren's SPANK plugin (`libwarren_spank.so`): pyxis-compatible `--container-*`
//! options for `srun`, `sbatch` and `salloc`, run by Slurm in srun/sbatch (option checks,
//! so a bad value is refused before any node works), in slurmstepd (per step and node:
//! pull the image, start one holder; stop it at step end) and in the job epilog (named
//! containers end with the job), and in each task before slurmstepd execs it (`task`:
//! the task enters the node's container). docs/slurm.md describes the whole flow.
//!
//! Thin on purpose: the pure parts (options, mounts, image values, plugstack arguments)
//! are separate modules with tests; the SPANK glue (`spank`) only moves values between
//! Slurm and them, and never lets a panic cross the C ABI. The heavy work is done by the
//! `warren` binary run as the job's user (`node`).

pub mod args;
pub mod beneath;
pub mod container_mounts;
pub mod entrypoint;
pub mod gpus;
pub mod hostlist;
pub mod image;
pub mod mounts;
pub mod node;
pub mod plugstack;
pub mod roots;
pub mod task;

// The glue references symbols that only exist inside Slurm's processes (resolved at
// dlopen): the unit-test binary cannot link them.
#[cfg(not(test))]
mod ffi;
#[cfg(not(test))]
mod spank;
