//! What the site and the asked-for devices add to a container, gathered once per
//! container by a front end and applied to its `RunSpec`: CDI edits (`cdi_registry`),
//! `mounts.d`/`environ.d` drop-ins (`dropins`) and `hooks.d` hooks (`site_hooks`).
//!
//! Order (docs/hooks.md): binds after the user's `-v` ones (drop-ins, then CDI mounts,
//! then CDI device nodes); environment: image < host allowlist < environ.d < CDI env <
//! `--env-file` < `-e`; hooks per stage: site hooks (lexical file order), then CDI
//! hooks (spec order). Hooks without a timeout get `hooks.timeout_secs`.

use super::bundle::{Hook, HookSet};
use super::cdi::{self, Stage};
use super::cdi_registry::Registry;
use super::mounts::Bind;
use super::site_hooks;
pub use super::site_hooks::Container;
use super::spec::{RunOptions, RunSpec};
use super::{dropins, env, libguard};
use crate::config::{CdiConfig, HooksConfig};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Everything to add.
#[derive(Debug, Clone, Default)]
pub struct Injection {
    /// `K=V` (or `K`: the caller's value), in order.
    pub env: Vec<String>,
    pub binds: Vec<Bind>,
    pub hooks: HookSet,
    /// Told to the user (what a CDI spec asks for that cannot be done rootless).
    pub notices: Vec<String>,
    /// The libraries inside CDI's directory mounts, for the glibc guard
    /// (`RunSpec::guard_libs`).
    pub guard_libs: Vec<PathBuf>,
}

impl Injection {
    /// Any hook at all (the front end then runs the container through a start gate).
    pub fn has_hooks(&self) -> bool {
        let h = &self.hooks;
        [
            &h.prestart,
            &h.create_runtime,
            &h.create_container,
            &h.start_container,
            &h.poststart,
            &h.poststop,
        ]
        .iter()
        .any(|v| !v.is_empty())
    }
}

fn push(set: &mut HookSet, stage: Stage, mut h: Hook, default_timeout: u32) {
    h.timeout = Some(h.timeout.unwrap_or(default_timeout));
    match stage {
        Stage::Prestart => set.prestart.push(h),
        Stage::CreateRuntime => set.create_runtime.push(h),
        Stage::CreateContainer => set.create_container.push(h),
        Stage::StartContainer => set.start_container.push(h),
        Stage::Poststart => set.poststart.push(h),
        Stage::Poststop => set.poststop.push(h),
    }
}

/// Gather the injection for `container` (its first argument, annotations, whether it
/// has user bind mounts), asking for the CDI `devices` (`vendor/class=name`).
pub fn gather(
    cdi_cfg: &CdiConfig,
    hooks_cfg: &HooksConfig,
    devices: &[String],
    container: &Container,
) -> Result<Injection> {
    let mut inj = Injection::default();
    // Drop-ins.
    for f in dropins::files(&hooks_cfg.environ_dirs, "env") {
        let text = dropins::read(&f)?;
        for (n, l) in env::env_file_entries(&text) {
            // Checked like an --env-file line, with the file and line named.
            env::Env::default()
                .set_spec(l, &format!("{} line {n}", f.display()), |_| None)
                .map_err(anyhow::Error::from)?;
            inj.env.push(l.to_string());
        }
    }
    for f in dropins::files(&hooks_cfg.mounts_dirs, "fstab") {
        let text = dropins::read(&f)?;
        for m in dropins::parse_fstab(&f.display().to_string(), &text)? {
            match std::fs::canonicalize(&m.bind.source) {
                Ok(src) => inj.binds.push(Bind {
                    source: src,
                    ..m.bind
                }),
                Err(_) if m.optional => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "{}: mount source {} (add nofail to skip it when missing)",
                            f.display(),
                            m.bind.source.display()
                        )
                    })
                }
            }
        }
    }
    // Site hooks.
    for h in site_hooks::load(&hooks_cfg.dirs)? {
        if h.applies(container) {
            for s in &h.stages {
                push(&mut inj.hooks, *s, h.hook.clone(), hooks_cfg.timeout_secs);
            }
        }
    }
    // Plain device paths (podman's `--device /dev/X[:/dev/Y]`), then CDI devices.
    let (paths, names): (Vec<&String>, Vec<&String>) =
        devices.iter().partition(|d| d.starts_with('/'));
    for p in paths {
        inj.binds.push(device_path(p)?);
    }
    if !names.is_empty() {
        let requests = names
            .iter()
            .map(|d| cdi::parse_request(d).map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?;
        let edits = Registry::load(&cdi_cfg.spec_dirs).resolve(&requests)?;
        inj.env.extend(edits.env);
        for m in edits.mounts {
            if m.host_path.is_dir() {
                libguard::library_files(&m.host_path, &mut inj.guard_libs);
            }
            inj.binds.push(Bind {
                source: m.host_path,
                dest: m.container_path,
                read_only: m.read_only,
                device: false,
                noexec: m.noexec,
            });
        }
        for n in edits.nodes {
            inj.binds.push(Bind {
                source: n.host_path,
                dest: n.path,
                read_only: false,
                device: true,
                noexec: false,
            });
        }
        for (s, h) in edits.hooks {
            push(&mut inj.hooks, s, h, hooks_cfg.timeout_secs);
        }
        inj.notices.extend(
            edits
                .ignored
                .into_iter()
                .map(|i| format!("CDI {i}: not applied rootless")),
        );
    }
    Ok(inj)
}

