//! The SPANK entry points and the symbols Slurm looks for. Each entry catches panics
//! (none may cross the C ABI), takes the plugin state from one mutex (Slurm calls the
//! hooks of one process from one thread) and moves values between Slurm and the pure
//! modules.

use crate::args::{Args, NameMode, Opt, OPTIONS};
use crate::ffi::{self, SpankT};
use crate::hostlist;
use crate::image::Image;
use crate::node::{self, Job, Scope};
use crate::plugstack::{self, Config};
use crate::roots::{self, Layer};
use crate::task;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use warren::runtime::holder::Scope as HolderScope;

/// `SLURM_VERSION_NUMBER` of the headers this was built against (build.rs).
const VERSION: u32 = parse_u32(env!("WARREN_SLURM_VERSION_NUMBER"));

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v: u32 = 0;
    while i < b.len() {
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    v
}

// Slurm reads these as C arrays, not pointers (a pointer loads but options never reach
// slurmstepd: LAB.md).
#[no_mangle]
#[used]
pub static plugin_name: [u8; 7] = *b"warren\0";
#[no_mangle]
#[used]
pub static plugin_type: [u8; 6] = *b"spank\0";
#[no_mangle]
#[used]
pub static plugin_version: u32 = VERSION;
#[no_mangle]
#[used]
pub static spank_plugin_version: u32 = 1;

#[derive(Default)]
struct State {
    cfg: Option<Config>,
    args: Args,
    /// Holder scopes this step started on this node (stopped at step end).
    started: Vec<(Job, PathBuf)>,
    /// A failure of `init_post_opt` in slurmstepd, reported again from `user_init`: before
    /// that, slurmstepd's messages reach only its log, not the user's srun.
    pending: Option<String>,
    /// The container the step's tasks enter: the job, the holder's scope dir and scope.
    active: Option<(Job, PathBuf, HolderScope)>,
    /// `--container-save` on this node (the step's first node saves its local task 0):
    /// the absolute target.
    save: Option<PathBuf>,
}

fn state() -> MutexGuard<'static, State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// One line to the user (srun/sbatch stderr, or the step's stderr via slurmstepd) and
/// the log.
fn error(msg: &str) {
    let m = cstring(msg);
    // SAFETY: "%s" with a valid NUL-terminated string.
    unsafe { ffi::slurm_error(c"%s".as_ptr(), m.as_ptr()) };
}

fn verbose(msg: &str) {
    let m = cstring(msg);
    // SAFETY: as above.
    unsafe { ffi::slurm_verbose(c"%s".as_ptr(), m.as_ptr()) };
}

/// Run a hook body; a panic becomes an error return instead of unwinding into C.
fn guard(hook: &str, f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(rc) => rc,
        Err(_) => {
            error(&format!("warren: internal error in {hook}"));
            -1
        }
    }
}

/// The option table, built once and never freed (Slurm keeps the pointers).
struct Table(Vec<ffi::SpankOption>);
// SAFETY: the table is written once (OnceLock) and only read afterwards, by Slurm.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

fn table() -> *mut ffi::SpankOption {
    static T: OnceLock<Table> = OnceLock::new();
    let t = T.get_or_init(|| {
        let leak = |s: &str| cstring(s).into_raw() as *const c_char;
        Table(
            OPTIONS
                .iter()
                .map(|o| ffi::SpankOption {
                    name: leak(o.name),
                    arginfo: o.arginfo.map_or(std::ptr::null(), leak),
                    usage: leak(o.usage),
                    has_arg: o.arginfo.is_some() as c_int,
                    val: o.opt as c_int,
                    cb: Some(option_cb),
                })
                .collect(),
        )
    });
    t.0.as_ptr() as *mut ffi::SpankOption
}

