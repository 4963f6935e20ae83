//! The plugstack arguments: parsed by the library (`warren::admin::doctor::slurm::plugstack`)
//! so that `warren doctor` and the plugin agree on what a valid line is.

pub use warren::admin::doctor::slurm::plugstack::*;

#[cfg(test)]
mod tests {
    /// The documented example line (slurm/plugstack.conf) is valid and uses every key.
    #[test]
    fn example_is_valid() {
        let text = include_str!("../plugstack.conf");
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .unwrap();
        let args: Vec<&str> = line.split_whitespace().skip(2).collect();
        super::parse(&args).unwrap();
        for key in [
            "warren",
            "runtime_path",
            "shared_store",
            "remap_root",
            "mount_home",
            "execute_entrypoint",
            "writable",
            "sbatch_support",
            "kernel_mount",
            "shared_root",
            "cdi_gpus",
            "mpi_inject",
            "pmix_appdir_base",
        ] {
            assert!(
                args.iter().any(|a| a.starts_with(&format!("{key}="))),
                "{key}"
            );
            assert!(text.contains(&format!("#   {key}=")), "{key} documented");
        }
        assert!(text.contains("#   store=PATH"));
    }
}
