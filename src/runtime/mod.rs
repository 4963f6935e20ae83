//! Running containers as a library: a CLI, a SPANK plugin inside slurmstepd or an OCI
//! runtime front end calls it. It never prints, never reads its caller's identity from
//! the process (`Caller` is passed in), and never changes process-global state of the
//! caller (signal masks, subreaper, terminal, reaping others' children): front ends do
//! (`cli::supervisor`). One file per job:
//!
//! * the plan: `caller` (who), `spec` (options + image + caller → `RunSpec`),
//!   `image_config`, `env`, `mounts` (pure) and `idmap` (pure: the UID/GID maps).
//! * the set-up, in the container's own process: `setup` (pipe-free: mount namespace,
//!   staging tmpfs, image, writable layer, user files, mounts, pivot_root → `Prepared`),
//!   with `readonly` (the read-only root), `identity` (pure: IDs and home inside),
//!   `userns` (maps: newuidmap/newgidmap or a single-ID self map), `fuse`, `squashfuse`
//!   (with warren's own image server: `sqfs` reads squashfs, `lz4` decodes lz4 blocks,
//!   `sqfs_serve` speaks FUSE),
//!   `overlay`, `probe` (does kernel overlayfs work, cached per boot), `rootfs` (standard
//!   mounts, pivot_root), `resolve` (in-root path work with openat2), `passwd`/`userdb`
//!   (the user's passwd/group inside), `prefetch`/`elfdeps` (warm the page cache),
//!   `prefetch_list`/`sqfs_record`/`prefetch_replay` (an image's prefetch list: what a
//!   fresh mount's first container read, recorded by the image server, read ahead by the
//!   next fresh mount).
//! * MPI: `pmix` (pure: the launcher's PMIx directories a task must see); host MPI
//!   injection: `mpi_inject` (site `[mpi]` config → binds, devices, env; the
//!   image's MPI checked in the set-up), `mpi_abi` (pure: a libmpi's ABI and whether the
//!   host's can replace the image's).
//! * hardening: `execonly` (execute-only, hence non-dumpable, FUSE daemons).
//! * `--contain`: `pidns` (PID namespace and its own /proc, private IPC).
//! * the process: `process` (`finish` = identity, caps, no_new_privs, seccomp;
//!   `exec` = finish + PATH exec), `caps`, `seccomp` (fake chown).
//! * devices and site additions: `cdi` (pure: CDI spec files), `cdi_registry` (spec
//!   directories, device requests), `dropins` (mounts.d/environ.d), `site_hooks`
//!   (hooks.d), `inject` (all of them gathered and applied to a `RunSpec`), `libguard`
//!   (injected host libraries vs the image's glibc), `hooks` (running OCI hooks).
//! * `messages`: typed set-up → front end messages; `holder`: scoped namespace holders
//!   (user or Slurm job); `state`: runtime directory and `ps`/`rm` records; `sys`: thin
//!   syscall wrappers.

pub mod bundle;
pub mod caller;
pub mod caps;
pub mod cdi;
pub mod cdi_registry;
pub mod dropins;
pub mod elfdeps;
pub mod env;
pub mod execonly;
pub mod fuse;
pub mod holder;
pub mod hooks;
pub mod identity;
pub mod idmap;
pub mod image_config;
pub mod inject;
pub mod libguard;
pub mod lz4;
pub mod messages;
pub mod mounts;
pub mod mpi_abi;
pub mod mpi_inject;
pub mod oci_spec;
pub mod oci_state;
pub mod overlay;
pub mod passwd;
pub mod pidns;
pub mod pmix;
pub mod prefetch;
pub mod prefetch_list;
pub mod prefetch_replay;
pub mod probe;
pub mod process;
pub mod readonly;
pub mod resolve;
pub mod rootfs;
pub mod seccomp;
pub mod setup;
pub mod site_hooks;
pub mod skeleton;
pub mod spec;
pub mod sqfs;
pub mod sqfs_record;
pub mod sqfs_serve;
pub mod squashfuse;
pub mod state;
pub mod sys;
pub mod userdb;
pub mod userns;
