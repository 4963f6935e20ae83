//! Running containers: user namespace, mounts, process. One file per job:
//!
//! * `idmap` (pure) chooses the UID/GID maps; `userns` writes them (newuidmap/newgidmap
//!   or a single-ID self map) and detects the GID mismatch newgidmap refuses.
//! * `fuse`, `squashfuse`, `overlay`: the image mount and the writable layer;
//!   `probe` decides and caches whether kernel overlayfs works.
//! * `mounts` (pure) parses `-v`; `rootfs` plans and performs the standard mounts and
//!   pivot_root; `resolve` does all in-root path work with openat2(RESOLVE_IN_ROOT).
//! * `image_config`, `env`, `passwd` (pure): what the process gets; `userdb` caches the
//!   container's passwd/group per image and user and puts them in place.
//! * `process` (exec, signals, exit codes, reaping), `caps`, `seccomp` (fake chown);
//!   `prefetch` warms the page cache with the command's executable and (`elfdeps`) its
//!   loader and libraries during set-up.
//! * `spec` turns caller options (CLI flags, later the Slurm plugin) and a stored image into
//!   a `RunSpec`; `launch` executes it; `holder` keeps namespaces for later containers;
//!   `unshare` runs a command in the user's namespace; `state` is the runtime directory.

pub mod caps;
pub mod elfdeps;
pub mod env;
pub mod fuse;
pub mod holder;
pub mod idmap;
pub mod image_config;
pub mod launch;
pub mod mounts;
pub mod overlay;
pub mod passwd;
pub mod prefetch;
pub mod probe;
pub mod process;
pub mod resolve;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod squashfuse;
pub mod state;
pub mod sys;
pub mod unshare;
pub mod userdb;
pub mod userns;
