//! warren's SPANK plugin with `shared_root=yes` on the three-node test cluster: pyxis's
//! one writable container root per node, shared by the node's tasks of a step (each
//! task still in its own mount namespace). Its own binary: the plugstack line differs
//! (tests/slurm_cluster.rs checks the default, one root per task).
mod slurm_support;
mod support;

use slurm_support::IMAGE;

#[test]
fn tasks_of_a_node_share_one_writable_root() {
    let c = need!(slurm_support::cluster_with(false, true));
    let seen = slurm_support::two_tasks_write_into_their_roots(c, IMAGE);
    // Each task sees both files: one root.
    assert!(seen.iter().all(|(n, _)| *n == 2), "{seen:?}");
    // Still a mount namespace per task.
    assert_ne!(seen[0].1, seen[1].1, "{seen:?}");
}
