//! Slurm's SPANK C interface (`slurm/spank.h`, 22.05), written by hand: only what the
//! plugin calls. The functions are resolved when Slurm dlopens the plugin.

use std::ffi::{c_char, c_int, c_void};

/// `spank_t`: an opaque handle.
pub type SpankT = *mut c_void;

/// `spank_opt_cb_f`.
pub type OptCb = extern "C" fn(val: c_int, optarg: *const c_char, remote: c_int) -> c_int;

/// `struct spank_option`.
#[repr(C)]
pub struct SpankOption {
    pub name: *const c_char,
    pub arginfo: *const c_char,
    pub usage: *const c_char,
    pub has_arg: c_int,
    pub val: c_int,
    pub cb: Option<OptCb>,
}

/// `spank_err_t` success.
pub const ESPANK_SUCCESS: c_int = 0;
/// `spank_getenv`: buffer too small.
pub const ESPANK_NOSPACE: c_int = 3005;

/// `enum spank_context`.
pub const S_CTX_LOCAL: c_int = 1;
pub const S_CTX_REMOTE: c_int = 2;
pub const S_CTX_ALLOCATOR: c_int = 3;
pub const S_CTX_JOB_SCRIPT: c_int = 5;

/// `enum spank_item` (the ones used).
pub const S_JOB_UID: c_int = 0;
pub const S_JOB_GID: c_int = 1;
pub const S_JOB_ID: c_int = 2;
pub const S_JOB_STEPID: c_int = 3;
pub const S_JOB_NODEID: c_int = 5;
pub const S_JOB_ARGV: c_int = 9;
pub const S_JOB_ENV: c_int = 10;
pub const S_TASK_ID: c_int = 11;
pub const S_JOB_SUPPLEMENTARY_GIDS: c_int = 19;

extern "C" {
    pub fn spank_context() -> c_int;
    pub fn spank_option_register(sp: SpankT, opt: *mut SpankOption) -> c_int;
    pub fn spank_get_item(sp: SpankT, item: c_int, ...) -> c_int;
    pub fn spank_getenv(sp: SpankT, var: *const c_char, buf: *mut c_char, len: c_int) -> c_int;
    pub fn spank_setenv(
        sp: SpankT,
        var: *const c_char,
        val: *const c_char,
        overwrite: c_int,
    ) -> c_int;
    pub fn slurm_error(fmt: *const c_char, ...);
    pub fn slurm_verbose(fmt: *const c_char, ...);
}
