//! MPI with `warren run` as the test user, without Slurm (docs/mpi.md):
//! - host MPI injection: a program built against the host's Open MPI runs in an image
//!   without MPI only with `--mpi-inject=on`; an image with MPICH's ABI is refused in one
//!   line, `force` overrides; an image with the host's Open MPI passes the check; bad
//!   `[mpi]` settings are one-line errors; injected devices keep device access.
//! - ranks started by the host's `mpirun`, each a `warren run` joining one holder (one
//!   user namespace): /dev/shm, System V IPC and cross-memory attach between them
//!   (`mpi-nodeshare` fails if `process_vm_readv` on the peer fails), and a ping-pong
//!   over Open MPI's shared-memory transport with CMA single copy.
mod mpi_support;
mod support;

use mpi_support::{compile, inject_config, need_mpi, DEBIAN, MPICH, OPENMPI};
use std::process::Output;
use support::{need_user, stderr, stdout, Env, TEST_USER};

fn env(extra: &str) -> Result<Env, String> {
    need_user(TEST_USER)?;
    Ok(Env::with_config(extra))
}

/// `warren run` with this env's config, the program's dir bound at /w.
fn run(e: &Env, args: &[&str]) -> Output {
    let w = format!("{}:/w", e.path().display());
    let mut v = vec!["run", "-q", "-v", &w];
    v.extend_from_slice(args);
    e.run(&v)
}

/// Open MPI without mpirun and without orted in the image: an isolated singleton.
const SINGLETON: &str = "OMPI_MCA_ess_singleton_isolated=1 exec /w/hello";

