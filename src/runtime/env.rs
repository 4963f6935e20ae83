//! The container's environment: image env, then the host variables allowed by
//! `run.env_allowlist`, then `--env-file`, then `-e`; later entries win. Pure.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// True when `name` matches an allowlist entry (exact, or `PREFIX*`).
pub fn allowed(name: &str, allowlist: &[String]) -> bool {
    allowlist.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == p,
    })
}

/// An ordered environment with unique names.
#[derive(Debug, Default, Clone)]
pub struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    /// Set (replacing an earlier value, keeping its position).
    pub fn set(&mut self, k: &str, v: &str) {
        match self.vars.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = v.to_string(),
            None => self.vars.push((k.to_string(), v.to_string())),
        }
    }

    /// Value of a variable.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// Set from `K=V` (a `K` alone takes the host's value, as `podman -e K` does).
    pub fn set_spec(&mut self, spec: &str, host: impl Fn(&str) -> Option<String>) -> Result<()> {
        let (k, v) = match spec.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (spec, host(spec)),
        };
        if k.is_empty() || k.contains('\0') {
            bail!("environment entry {spec:?}: empty or invalid name");
        }
        if let Some(v) = v {
            if v.contains('\0') {
                bail!("environment entry {k}: value contains a NUL byte");
            }
            self.set(k, &v);
        }
        Ok(())
    }

    /// `K=V` strings, in order.
    pub fn to_strings(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// Compose the environment. `host` is the host's environment.
pub fn compose(
    image_env: &[String],
    host: &[(String, String)],
    allowlist: &[String],
    env_files: &[String],
    cli: &[String],
) -> Result<Env> {
    let mut e = Env::default();
    for s in image_env {
        if let Some((k, v)) = s.split_once('=') {
            if !k.is_empty() {
                e.set(k, v);
            }
        }
    }
    for (k, v) in host {
        if allowed(k, allowlist) {
            e.set(k, v);
        }
    }
    let lookup = |k: &str| host.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    for text in env_files {
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            e.set_spec(l, lookup)?;
        }
    }
    for s in cli {
        e.set_spec(s, lookup)?;
    }
    Ok(e)
}

/// Read an `--env-file` (one `K=V` per line, `#` comments).
pub fn read_env_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("--env-file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_allowlist() {
        let host = vec![
            ("SLURM_JOB_ID".to_string(), "7".to_string()),
            ("SECRET".to_string(), "x".to_string()),
            ("PATH".to_string(), "/host/bin".to_string()),
            ("FROMHOST".to_string(), "h".to_string()),
        ];
        let allow = vec!["SLURM_*".to_string(), "TERM".to_string()];
        let e = compose(
            &["PATH=/bin".into(), "A=1".into()],
            &host,
            &allow,
            &["# c\nB=2\nA=3\n".into()],
            &["A=4".into(), "FROMHOST".into(), "MISSING".into()],
        )
        .unwrap();
        assert_eq!(
            e.to_strings(),
            ["PATH=/bin", "A=4", "SLURM_JOB_ID=7", "B=2", "FROMHOST=h"]
        );
        assert!(compose(&[], &[], &[], &[], &["=x".into()]).is_err());
    }
}