/// `HOST[:CONTAINER]`: a host device node bound as it is (owner and mode stay the
/// host's), at the same path or at `CONTAINER`.
fn device_path(spec: &str) -> Result<Bind> {
    use std::os::unix::fs::FileTypeExt;
    let (host, inside) = spec.split_once(':').unwrap_or((spec, spec));
    let bad = || {
        anyhow::anyhow!("--device {spec:?}: expected /dev/HOST[:/dev/CONTAINER] (absolute paths without '..') or a CDI name vendor.com/class=name")
    };
    let dest = match super::mounts::container_path(inside) {
        Some(d) if d != std::path::Path::new("/") => d,
        _ => return Err(bad()),
    };
    if super::mounts::container_path(host).is_none() {
        return Err(bad());
    }
    let md = std::fs::metadata(host).with_context(|| format!("--device {host}"))?;
    let t = md.file_type();
    if !(t.is_char_device() || t.is_block_device()) {
        anyhow::bail!("--device {host}: not a device node");
    }
    Ok(Bind {
        source: host.into(),
        dest,
        read_only: false,
        device: true,
        noexec: false,
    })
}

/// `--annotation KEY=VALUE` (podman's): the pair, or why not.
pub fn parse_annotation(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => anyhow::bail!("--annotation {s:?}: expected KEY=VALUE with a non-empty KEY"),
    }
}

/// Add `inj`'s binds and environment to `spec`; `opts` are the caller's options, whose
/// `--env-file` and `-e` entries keep the last word.
pub fn apply(spec: &mut RunSpec, inj: &Injection, opts: &RunOptions) -> Result<()> {
    spec.binds.extend(inj.binds.iter().cloned());
    spec.guard_libs.extend(inj.guard_libs.iter().cloned());
    let host = spec.user.env.clone();
    let lookup = |k: &str| host.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    for e in &inj.env {
        spec.env.set_spec(e, "site environment", lookup)?;
    }
    for f in &opts.env_files {
        let text = env::read_env_file(f)?;
        for (n, l) in env::env_file_entries(&text) {
            spec.env
                .set_spec(l, &format!("--env-file line {n}"), lookup)?;
        }
    }
    for s in &opts.env {
        spec.env.set_spec(s, "-e", lookup)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn annotations() {
        let p = |s: &str| parse_annotation(s).map_err(|e| e.to_string());
        assert_eq!(p("a=b").unwrap(), ("a".into(), "b".into()));
        assert_eq!(p("a=").unwrap(), ("a".into(), String::new()));
        assert_eq!(p("k=v=w").unwrap(), ("k".into(), "v=w".into()));
        for bad in ["", "=v", "novalue", "a\0=b", "a=b\0"] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_annotation_never_panics_and_round_trips(s in ".{0,64}") {
            if let Ok((k, v)) = parse_annotation(&s) {
                prop_assert_eq!(format!("{k}={v}"), s);
                prop_assert!(!k.is_empty());
            }
        }
    }
}
