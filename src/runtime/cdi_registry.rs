//! The CDI specs of this host and the devices a container asks for: read every
//! `*.json`/`*.yaml` file of the spec directories (in order; a later directory overrides
//! an earlier one for a device of the same name, as CDI's cache does), then resolve
//! requests (`vendor/class=name`, or `=all`) into one set of edits whose host paths
//! exist. Unknown, ambiguous (one name in two files of the same directory) and
//! conflicting devices, and a malformed file of the asked-for kind, are errors naming
//! what is wrong; malformed files of other vendors are left alone.

use super::cdi::{self, Edits, Request, Spec, SpecError};
use std::collections::BTreeSet;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Why the asked-for devices cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("CDI device {request}: no spec of kind {kind} in {dirs}")]
    UnknownKind {
        request: String,
        kind: String,
        dirs: String,
    },
    #[error("CDI device {request}: unknown (known: {known})")]
    UnknownDevice { request: String, known: String },
    #[error("CDI device {request}: defined in both {} and {} (same priority): ambiguous", a.display(), b.display())]
    Ambiguous {
        request: String,
        a: PathBuf,
        b: PathBuf,
    },
    #[error("CDI devices: {path} is given twice with different host paths ({a} and {b})")]
    Conflict { path: String, a: String, b: String },
    #[error("CDI device {request}: {what}")]
    Host { request: String, what: String },
}

/// The specs found, with their directory's priority (its index in the list).
#[derive(Debug, Default)]
pub struct Registry {
    specs: Vec<(usize, Spec)>,
    /// Files that did not parse: (priority, the kind they claim if readable, error).
    broken: Vec<(usize, Option<String>, SpecError)>,
    dirs: Vec<PathBuf>,
}

impl Registry {
    /// Read the spec directories (missing ones are fine: no devices there).
    pub fn load(dirs: &[PathBuf]) -> Registry {
        let mut r = Registry {
            dirs: dirs.to_vec(),
            ..Default::default()
        };
        for (prio, dir) in dirs.iter().enumerate() {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                // Regular files only (a FIFO would block the read).
                .filter(|p| cdi::is_spec_file(p) && p.is_file())
                .collect();
            files.sort();
            for f in files {
                match read_one(&f) {
                    Ok(s) => r.specs.push((prio, s)),
                    Err((kind, e)) => r.broken.push((prio, kind, e)),
                }
            }
        }
        r
    }

    /// Specs parsed from `(file, text)` pairs, one priority each.
    #[cfg(test)]
    fn from_texts(files: &[(&str, &str)]) -> Registry {
        let mut r = Registry::default();
        for (prio, (f, t)) in files.iter().enumerate() {
            match cdi::parse(Path::new(f), t) {
                Ok(s) => r.specs.push((prio, s)),
                Err(e) => r.broken.push((prio, cdi::claimed_kind(Path::new(f), t), e)),
            }
        }
        r
    }

