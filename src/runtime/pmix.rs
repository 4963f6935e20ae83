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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
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