extern "C" fn option_cb(val: c_int, optarg: *const c_char, _remote: c_int) -> c_int {
    guard("option callback", || {
        let Some(opt) = Opt::from_val(val) else {
            return -1;
        };
        let value = if optarg.is_null() {
            None
        } else {
            // SAFETY: Slurm passes a NUL-terminated option argument.
            Some(
                unsafe { CStr::from_ptr(optarg) }
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        // A flag without argument may still get a "" or stray value: ignore it.
        let value = if OPTIONS[opt as usize].arginfo.is_some() {
            value
        } else {
            None
        };
        match state().args.set(opt, value.as_deref()) {
            Ok(()) => 0,
            Err(e) => {
                error(&e.to_string());
                -1
            }
        }
    })
}

fn argv(ac: c_int, av: *mut *mut c_char) -> Vec<String> {
    (0..ac.max(0) as usize)
        .filter_map(|i| {
            // SAFETY: Slurm passes ac valid C strings in av.
            let p = unsafe { *av.add(i) };
            (!p.is_null())
                // SAFETY: p is one of them.
                .then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

/// `slurm_spank_init`: read the plugstack arguments, register the options.
#[no_mangle]
pub extern "C" fn slurm_spank_init(sp: SpankT, ac: c_int, av: *mut *mut c_char) -> c_int {
    guard("slurm_spank_init", || {
        // SAFETY: plain query.
        let ctx = unsafe { ffi::spank_context() };
        let cfg = match plugstack::parse(&argv(ac, av)) {
            Ok(c) => c,
            Err(e) => {
                // Inert when optional; Slurm fails the load when required.
                error(&e.to_string());
                return -1;
            }
        };
        let register = match ctx {
            ffi::S_CTX_LOCAL | ffi::S_CTX_REMOTE => true,
            ffi::S_CTX_ALLOCATOR => cfg.sbatch_support,
            _ => false,
        };
        state().cfg = Some(cfg);
        if register {
            let t = table();
            for (i, o) in OPTIONS.iter().enumerate() {
                // SAFETY: t points to OPTIONS.len() entries that live forever.
                let rc = unsafe { ffi::spank_option_register(sp, t.add(i)) };
                if rc != ffi::ESPANK_SUCCESS {
                    error(&format!(
                        "warren: could not register --{} (spank error {rc})",
                        o.name
                    ));
                    return -1;
                }
            }
        }
        0
    })
}

/// A variable of the job's environment (remote context).
fn job_getenv(sp: SpankT, name: &str) -> Option<String> {
    let n = cstring(name);
    let mut len = 4096usize;
    loop {
        let mut buf = vec![0u8; len];
        // SAFETY: buf has len bytes; Slurm writes a NUL-terminated value into it.
        let rc = unsafe {
            ffi::spank_getenv(
                sp,
                n.as_ptr(),
                buf.as_mut_ptr() as *mut c_char,
                len as c_int,
            )
        };
        if rc == ffi::ESPANK_NOSPACE && len < 1 << 20 {
            len *= 4;
            continue;
        }
        if rc != ffi::ESPANK_SUCCESS {
            return None;
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        return Some(String::from_utf8_lossy(&buf[..end]).into_owned());
    }
}

fn item_u32(sp: SpankT, item: c_int) -> Option<u32> {
    let mut v: u32 = 0;
    // SAFETY: these items write one uint32_t/uid_t/gid_t through the pointer.
    let rc = unsafe { ffi::spank_get_item(sp, item, &mut v as *mut u32) };
    (rc == ffi::ESPANK_SUCCESS).then_some(v)
}

/// Name and home of `uid` from the passwd database.
fn passwd(uid: u32) -> Option<(String, PathBuf)> {
    let mut pw: libc::passwd = unsafe_zeroed();
    let mut buf = vec![0 as c_char; 16384];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the sizes given; out is set to &pw or NULL.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return None;
    }
    // SAFETY: on success pw_name/pw_dir point into buf as NUL-terminated strings.
    let name = unsafe { CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: as above.
    let home = unsafe { CStr::from_ptr(pw.pw_dir) }
        .to_string_lossy()
        .into_owned();
    Some((name, PathBuf::from(home)))
}

fn unsafe_zeroed() -> libc::passwd {
    // SAFETY: libc::passwd is plain data (pointers and integers); all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// Supplementary groups from the passwd/group databases (where Slurm has no list).
fn grouplist(user: &str, gid: u32) -> Vec<u32> {
    let name = cstring(user);
    let mut n: c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: groups has count entries; getgrouplist writes at most count.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return groups;
        }
        if count <= n || n > 65536 {
            return vec![gid];
        }
        n = count;
    }
}

/// This node's name: its index in the step's node list (no item names it before tasks
/// exist, and the simulated nodes of the tests share one host name).
fn node_name(sp: SpankT) -> Result<String, String> {
    let id = item_u32(sp, ffi::S_JOB_NODEID).ok_or("no node id")?;
    let (var, list) = [
        "SLURM_STEP_NODELIST",
        "SLURM_JOB_NODELIST",
        "SLURM_NODELIST",
    ]
    .iter()
    .find_map(|v| job_getenv(sp, v).map(|l| (*v, l)))
    .ok_or("no SLURM_STEP_NODELIST or SLURM_JOB_NODELIST in the job environment")?;
    let hosts =
        hostlist::expand(&list).ok_or_else(|| format!("{var}={list:?}: not a host list"))?;
    hosts
        .get(id as usize)
        .cloned()
        .ok_or_else(|| format!("node id {id} is not in {var}={list:?}"))
}

/// The job's user and place, from Slurm's items (remote context).
fn remote_job(sp: SpankT) -> Result<Job, String> {
    let uid = item_u32(sp, ffi::S_JOB_UID).ok_or("no job uid")?;
    let gid = item_u32(sp, ffi::S_JOB_GID).ok_or("no job gid")?;
    let job_id = item_u32(sp, ffi::S_JOB_ID).ok_or("no job id")?;
    let (user, home) = passwd(uid).ok_or_else(|| format!("uid {uid} has no passwd entry"))?;
    let mut groups = vec![gid];
    let mut list: *mut libc::gid_t = std::ptr::null_mut();
    let mut n: c_int = 0;
    // SAFETY: this item writes a gid_t array pointer (owned by Slurm) and its length.
    let rc = unsafe {
        ffi::spank_get_item(
            sp,
            ffi::S_JOB_SUPPLEMENTARY_GIDS,
            &mut list as *mut *mut libc::gid_t,
            &mut n as *mut c_int,
        )
    };
    if rc == ffi::ESPANK_SUCCESS && !list.is_null() && n > 0 {
        // SAFETY: Slurm guarantees n entries at list.
        groups = unsafe { std::slice::from_raw_parts(list, n as usize) }.to_vec();
    }
    let node = node_name(sp)?;
    Ok(Job {
        uid,
        gid,
        groups,
        user,
        home,
        job_id,
        node,
    })
}

/// `slurm_spank_init_post_opt`: every option is in. srun/sbatch: the environment forms,
/// the cross checks (a bad value stops the submission here). slurmstepd: pull the image
/// and start the node's holder for this step (or the job's named container).
#[no_mangle]
pub extern "C" fn slurm_spank_init_post_opt(
    sp: SpankT,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    guard("slurm_spank_init_post_opt", || {
        // SAFETY: plain query.
        let ctx = unsafe { ffi::spank_context() };
        let mut st = state();
        let Some(cfg) = st.cfg.clone() else {
            return 0;
        };
        let env_result = match ctx {
            ffi::S_CTX_LOCAL | ffi::S_CTX_ALLOCATOR => st.args.apply_env(|k| std::env::var(k).ok()),
            ffi::S_CTX_REMOTE => st.args.apply_env(|k| job_getenv(sp, k)),
            _ => return 0,
        };
        if let Err(e) = env_result.and_then(|()| st.args.check()) {
            error(&e.to_string());
            return -1;
        }
        if ctx != ffi::S_CTX_REMOTE {
            for o in st.args.ignored() {
                error(&format!("warren: ignoring {o} because neither --container-image nor --container-name is set"));
            }
            return 0;
        }
        if !st.args.enabled() {
            return 0;
        }
        let Some(step) = item_u32(sp, ffi::S_JOB_STEPID) else {
            error("warren: no step id");
            return -1;
        };
        if step == node::SLURM_EXTERN_CONT || step == node::SLURM_INTERACTIVE_STEP {
            return 0;
        }
        if step == node::SLURM_BATCH_SCRIPT && !cfg.sbatch_support {
            return 0;
        }
        let result = remote_job(sp)
            .map_err(|e| format!("warren: {e}"))
            .and_then(|job| {
                // srun and sbatch set SLURM_SUBMIT_DIR to their working directory (PWD
                // in the job environment may be stale here: slurmstepd sets it later).
                let cwd = job_getenv(sp, "SLURM_SUBMIT_DIR")
                    .or_else(|| job_getenv(sp, "PWD"))
                    .filter(|d| d.starts_with('/'))
                    .map(PathBuf::from);
                start(&cfg, &st.args, &job, step, cwd, &job_argv(sp)).map(|s| (job, s))
            });
        match result {
            Ok((job, started)) => {
                if let Some(target) = &st.args.save {
                    if item_u32(sp, ffi::S_JOB_NODEID) == Some(0) {
                        let base = job_getenv(sp, "SLURM_SUBMIT_DIR")
                            .filter(|d| d.starts_with('/'))
                            .map(PathBuf::from)
                            .unwrap_or_else(|| job.home.clone());
                        st.save = Some(base.join(target));
                    }
                }
                if started.stop_at_step_end {
                    st.started.push((job.clone(), started.dir.clone()));
                }
                st.active = Some((job, started.dir, started.scope));
            }
            Err(e) => {
                error(&e);
                st.pending = Some(e);
            }
        }
        0
    })
}

/// `slurm_spank_user_init` (slurmstepd, once per node, the step's I/O is set up): the
/// message of a failed set-up, which the user now sees on srun's stderr.
#[no_mangle]
pub extern "C" fn slurm_spank_user_init(_sp: SpankT, _ac: c_int, _av: *mut *mut c_char) -> c_int {
    guard("slurm_spank_user_init", || {
        if let Some(e) = &state().pending {
            error(e);
        }
        0
    })
}

/// `slurm_spank_task_init` (each task, as the user, before slurmstepd execs it): enter
/// the node's container and give the job environment the container's variables. A task
/// whose container could not be set up must not run on the host: failing here makes it
/// exit 1, which reaches srun's exit code (a failed `user_init` is a launch failure that
/// srun 22.05 reports with exit 0).
#[no_mangle]
pub extern "C" fn slurm_spank_task_init(sp: SpankT, _ac: c_int, _av: *mut *mut c_char) -> c_int {
    guard("slurm_spank_task_init", || {
        let st = state();
        if st.pending.is_some() {
            return -1;
        }
        let (Some(cfg), Some((job, dir, scope))) = (&st.cfg, &st.active) else {
            return 0;
        };
        let input = task::TaskInput {
            cfg,
            args: &st.args,
            job,
            rundir: dir,
            scope: scope.clone(),
            env: job_env(sp),
            argv: job_argv(sp),
            cwd: std::env::current_dir().unwrap_or_else(|_| "/".into()),
            layer: task_layer(sp, cfg, &st.args, dir),
            batch_script: None,
        };
        let mut input = input;
        if matches!(
            scope,
            HolderScope::Job {
                step_id: Some(node::SLURM_BATCH_SCRIPT),
                ..
            }
        ) {
            input.batch_script = input.argv.first().map(PathBuf::from);
        }
        match task::enter(&input) {
            Ok(changes) => {
                for (k, v) in changes {
                    let (k, v) = (cstring(&k), cstring(&v));
                    // SAFETY: valid C strings; Slurm copies them into the job environment.
                    if unsafe { ffi::spank_setenv(sp, k.as_ptr(), v.as_ptr(), 1) }
                        != ffi::ESPANK_SUCCESS
                    {
                        error(&format!("warren: could not set {k:?} for the task"));
                        return -1;
                    }
                }
                0
            }
            Err(e) => {
                error(&e);
                -1
            }
        }
    })
}

/// The task's writable layer (`roots::plan`): a named container's local task keeps
/// its root across the job's steps (and a `:exec` step enters it), `shared_root=yes`
/// gives the node's tasks one root, `--container-save` needs the layer after the step.
fn task_layer(sp: SpankT, cfg: &Config, args: &Args, dir: &std::path::Path) -> Layer {
    let mut id: c_int = 0;
    // SAFETY: S_TASK_ID writes one int (task context).
    let rc = unsafe { ffi::spank_get_item(sp, ffi::S_TASK_ID, &mut id as *mut c_int) };
    let id = if rc == ffi::ESPANK_SUCCESS {
        id.max(0) as u32
    } else {
        0
    };
    roots::plan(
        cfg.shared_root,
        args.name.is_some(),
        args.save.is_some(),
        id,
        dir,
    )
}

/// NULL-terminated C string array to Strings.
///
/// # Safety
/// `p` is NULL or points to a NULL-terminated array of C strings.
unsafe fn strings(p: *const *const c_char, max: Option<usize>) -> Vec<String> {
    let mut v = Vec::new();
    if p.is_null() {
        return v;
    }
    let mut i = 0;
    loop {
        if max.is_some_and(|m| i >= m) {
            break;
        }
        // SAFETY: within the array (NULL-terminated, or max entries).
        let s = unsafe { *p.add(i) };
        if s.is_null() {
            break;
        }
        // SAFETY: each entry is a C string.
        v.push(unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned());
        i += 1;
    }
    v
}

/// The job environment (remote context) as pairs.
fn job_env(sp: SpankT) -> Vec<(String, String)> {
    let mut env: *const *const c_char = std::ptr::null();
    // SAFETY: S_JOB_ENV writes a char** owned by Slurm.
    let rc = unsafe { ffi::spank_get_item(sp, ffi::S_JOB_ENV, &mut env as *mut _) };
    if rc != ffi::ESPANK_SUCCESS {
        return vec![];
    }
    // SAFETY: Slurm's job environment is a NULL-terminated array of C strings.
    unsafe { strings(env, None) }
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The task's argv (remote context).
fn job_argv(sp: SpankT) -> Vec<String> {
    let mut argc: c_int = 0;
    let mut argv: *const *const c_char = std::ptr::null();
    // SAFETY: S_JOB_ARGV writes an int and a char** owned by Slurm.
    let rc = unsafe {
        ffi::spank_get_item(
            sp,
            ffi::S_JOB_ARGV,
            &mut argc as *mut c_int,
            &mut argv as *mut _,
        )
    };
    if rc != ffi::ESPANK_SUCCESS {
        return vec![];
    }
    // SAFETY: argc entries of C strings.
    unsafe { strings(argv, Some(argc.max(0) as usize)) }
}

/// The holder a step's tasks use on this node.
struct Started {
    dir: PathBuf,
    scope: HolderScope,
    /// This step started a step-scoped holder: it stops it at step end.
    stop_at_step_end: bool,
}

/// Make sure this step's (or the named container's) holder runs on this node (pulling the
/// image first if the store lacks it).
fn start(
    cfg: &Config,
    args: &Args,
    job: &Job,
    step: u32,
    cwd: Option<PathBuf>,
    command: &[String],
) -> Result<Started, String> {
    let scope = match &args.name {
        Some((n, _)) => Scope::Named(n.clone()),
        None => Scope::Step(step),
    };
    // The library's scope of the holder: the job and step (a named container: the job).
    let holder_scope = HolderScope::Job {
        job_id: job.job_id,
        step_id: match scope {
            Scope::Step(s) => Some(s),
            Scope::Named(_) => None,
        },
        name: None,
    };
    let job_arg = match scope {
        Scope::Step(s) => format!("{}.{s}", job.job_id),
        Scope::Named(_) => job.job_id.to_string(),
    };
    let dir = node::scope_dir(cfg, job, &scope).map_err(|e| e.to_string())?;
    let running = node::holder_running(cfg, &dir);
    match &args.name {
        Some((n, NameMode::Exec)) if !running => {
            return Err(format!(
                "warren: --container-name={n}:exec: no running container {n:?} of job {} on {}",
                job.job_id, job.node
            ))
        }
        Some((n, NameMode::Create)) if running => {
            return Err(format!(
                "warren: --container-name={n}:create: container {n:?} already exists in job {}",
                job.job_id
            ))
        }
        _ => {}
    }
    if running {
        verbose(&format!(
            "warren: using the running container in {}",
            dir.display()
        ));
        return Ok(Started {
            dir,
            scope: holder_scope,
            stop_at_step_end: false,
        });
    }
    let Some(image) = &args.image else {
        return Err(format!(
            "warren: --container-name={}: no such container in job {} on {} and no --container-image to create it",
            args.name.as_ref().map_or("", |n| n.0.as_str()),
            job.job_id,
            job.node
        ));
    };
    node::prepare_job_dir(cfg, job).map_err(|e| e.to_string())?;
    let image_args: Vec<String> = match image {
        // Pulled only when the store lacks it: no registry round trip on the task path
        // for a stored image; the store's locks make the nodes of a job download each
        // blob once.
        Image::Registry(r) => vec!["--pull=missing".into(), "--".into(), r.clone()],
        Image::Squashfs(p) => {
            let path = if p.starts_with('/') {
                PathBuf::from(p)
            } else {
                cwd.ok_or_else(|| {
                    format!("warren: --container-image={p}: relative path, but the job has no PWD")
                })?
                .join(p)
            };
            // A squashfs file has no OCI config: an empty one (the file's own env etc.
            // are its tree's). warren opens the file as the user.
            let config = node::write_squashfs_config(cfg, job).map_err(|e| e.to_string())?;
            vec![
                "--squashfs".into(),
                path.display().to_string(),
                "--image-config".into(),
                config.display().to_string(),
            ]
        }
    };
    let remap = args.remap_root.unwrap_or(cfg.remap_root);
    let identity = if remap { "--remap-root" } else { "--keep-uid" };
    let mut argv: Vec<&str> = vec![
        "run",
        "--holder",
        "--name",
        node::HOLDER_NAME,
        "--job",
        &job_arg,
        identity,
    ];
    // The tasks' command (what they run: `srun`'s, no entrypoint), whose prefetch list
    // the holder records or reads ahead (docs/run.md, "The prefetch list"); only its
    // name, never as the holder's own command (site hooks match commands).
    let prefetch_for = command.first().map(|c| format!("--prefetch-for={c}"));
    argv.extend(prefetch_for.as_deref());
    argv.extend(image_args.iter().map(String::as_str));
    node::run_warren(cfg, job, &dir, "start the holder", &argv).map_err(|e| e.to_string())?;
    match node::kernel_mount(cfg, job, &dir) {
        Ok(true) => verbose("warren: image mounted with the kernel's squashfs driver"),
        Ok(false) => {}
        // squashfuse still serves the image: say so, do not fail the step.
        Err(e) => error(&format!("{e} (squashfuse serves the image instead)")),
    }
    Ok(Started {
        dir,
        scope: holder_scope,
        stop_at_step_end: matches!(scope, Scope::Step(_)),
    })
}

/// `slurm_spank_task_exit` (slurmstepd, root, as each task ends; before srun learns of
/// it): `--container-save` of the first node's local task 0, so that a next step of the
/// job already finds the file.
#[no_mangle]
pub extern "C" fn slurm_spank_task_exit(sp: SpankT, _ac: c_int, _av: *mut *mut c_char) -> c_int {
    guard("slurm_spank_task_exit", || {
        // SAFETY: plain query.
        if unsafe { ffi::spank_context() } != ffi::S_CTX_REMOTE {
            return 0;
        }
        let mut id: c_int = -1;
        // SAFETY: S_TASK_ID writes one int (task context).
        let rc = unsafe { ffi::spank_get_item(sp, ffi::S_TASK_ID, &mut id as *mut c_int) };
        if rc != ffi::ESPANK_SUCCESS || id != 0 {
            return 0;
        }
        let mut st = state();
        let Some(cfg) = st.cfg.clone() else {
            return 0;
        };
        let mut rc = 0;
        if let (Some(target), Some((job, dir, _))) = (st.save.take(), &st.active) {
            let layer = match roots::plan(cfg.shared_root, st.args.name.is_some(), true, 0, dir) {
                roots::Layer::Kept(d) | roots::Layer::Mounted { dir: d, .. } => d,
                roots::Layer::Fresh => dir.join("save.0"),
            };
            match node::save_container(&cfg, job, dir, &layer, &target) {
                Ok(()) => verbose(&format!(
                    "warren: saved the container to {}",
                    target.display()
                )),
                Err(e) => {
                    error(&e.to_string());
                    rc = -1;
                }
            }
        }
        rc
    })
}

/// `slurm_spank_exit`: the step ends on this node: stop the holder it started.
#[no_mangle]
pub extern "C" fn slurm_spank_exit(_sp: SpankT, _ac: c_int, _av: *mut *mut c_char) -> c_int {
    guard("slurm_spank_exit", || {
        // SAFETY: plain query.
        if unsafe { ffi::spank_context() } != ffi::S_CTX_REMOTE {
            return 0;
        }
        let mut st = state();
        let Some(cfg) = st.cfg.clone() else {
            return 0;
        };
        let mut rc = 0;
        for (job, dir) in std::mem::take(&mut st.started) {
            if let Err(e) = node::stop_scope(&cfg, &job, &dir) {
                error(&e.to_string());
                rc = -1;
            }
        }
        rc
    })
}

/// `slurm_spank_job_epilog` (root, on every node of the job): the job's named containers
/// and anything a killed step left behind end with the job.
#[no_mangle]
pub extern "C" fn slurm_spank_job_epilog(sp: SpankT, ac: c_int, av: *mut *mut c_char) -> c_int {
    guard("slurm_spank_job_epilog", || {
        // SAFETY: plain query.
        if unsafe { ffi::spank_context() } != ffi::S_CTX_JOB_SCRIPT {
            return 0;
        }
        // slurm_spank_init is not called for job scripts: the arguments come here.
        let cfg = match plugstack::parse(&argv(ac, av)) {
            Ok(c) => c,
            Err(e) => {
                error(&e.to_string());
                return -1;
            }
        };
        let (Some(uid), Some(job_id)) = (item_u32(sp, ffi::S_JOB_UID), item_u32(sp, ffi::S_JOB_ID))
        else {
            error("warren: job epilog without job uid or id");
            return -1;
        };
        let Some(node_name) = std::env::var("SLURMD_NODENAME").ok() else {
            error("warren: job epilog: SLURMD_NODENAME is not set; cannot find this node's containers");
            return -1;
        };
        let (user, home) = passwd(uid).unwrap_or_else(|| (uid.to_string(), "/".into()));
        let gid = item_u32(sp, ffi::S_JOB_GID).unwrap_or_else(|| {
            // The epilog has no gid item on every Slurm: the passwd entry's.
            let mut pw = unsafe_zeroed();
            let mut buf = vec![0 as c_char; 16384];
            let mut out: *mut libc::passwd = std::ptr::null_mut();
            // SAFETY: as in passwd().
            let rc =
                unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
            if rc == 0 && !out.is_null() {
                pw.pw_gid
            } else {
                uid
            }
        });
        let job = Job {
            uid,
            gid,
            groups: grouplist(&user, gid),
            user,
            home,
            job_id,
            node: node_name,
        };
        match node::cleanup_job(&cfg, &job) {
            Ok(()) => 0,
            Err(e) => {
                error(&e.to_string());
                -1
            }
        }
    })
}