    /// The edits of the asked-for devices, merged: each spec's own edits once, then each
    /// device's. Host paths of device nodes and mounts are checked to exist.
    pub fn resolve(&self, requests: &[Request]) -> Result<Edits, ResolveError> {
        let mut picked: Vec<(usize, Option<usize>)> = Vec::new(); // (spec, device)
        for r in requests {
            let text = format!("{}={}", r.kind, r.name);
            if let Some((_, _, e)) = self
                .broken
                .iter()
                .find(|(_, k, _)| k.as_deref().is_none_or(|k| k == r.kind))
            {
                return Err(e.clone().into());
            }
            let of_kind: Vec<usize> = (0..self.specs.len())
                .filter(|&i| self.specs[i].1.kind == r.kind)
                .collect();
            if of_kind.is_empty() {
                return Err(ResolveError::UnknownKind {
                    request: text,
                    kind: r.kind.clone(),
                    dirs: self
                        .dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            let names: BTreeSet<&str> = of_kind
                .iter()
                .flat_map(|&i| self.specs[i].1.devices.iter().map(|d| d.name.as_str()))
                .collect();
            let wanted: Vec<&str> = if r.name == "all" && !names.contains("all") {
                names.iter().copied().collect()
            } else if names.contains(r.name.as_str()) {
                vec![r.name.as_str()]
            } else {
                return Err(ResolveError::UnknownDevice {
                    request: text,
                    known: names.into_iter().collect::<Vec<_>>().join(", "),
                });
            };
            for name in wanted {
                let (s, d) = self.winner(&of_kind, name, &text)?;
                if !picked.contains(&(s, None)) {
                    picked.push((s, None));
                }
                if !picked.contains(&(s, Some(d))) {
                    picked.push((s, Some(d)));
                }
            }
        }
        let mut out = Edits::default();
        for (s, d) in picked {
            let spec = &self.specs[s].1;
            let (edits, request) = match d {
                None => (
                    &spec.edits,
                    format!("{} ({})", spec.kind, spec.file.display()),
                ),
                Some(d) => (
                    &spec.devices[d].edits,
                    format!("{}={}", spec.kind, spec.devices[d].name),
                ),
            };
            merge(&mut out, edits, &request)?;
        }
        Ok(out)
    }

    /// The spec and device index defining `name` with the highest priority.
    fn winner(
        &self,
        of_kind: &[usize],
        name: &str,
        request: &str,
    ) -> Result<(usize, usize), ResolveError> {
        let mut best: Option<(usize, usize, usize)> = None; // (prio, spec, device)
        for &i in of_kind {
            let (prio, spec) = &self.specs[i];
            let Some(d) = spec.devices.iter().position(|d| d.name == name) else {
                continue;
            };
            match best {
                Some((bp, bs, _)) if bp == *prio => {
                    return Err(ResolveError::Ambiguous {
                        request: request.into(),
                        a: self.specs[bs].1.file.clone(),
                        b: spec.file.clone(),
                    })
                }
                Some((bp, _, _)) if bp > *prio => {}
                _ => best = Some((*prio, i, d)),
            }
        }
        best.map(|(_, s, d)| (s, d))
            .ok_or_else(|| ResolveError::UnknownDevice {
                request: request.into(),
                known: String::new(),
            })
    }
}

/// Read and parse one spec file; on failure the kind it claims (when readable).
fn read_one(f: &Path) -> Result<Spec, (Option<String>, SpecError)> {
    let fail = |what: String| {
        (
            None,
            SpecError {
                file: f.to_path_buf(),
                what,
            },
        )
    };
    let md = std::fs::metadata(f).map_err(|e| fail(e.to_string()))?;
    if md.len() > cdi::MAX_SPEC_BYTES {
        return Err(fail(format!(
            "{} bytes is more than a spec file may have ({})",
            md.len(),
            cdi::MAX_SPEC_BYTES
        )));
    }
    let text = std::fs::read_to_string(f).map_err(|e| fail(e.to_string()))?;
    cdi::parse(f, &text).map_err(|e| (cdi::claimed_kind(f, &text), e))
}

/// Add `e` to `out`: the same container path twice is fine when it names the same host
/// path (nvidia-ctk lists /dev/nvidia0 under "0" and "all"), else a conflict. Host paths
/// must exist; device nodes must be device files (or FIFOs/sockets as typed).
fn merge(out: &mut Edits, e: &Edits, request: &str) -> Result<(), ResolveError> {
    let host = |what: String| ResolveError::Host {
        request: request.into(),
        what,
    };
    out.env.extend(e.env.iter().cloned());
    for n in &e.nodes {
        if let Some(o) = out.nodes.iter().find(|o| o.path == n.path) {
            if o.host_path != n.host_path {
                return Err(conflict(&n.path, &o.host_path, &n.host_path));
            }
            continue;
        }
        let md = std::fs::metadata(&n.host_path)
            .map_err(|err| host(format!("device node {}: {err}", n.host_path.display())))?;
        let t = md.file_type();
        if !(t.is_char_device() || t.is_block_device() || t.is_fifo() || t.is_socket()) {
            return Err(host(format!(
                "{} is not a device node",
                n.host_path.display()
            )));
        }
        out.nodes.push(n.clone());
    }
    for m in &e.mounts {
        if let Some(o) = out
            .mounts
            .iter()
            .find(|o| o.container_path == m.container_path)
        {
            if o.host_path != m.host_path {
                return Err(conflict(&m.container_path, &o.host_path, &m.host_path));
            }
            continue;
        }
        std::fs::symlink_metadata(&m.host_path)
            .map_err(|err| host(format!("mount source {}: {err}", m.host_path.display())))?;
        out.mounts.push(m.clone());
    }
    out.hooks.extend(e.hooks.iter().cloned());
    out.ignored
        .extend(e.ignored.iter().map(|i| format!("{request}: {i}")));
    Ok(())
}

fn conflict(path: &Path, a: &Path, b: &Path) -> ResolveError {
    ResolveError::Conflict {
        path: path.display().to_string(),
        a: a.display().to_string(),
        b: b.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cdi::parse_request;

    fn spec(kind: &str, devices: &[(&str, &str)]) -> String {
        let ds: Vec<String> = devices
            .iter()
            .map(|(n, node)| {
                format!(
                    r#"{{"name":"{n}","containerEdits":{{"env":["DEV_{n}=1"],"deviceNodes":[{{"path":"/dev/x{n}","hostPath":"{node}"}}]}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"cdiVersion":"0.6.0","kind":"{kind}","containerEdits":{{"env":["SPEC=1"]}},"devices":[{}]}}"#,
            ds.join(",")
        )
    }

    fn req(s: &str) -> Vec<Request> {
        s.split(' ').map(|r| parse_request(r).unwrap()).collect()
    }

    #[test]
    fn devices_all_and_spec_edits_once() {
        let a = spec("a.com/g", &[("0", "/dev/null"), ("1", "/dev/zero")]);
        let r = Registry::from_texts(&[("/etc/cdi/a.json", &a)]);
        let e = r.resolve(&req("a.com/g=1 a.com/g=0")).unwrap();
        assert_eq!(e.env, vec!["SPEC=1", "DEV_1=1", "DEV_0=1"]);
        let e = r.resolve(&req("a.com/g=all")).unwrap();
        assert_eq!(e.nodes.len(), 2);
        assert_eq!(e.env.iter().filter(|v| *v == "SPEC=1").count(), 1);
    }

    #[test]
    fn later_directories_override_same_directory_is_ambiguous() {
        let low = spec("a.com/g", &[("0", "/dev/null")]);
        let high = spec("a.com/g", &[("0", "/dev/zero")]);
        let r = Registry::from_texts(&[("/etc/cdi/a.json", &low), ("/var/run/cdi/a.json", &high)]);
        let e = r.resolve(&req("a.com/g=0")).unwrap();
        assert_eq!(e.nodes[0].host_path, Path::new("/dev/zero"));
        let mut r = Registry::from_texts(&[("/etc/cdi/a.json", &low)]);
        r.specs
            .push((0, cdi::parse(Path::new("/etc/cdi/b.json"), &high).unwrap()));
        let e = r.resolve(&req("a.com/g=0")).unwrap_err().to_string();
        assert!(
            e.contains("ambiguous") && e.contains("/etc/cdi/b.json"),
            "{e}"
        );
    }

    #[test]
    fn unknown_broken_missing_and_conflicting() {
        let a = spec("a.com/g", &[("0", "/dev/null")]);
        let r = Registry::from_texts(&[("/etc/cdi/a.json", &a)]);
        let e = r.resolve(&req("a.com/g=7")).unwrap_err().to_string();
        assert_eq!(e, "CDI device a.com/g=7: unknown (known: 0)");
        let e = r.resolve(&req("b.com/g=0")).unwrap_err().to_string();
        assert!(
            e.starts_with("CDI device b.com/g=0: no spec of kind b.com/g"),
            "{e}"
        );
        let broken = a.replace("0.6.0", "9");
        let r = Registry::from_texts(&[
            ("/etc/cdi/a.json", &broken),
            ("/etc/cdi/o.json", &spec("o.com/x", &[("0", "/dev/null")])),
        ]);
        let e = r.resolve(&req("a.com/g=0")).unwrap_err().to_string();
        assert!(e.starts_with("CDI spec /etc/cdi/a.json: cdiVersion"), "{e}");
        // Another vendor's broken file does not stop this one.
        assert!(r.resolve(&req("o.com/x=0")).is_ok());
        let gone = spec("a.com/g", &[("0", "/dev/warren-no-such")]);
        let r = Registry::from_texts(&[("/a.json", &gone)]);
        let e = r.resolve(&req("a.com/g=0")).unwrap_err().to_string();
        assert!(e.contains("/dev/warren-no-such"), "{e}");
        let file = spec("a.com/g", &[("0", "/etc/hostname")]);
        let r = Registry::from_texts(&[("/a.json", &file)]);
        let e = r.resolve(&req("a.com/g=0")).unwrap_err().to_string();
        assert!(e.contains("not a device node"), "{e}");
        let two = spec("a.com/g", &[("0", "/dev/null"), ("1", "/dev/zero")])
            .replace("/dev/x1", "/dev/x0");
        let r = Registry::from_texts(&[("/a.json", &two)]);
        let e = r.resolve(&req("a.com/g=all")).unwrap_err().to_string();
        assert!(e.contains("/dev/x0 is given twice"), "{e}");
    }

    #[test]
    fn load_reads_directories_in_order_and_skips_other_files() {
        let d = tempfile::tempdir().unwrap();
        let (lo, hi) = (d.path().join("etc"), d.path().join("run"));
        std::fs::create_dir_all(&lo).unwrap();
        std::fs::create_dir_all(&hi).unwrap();
        std::fs::write(lo.join("a.json"), spec("a.com/g", &[("0", "/dev/null")])).unwrap();
        std::fs::write(hi.join("a.yaml"), "cdiVersion: 0.5.0\nkind: a.com/g\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - {path: /dev/x0, hostPath: /dev/zero}\n").unwrap();
        std::fs::write(hi.join("README"), "not a spec").unwrap();
        let r = Registry::load(&[lo, hi, d.path().join("missing")]);
        let e = r.resolve(&req("a.com/g=0")).unwrap();
        assert_eq!(e.nodes[0].host_path, Path::new("/dev/zero"));
    }
}
