//! `plugin_version` must equal the running Slurm's `SLURM_VERSION_NUMBER`, or Slurm
//! refuses to load the plugin: read it from the installed `slurm/slurm_version.h`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    let dirs: Vec<PathBuf> = match std::env::var_os("SLURM_INCLUDE_DIR") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec!["/usr/include".into(), "/usr/local/include".into()],
    };
    let Some(header) = dirs
        .iter()
        .map(|d| d.join("slurm/slurm_version.h"))
        .find(|p| p.is_file())
    else {
        panic!(
            "warren-slurm: slurm/slurm_version.h not found in {:?}: install Slurm's headers \
             (Debian: libslurm-dev, RHEL: slurm-devel) or set SLURM_INCLUDE_DIR",
            dirs
        );
    };
    println!("cargo:rerun-if-changed={}", header.display());
    let text = std::fs::read_to_string(&header)
        .unwrap_or_else(|e| panic!("warren-slurm: read {}: {e}", header.display()));
    let Some(version) = text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("#define"), Some("SLURM_VERSION_NUMBER"), Some(v)) => {
                u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()
            }
            _ => None,
        }
    }) else {
        panic!(
            "warren-slurm: no `#define SLURM_VERSION_NUMBER 0x...` in {}",
            header.display()
        );
    };
    println!("cargo:rustc-env=WARREN_SLURM_VERSION_NUMBER={version}");
}
