//! The PMIx (and PMI) wire-up a launcher hands a task, as seen from a container: which
//! host directories must be visible inside at the same path. Slurm's mpi/pmix and
//! Open MPI's mpirun put the PMIx server's rendezvous and shared-memory data stores in
//! a directory named by `PMIX_SERVER_TMPDIR` (Slurm: `SlurmdSpoolDir/pmix.JOB.STEP`;
//! mpirun: `/tmp/ompi.HOST.UID/pid.N`, which also holds the ranks' session directory);
//! a client that cannot see it fails with `gds_ds12_lock` errors. The URIs themselves
//! (`PMIX_SERVER_URI*`) are TCP on the host network, which containers share. Pure.
//! docs/mpi.md lists every variable and path.

/// Pure: the PMIx directories to bind at the same path (docs/mpi.md): the server's
/// directory (`PMIX_SERVER_TMPDIR`, Slurm's `SlurmdSpoolDir/pmix.JOB.STEP`, where its
/// usock rendezvous and shared-memory data stores live) and the data stores' directories
/// (`PMIX_DSTORE_*_BASE_PATH`) when they lie outside it. Each absolute, no `..`, no
/// character a bind spec cannot carry, not `/tmp` or `/` (the container keeps its own),
/// none inside another.
pub fn dirs(env: &[(String, String)]) -> Vec<String> {
    let pmix_path = |k: &str| {
        k == "PMIX_SERVER_TMPDIR" || (k.starts_with("PMIX_DSTORE_") && k.ends_with("_BASE_PATH"))
    };
    let mut dirs: Vec<String> = env
        .iter()
        .filter(|(k, v)| pmix_path(k) && v.starts_with('/'))
        // Slurm writes `DIR//pmix_dstor_…`: one slash between components.
        .map(|(_, v)| {
            let parts: Vec<&str> = v.split('/').filter(|c| !c.is_empty()).collect();
            format!("/{}", parts.join("/"))
        })
        .filter(|d| {
            d.len() > 1
                && d != "/tmp"
                && !d.contains(':')
                && !d.chars().any(|c| c.is_control())
                && !d.split('/').any(|c| c == ".." || c == ".")
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let all = dirs.clone();
    dirs.retain(|d| !all.iter().any(|o| d.starts_with(&format!("{o}/"))));
    dirs
}

/// Pure: where Slurm's mpi/pmix makes the PMIx clients' directory of a step (passed to
/// the clients as PMIx job data, not in the environment; Open MPI keeps its session
/// directory there): `BASE/spmix_appdir_UID_JOB.STEP` (Slurm 22.05 and later) and
/// `BASE/spmix_appdir_JOB.STEP` (earlier), `BASE` being `base` with `%n` replaced by the
/// node's name. None when a part is not what Slurm writes (decimal job and step, a
/// clean absolute base, a plain node name). The caller binds those that exist.
pub fn client_dirs(base: &str, node: &str, uid: u32, job: &str, step: &str) -> Vec<String> {
    let decimal = |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
    let plain_node = !node.is_empty()
        && node.len() <= 64
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && node != "."
        && node != "..";
    if !decimal(job) || !decimal(step) || (base.contains("%n") && !plain_node) {
        return vec![];
    }
    let base = base.replace("%n", node);
    let clean = base.starts_with('/')
        && !base.contains(':')
        && !base.chars().any(|c| c.is_control() || c == '%')
        && !base.split('/').any(|c| c == ".." || c == ".");
    if !clean {
        return vec![];
    }
    let base = base.trim_end_matches('/');
    vec![
        format!("{base}/spmix_appdir_{uid}_{job}.{step}"),
        format!("{base}/spmix_appdir_{job}.{step}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn client_dirs_as_slurm_names_them() {
        assert_eq!(
            client_dirs("/tmp/pmix-%n", "n1", 1001, "1782", "0"),
            [
                "/tmp/pmix-n1/spmix_appdir_1001_1782.0",
                "/tmp/pmix-n1/spmix_appdir_1782.0"
            ]
        );
        assert_eq!(
            client_dirs("/tmp/", "n1", 5, "7", "2")[1],
            "/tmp/spmix_appdir_7.2"
        );
        for (base, node, job, step) in [
            ("/tmp", "n1", "12a", "0"),
            ("/tmp", "n1", "1", ""),
            ("tmp", "n1", "1", "0"),
            ("/tmp/%n", "../x", "1", "0"),
            ("/a:b", "n1", "1", "0"),
            ("/t/../u", "n1", "1", "0"),
        ] {
            assert!(
                client_dirs(base, node, 1, job, step).is_empty(),
                "{base} {node}"
            );
        }
    }

    proptest! {
        /// Any input: absolute, clean, bindable paths or none.
        #[test]
        fn any_client_dir_input(base in "[/a-z%n.:]{0,16}", node in "[a-z0-9./%-]{0,8}", job in "[0-9a-z]{0,4}", step in "[0-9]{0,3}") {
            for d in client_dirs(&base, &node, 1001, &job, &step) {
                prop_assert!(d.starts_with('/') && !d.contains(':') && !d.contains('%'));
                prop_assert!(!d.split('/').any(|c| c == ".." || c == "."));
            }
        }

        /// Whatever the environment says: absolute, clean, bindable, none nested.
        #[test]
        fn any_environment(v in proptest::collection::vec(("PMIX_(SERVER_TMPDIR|DSTORE_[0-9A-Z]{1,3}_BASE_PATH|RANK)", "[/a-z.:]{0,24}"), 0..6)) {
            let d = dirs(&v);
            for x in &d {
                prop_assert!(x.starts_with('/') && x.len() > 1 && x != "/tmp");
                prop_assert!(!x.contains(':') && !x.contains("//"));
                prop_assert!(!x.split('/').any(|c| c == ".." || c == "."));
                let nested = d.iter().any(|o| x.starts_with(&format!("{}/", o)));
                prop_assert!(!nested);
            }
        }
    }

    #[test]
    fn pmix_directories() {
        let env = |v: &str| vec![("PMIX_SERVER_TMPDIR".to_string(), v.to_string())];
        assert_eq!(
            dirs(&env("/var/lib/slurm/slurmd-n1/pmix.1.0/")),
            ["/var/lib/slurm/slurmd-n1/pmix.1.0"]
        );
        for bad in ["rel/x", "/a:b", "/a/../b", "/", "/tmp/", "/a/./b"] {
            assert!(dirs(&env(bad)).is_empty(), "{bad}");
        }
        assert!(dirs(&[]).is_empty());
        // What Slurm 22.05's mpi/pmix sets: the data stores inside the server's dir are
        // covered by it; one elsewhere is bound too.
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        let slurm = [
            kv("PMIX_SERVER_TMPDIR", "/spool/pmix.7.0/"),
            kv(
                "PMIX_DSTORE_21_BASE_PATH",
                "/spool/pmix.7.0//pmix_dstor_ds21_9",
            ),
            kv("PMIX_DSTORE_ESH_BASE_PATH", "/dev/shm/pmix_dstor_ds12_9"),
            kv("PMIX_SYSTEM_TMPDIR", "/tmp"),
            kv("PMIX_SERVER_URI4", "pmix-server.9;tcp4://127.0.0.1:41149"),
        ];
        assert_eq!(
            dirs(&slurm),
            ["/dev/shm/pmix_dstor_ds12_9", "/spool/pmix.7.0"]
        );
    }
}
