//! MPI through warren's SPANK plugin on the three-node test cluster (scripts/slurm.sh,
//! mpi/pmix), as the test user (docs/mpi.md):
//! - PMIx: `srun -N 3 -n 6 --mpi=pmix --container-image=…/test/openmpi mpi-hello`: six
//!   distinct ranks of six on the three nodes, no PMIx error.
//! - PMI2: `PMI_FD` (a descriptor above 2) is open in the container and a PMI2 client
//!   (tests/fixtures/mpi/pmi2-init.sh) completes `init` and `fullinit` over it.
//! - ranks of a node share /dev/shm, System V IPC and cross-memory attach
//!   (`mpi-nodeshare` fails if `process_vm_readv` on the peer fails); a 2-rank
//!   ping-pong over Open MPI's shared-memory transport with CMA.
//! - the step's PMIx client directory is a bind mount in the container.
//! - host MPI injection: the host-built program in an image without MPI with
//!   `--container-mpi-inject=on`; an MPICH image refused in one line; `force` overrides.
mod mpi_support;
mod slurm_support;
mod support;

use mpi_support::{compile, inject_config, need_mpi, DEBIAN, MPICH, OPENMPI};
use slurm_support::Cluster;
use std::collections::BTreeSet;
use std::process::Output;
use support::{stderr, stdout};

fn cluster(images: &[&str]) -> Result<&'static Cluster, String> {
    need_mpi(images)?;
    slurm_support::cluster(false)
}

/// `srun ARGS` as the test user with Open MPI's transports `btl` (the simulated nodes
/// share one host name and /dev/shm, so ranks on different nodes must not use shared
/// memory: LAB.md), bounded in time.
fn srun(c: &Cluster, btl: &str, args: &[&str]) -> Output {
    let mut cmd = c.cmd("timeout", &["300", "srun"]);
    cmd.args(args).env("OMPI_MCA_btl", btl);
    cmd.output().expect("srun")
}

/// PMIx or Open MPI complaining (what a missing server directory looks like).
fn assert_no_pmix_errors(o: &Output) {
    let err = stderr(o);
    for bad in [
        "PMIX ERROR",
        "gds_ds12",
        "PMIx_Init failed",
        "ORTE_ERROR",
        "error",
    ] {
        assert!(!err.contains(bad), "{bad}: {err}");
    }
}

#[test]
fn pmix_wires_up_six_ranks_on_three_nodes() {
    let c = need!(cluster(&[OPENMPI]));
    let img = format!("--container-image={OPENMPI}");
    let o = srun(
        c,
        "self,tcp",
        &["-N", "3", "-n", "6", "--mpi=pmix", &img, "mpi-hello"],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_no_pmix_errors(&o);
    let out = stdout(&o);
    let mut ranks = BTreeSet::new();
    let mut nodes = BTreeSet::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(
            f.len() == 6 && f[0] == "rank" && f[2] == "of" && f[3] == "6",
            "{out}"
        );
        ranks.insert(f[1].parse::<u32>().unwrap());
        nodes.insert(f[5].to_string());
    }
    assert_eq!(ranks, (0..6).collect(), "{out}");
    assert_eq!(nodes, ["n1", "n2", "n3"].map(String::from).into(), "{out}");
}