#[test]
fn injection_runs_a_host_mpi_program_in_an_image_without_mpi() {
    need!(need_mpi(&[DEBIAN]));
    let e = need!(env(&inject_config()));
    compile(&e.dir, "hello");
    // Without injection (the default) the program cannot even load.
    let o = run(&e, &[DEBIAN, "sh", "-c", SINGLETON]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("libmpi.so.40"), "{}", stderr(&o));
    let o = run(&e, &["--mpi-inject=on", DEBIAN, "sh", "-c", SINGLETON]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("rank 0 of 1 on {}", hostname()));
    // Every plugin loaded (their dependencies came along), nothing else said.
    assert_eq!(stderr(&o), "");
    let o = run(
        &e,
        &[
            "--mpi-inject=on",
            DEBIAN,
            "sh",
            "-c",
            "echo $LD_LIBRARY_PATH; ldd /w/hello",
        ],
    );
    let out = stdout(&o);
    assert!(out.starts_with("/usr/lib/warren-mpi\n"), "{out}");
    assert!(
        out.contains("libmpi.so.40 => /usr/lib/warren-mpi/libmpi.so.40"),
        "{out}"
    );
    assert!(!out.contains("not found"), "{out}");
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn an_incompatible_image_mpi_is_refused_and_force_overrides() {
    need!(need_mpi(&[MPICH]));
    let e = need!(env(&inject_config()));
    compile(&e.dir, "hello");
    let o = run(&e, &["--mpi-inject=on", MPICH, "sh", "-c", SINGLETON]);
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("warren: the image's MPI, MPICH ABI (libmpich.so.12"),
        "{err}"
    );
    assert!(
        err.contains(
            "is not ABI-compatible with the host MPI to inject, Open MPI 4.1 (libmpi.so.40"
        ),
        "{err}"
    );
    assert!(err.contains("--mpi-inject=force"), "{err}");
    assert_eq!(stdout(&o), "", "the command must not run");
    // The site default works the same way.
    let site = Env::with_config(&format!("{}inject = \"on\"\n", inject_config()));
    compile(&site.dir, "hello");
    let o = run(&site, &[MPICH, "sh", "-c", SINGLETON]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let o = run(&site, &["--mpi-inject=off", MPICH, "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // force: injected anyway, with a notice; the host's Open MPI wins over the image's.
    let o = run(&e, &["--mpi-inject=force", MPICH, "sh", "-c", SINGLETON]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("rank 0 of 1"), "{}", stdout(&o));
}

#[test]
fn an_image_with_the_hosts_open_mpi_passes_the_check() {
    need!(need_mpi(&[OPENMPI]));
    let e = need!(env(&inject_config()));
    compile(&e.dir, "hello");
    let o = run(&e, &["--mpi-inject=on", OPENMPI, "sh", "-c", SINGLETON]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("rank 0 of 1"));
    assert_eq!(stderr(&o), "");
}

#[test]
fn bad_mpi_settings_are_one_line_errors() {
    need!(need_mpi(&[]));
    let cases = [
        (
            "[mpi]\ninject = \"maybe\"\n",
            &[][..],
            "mpi.inject: \"maybe\" is not one of off, on, force",
        ),
        (
            "[mpi]\nlibraries = [\"lib/rel.so\"]\n",
            &[][..],
            "must be an absolute path",
        ),
        (
            "[mpi]\nenv = [\"NOVALUE\"]\n",
            &[][..],
            "mpi.env: \"NOVALUE\" is not NAME=VALUE",
        ),
        (
            "",
            &["--mpi-inject=on"][..],
            "lists no libraries, directories or devices",
        ),
        (
            "[mpi]\nlibraries = [\"/nonexistent/libmpi.so.40\"]\n",
            &["--mpi-inject=on"][..],
            "mpi.libraries /nonexistent/libmpi.so.40: No such file or directory",
        ),
        (
            "[mpi]\ndevices = [\"/etc/hostname\"]\n",
            &["--mpi-inject=on"][..],
            "is not a device node",
        ),
    ];
    for (cfg, flags, want) in cases {
        let e = need!(env(cfg));
        let mut args = vec!["run", "-q"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[DEBIAN, "true"]);
        let o = e.run(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{cfg}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{cfg}: {err}");
    }
    let e = need!(env(""));
    let o = e.run(&["run", "-q", "--mpi-inject=yes", DEBIAN, "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("yes"), "{}", stderr(&o));
}

/// A stand-in for `/dev/infiniband/uverbs0`: a character device node (1,3: what
/// /dev/null is) outside /dev; usable inside only with device access on its bind.
#[test]
fn injected_devices_keep_device_access() {
    need!(need_mpi(&[DEBIAN]));
    let e = need!(env(""));
    let dev = e.path().join("infiniband");
    std::fs::create_dir(&dev).unwrap();
    let node = dev.join("uverbs0");
    let st = std::process::Command::new("mknod")
        .args(["-m", "0666"])
        .arg(&node)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success());
    e.write_config(&format!(
        "[mpi]\ndevices = [\"{}\"]\nenv = [\"WARREN_TEST_FABRIC=ib0\"]\n",
        dev.display()
    ));
    let check = format!(
        "echo x > {0} && test -c {0} && echo \"ok $WARREN_TEST_FABRIC\"",
        node.display()
    );
    let o = e.run(&["run", "-q", "--mpi-inject=on", DEBIAN, "sh", "-c", &check]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "ok ib0");
    // The same node through a plain -v bind has no device access (nodev).
    let v = format!("{}:{}", dev.display(), dev.display());
    let o = e.run(&["run", "-q", "-v", &v, DEBIAN, "sh", "-c", &check]);
    assert!(!o.status.success(), "{}", stdout(&o));
}

/// Stops the named holder when dropped.
struct Holder<'a>(&'a Env, &'static str);
impl Drop for Holder<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", self.1]);
    }
}

/// `mpirun -n 2 … warren run -q IMAGE ARGS…` as the test user, with Open MPI's
/// shared-memory transport and CMA single copy asked for.
fn mpirun(e: &Env, args: &[&str]) -> Output {
    let mut c = e.as_user("timeout");
    c.args([
        "120",
        "mpirun",
        "-n",
        "2",
        "--mca",
        "btl",
        "self,vader",
        "--mca",
        "btl_vader_single_copy_mechanism",
        "cma",
    ])
    .arg(support::warren_bin())
    .args(["run", "-q"])
    .args(args)
    .env("WARREN_CONFIG", e.config())
    .env("HOME", e.path());
    c.output().expect("mpirun")
}

#[test]
fn ranks_under_mpirun_share_shm_ipc_and_cross_memory_attach() {
    need!(need_mpi(&[OPENMPI]));
    let e = need!(env(""));
    e.ok(&["run", "-q", "--holder", "--name", "mpi-ranks", OPENMPI]);
    let _h = Holder(&e, "mpi-ranks");
    let o = mpirun(&e, &[OPENMPI, "mpi-nodeshare"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "cma ok\nsysv ok\ndevshm ok\n", "{}", stderr(&o));
    let o = mpirun(&e, &[OPENMPI, "mpi-pingpong", "200"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let lat: f64 = field(&out, "latency_us 8 ");
    let bw: f64 = field(&out, "bandwidth_mbs 1048576 ");
    assert!(lat > 0.0 && bw > 0.0, "{out}");
    // Open MPI says when CMA could not be used (and falls back): it must not.
    assert!(!stderr(&o).contains("single-copy"), "{}", stderr(&o));
}

fn field(out: &str, prefix: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in {out}"))
}