/// The step's PMIx client directory (`PMIxCliTmpDirBase/spmix_appdir_UID_JOB.STEP`,
/// made by slurmstepd) is bound at its path: a mount point in the container.
#[test]
fn pmix_client_directory_is_the_steps() {
    let c = need!(cluster(&[OPENMPI]));
    let img = format!("--container-image={OPENMPI}");
    let o = srun(
        c,
        "self,tcp",
        &[
            "-N",
            "1",
            "-n",
            "1",
            "--mpi=pmix",
            &img,
            "sh",
            "-c",
            "d=/tmp/pmix-$SLURMD_NODENAME/spmix_appdir_$(id -u)_$SLURM_JOB_ID.$SLURM_STEP_ID; \
             test -d $d && awk -v d=$d '$5 == d {n++} END {print n+0}' /proc/self/mountinfo",
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "1\n", "{}", stderr(&o));
}

/// `--mpi=pmi2`: the server's socket (`PMI_FD`, above 2) reaches the task open, and a
/// PMI2 client speaks with Slurm's server over it from inside the container.
#[test]
fn pmi2_descriptor_stays_open_in_the_container() {
    let c = need!(cluster(&[OPENMPI]));
    let script = c.work.join("pmi2-init.sh");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mpi/pmi2-init.sh"),
        &script,
    )
    .unwrap();
    c.work.give(&script);
    let img = format!("--container-image={OPENMPI}");
    let mounts = format!("--container-mounts={0}:{0}:ro", c.work.path().display());
    let o = srun(
        c,
        "self,tcp",
        &[
            "-N",
            "1",
            "-n",
            "2",
            "--mpi=pmi2",
            &img,
            &mounts,
            "bash",
            script.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let mut ranks = BTreeSet::new();
    for l in out.lines() {
        let (fd, rest) = l.split_once(' ').unwrap();
        assert!(fd.parse::<u32>().unwrap() > 2, "{out}");
        assert!(
            rest.starts_with("cmd=response_to_init rc=0 pmi_version=2")
                && rest.contains("cmd=fullinit-response;rc=0;")
                && rest.contains(";size=2;"),
            "{out}"
        );
        let rank = rest
            .split(";rank=")
            .nth(1)
            .and_then(|r| r.split(';').next());
        ranks.insert(rank.unwrap().to_string());
    }
    assert_eq!(ranks, ["0", "1"].map(String::from).into(), "{out}");
}

#[test]
fn ranks_of_a_node_share_shm_ipc_and_cross_memory_attach() {
    let c = need!(cluster(&[OPENMPI]));
    let img = format!("--container-image={OPENMPI}");
    let o = srun(
        c,
        "self,vader",
        &["-N", "1", "-n", "2", "--mpi=pmix", &img, "mpi-nodeshare"],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "cma ok\nsysv ok\ndevshm ok\n", "{}", stderr(&o));
    assert_no_pmix_errors(&o);
}

#[test]
fn ping_pong_over_shared_memory_with_cma() {
    let c = need!(cluster(&[OPENMPI]));
    let img = format!("--container-image={OPENMPI}");
    let mut cmd = c.cmd("timeout", &["300", "srun"]);
    cmd.args([
        "-N",
        "1",
        "-n",
        "2",
        "--mpi=pmix",
        &img,
        "mpi-pingpong",
        "200",
    ])
    .env("OMPI_MCA_btl", "self,vader")
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "cma");
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    for prefix in ["latency_us 8 ", "bandwidth_mbs 1048576 "] {
        let v: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in {out}"));
        assert!(v > 0.0, "{out}");
    }
    assert_no_pmix_errors(&o);
}

/// `/etc/warren/warren.toml` (the file the plugin reads on the nodes) with the site's
/// `[mpi]` section for as long as it lives; only made when there is none.
struct SiteConfig;
const SITE: &str = "/etc/warren/warren.toml";
impl SiteConfig {
    fn install() -> Result<SiteConfig, String> {
        if std::path::Path::new(SITE).exists() {
            return Err(format!("{SITE} exists already; this test writes its own"));
        }
        std::fs::create_dir_all("/etc/warren").map_err(|e| e.to_string())?;
        let tmp = format!("{SITE}.mpi-test");
        std::fs::write(&tmp, inject_config()).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, SITE).map_err(|e| e.to_string())?;
        Ok(SiteConfig)
    }
}
impl Drop for SiteConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(SITE);
        let _ = std::fs::remove_dir("/etc/warren");
    }
}

#[test]
fn host_mpi_injection_under_slurm() {
    let c = need!(cluster(&[DEBIAN, MPICH]));
    let _site = need!(SiteConfig::install());
    let hello = compile(&c.work, "hello");
    let hello = hello.to_str().unwrap();
    let mounts = format!("--container-mounts={0}:{0}:ro", c.work.path().display());
    let run = |img: &str, inject: Option<&str>| {
        let img = format!("--container-image={img}");
        // One rank per node: Debian 12's Open MPI 4.1.4 once crashed a rank (a call
        // through a null pointer) while four ranks of two simulated nodes, all on one
        // address, connected over TCP at once; injection needs no more than two nodes.
        let mut a = vec!["-N", "2", "-n", "2", "--mpi=pmix", &img, &mounts];
        let opt;
        if let Some(m) = inject {
            opt = format!("--container-mpi-inject={m}");
            a.push(&opt);
        }
        a.push(hello);
        srun(c, "self,tcp", &a)
    };
    // Off by default: the image has no MPI, the program cannot load.
    let o = run(DEBIAN, None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("libmpi.so.40"), "{}", stderr(&o));
    let o = run(DEBIAN, Some("on"));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_no_pmix_errors(&o);
    let out = stdout(&o);
    let ranks: BTreeSet<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("rank "))
        .filter_map(|l| l.split_once(" of 2 on "))
        .map(|(r, _)| r)
        .collect();
    assert_eq!(ranks, ["0", "1"].into(), "{out}");
    // MPICH's ABI: refused on every node, one line each, the program never runs.
    let o = run(MPICH, Some("on"));
    assert!(!o.status.success());
    assert!(!stdout(&o).contains("rank"), "{}", stdout(&o));
    let refusal = stderr(&o)
        .lines()
        .find(|l| l.contains("is not ABI-compatible"))
        .map(String::from)
        .unwrap_or_else(|| panic!("no refusal in {}", stderr(&o)));
    assert!(
        refusal.contains("MPICH ABI (libmpich.so.12") && refusal.contains("Open MPI 4.1"),
        "{refusal}"
    );
    let o = run(MPICH, Some("force"));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
}
