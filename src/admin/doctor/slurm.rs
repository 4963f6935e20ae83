//! SPANK plugin checks: warren's plugin listed in plugstack.conf (or an included file),
//! its .so present, and built for the running Slurm (`plugin_version` vs `slurmd -V`).

use super::{elf, Check, Options};
use std::path::{Path, PathBuf};

/// Where Slurm looks for relative plugin paths on common distributions.
const PLUGIN_DIRS: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/slurm-wlm",
    "/usr/lib64/slurm",
    "/usr/lib/slurm",
    "/usr/local/lib/slurm",
];

/// A plugstack line that names warren.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLine {
    /// The config file and 1-based line.
    pub conf: PathBuf,
    /// Line number.
    pub line: usize,
    /// `required` (slurmd refuses to start without it) or `optional`.
    pub required: bool,
    /// The .so as written.
    pub so: String,
    /// Resolved existing file.
    pub resolved: Option<PathBuf>,
    /// Its `plugin_version` symbol.
    pub version: Option<u32>,
}

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// plugstack.conf checked.
    pub plugstack: PathBuf,
    /// Whether it exists.
    pub conf_found: bool,
    /// Lines naming warren.
    pub lines: Vec<PluginLine>,
    /// `slurmd -V` (or `scontrol --version`) output, e.g. `slurm-wlm 22.05.8`.
    pub slurm: Option<String>,
}

/// `include` targets: a path whose file name may contain one `*`.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let p = Path::new(pattern);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((pre, post)) = name.split_once('*') else {
        return vec![p.to_path_buf()];
    };
    let dir = p.parent().unwrap_or(Path::new("/"));
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.starts_with(pre) && n.ends_with(post) && n.len() >= pre.len() + post.len()
                })
                .map(|n| dir.join(n))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn scan(conf: &Path, depth: usize, out: &mut Vec<PluginLine>) {
    let Ok(text) = std::fs::read_to_string(conf) else {
        return;
    };
    for (i, raw) in text.lines().enumerate() {
        let t = raw.split('#').next().unwrap_or("").trim();
        let mut w = t.split_whitespace();
        match (w.next(), w.next()) {
            (Some("include"), Some(pat)) if depth < 4 => {
                for f in expand(pat) {
                    scan(&f, depth + 1, out);
                }
            }
            (Some(kind @ ("required" | "optional")), Some(so)) if so.contains("warren") => {
                let resolved = if so.starts_with('/') {
                    Some(PathBuf::from(so)).filter(|p| p.is_file())
                } else {
                    PLUGIN_DIRS
                        .iter()
                        .map(|d| Path::new(d).join(so))
                        .find(|p| p.is_file())
                };
                let version = resolved
                    .as_ref()
                    .and_then(|p| std::fs::read(p).ok())
                    .and_then(|b| elf::u32_symbol(&b, "plugin_version"));
                out.push(PluginLine {
                    conf: conf.to_path_buf(),
                    line: i + 1,
                    required: kind == "required",
                    so: so.to_string(),
                    resolved,
                    version,
                });
            }
            _ => {}
        }
    }
}

/// Read the facts.
pub fn gather(opts: &Options) -> Facts {
    let mut lines = Vec::new();
    scan(&opts.plugstack, 0, &mut lines);
    // slurmd on compute nodes; scontrol on login nodes (it needs a reachable config).
    let slurm = [("slurmd", "-V"), ("scontrol", "--version")]
        .iter()
        .find_map(|(prog, arg)| {
            let p = crate::util::which(prog)?;
            let o = std::process::Command::new(p)
                .arg(arg)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            version_number(&s).map(|_| s)
        });
    Facts {
        plugstack: opts.plugstack.clone(),
        conf_found: opts.plugstack.is_file(),
        lines,
        slurm,
    }
}

/// `slurm-wlm 22.05.8` → `0x160508` (SLURM_VERSION_NUMBER).
pub fn version_number(s: &str) -> Option<u32> {
    let v = s
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let (a, b, c): (u32, u32, u32) = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next().unwrap_or("0").parse().ok()?,
    );
    Some(a << 16 | b << 8 | c)
}

fn show(v: u32) -> String {
    format!("{}.{:02}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// Judge the facts.
pub fn judge(f: &Facts) -> Vec<Check> {
    let conf = f.plugstack.display();
    let install = format!(
        "as root: install the warren SPANK plugin (.so) and list it: echo 'optional /usr/lib/x86_64-linux-gnu/slurm-wlm/spank_warren.so' > {}.d/warren.conf   (use `required` only once it is installed on every node: slurmd refuses to start without a required plugin)",
        conf
    );
    if f.slurm.is_none() && !f.conf_found {
        return vec![Check::warn(
            "spank_plugin",
            "not installed (no slurmd and no plugstack.conf on this node)",
            install,
        )];
    }
    let Some(l) = f.lines.first() else {
        return vec![Check::warn(
            "spank_plugin",
            format!("not installed: {conf} (and its includes) does not mention warren"),
            install,
        )];
    };
    let at = format!("{}:{}", l.conf.display(), l.line);
    let Some(so) = &l.resolved else {
        let why = if l.required {
            " and it is `required`: slurmd will refuse to start"
        } else {
            ""
        };
        return vec![Check::fail(
            "spank_plugin",
            format!("{at} lists {} but the file does not exist{why}", l.so),
            format!(
                "install {} on this node, or remove the line from {}",
                l.so,
                l.conf.display()
            ),
        )];
    };
    let running = f.slurm.as_deref().and_then(version_number);
    match (l.version, running) {
        (None, _) => vec![Check::warn("spank_plugin", format!("{} ({at}) has no readable plugin_version symbol", so.display()), "rebuild the plugin from warren's sources against this Slurm's headers")],
        (Some(v), None) => vec![Check::warn("spank_plugin", format!("{} built for Slurm {}; slurmd not found to compare", so.display(), show(v)), "run doctor on a compute node with slurmd installed")],
        (Some(v), Some(r)) if v >> 8 != r >> 8 => vec![Check::fail("spank_plugin",
            format!("{} was built for Slurm {} but this node runs {}: Slurm will refuse to load it", so.display(), show(v), show(r)),
            "rebuild the SPANK plugin against this node's Slurm headers (libslurm-dev / slurm-devel) and reinstall it")],
        (Some(v), Some(r)) => vec![Check::ok("spank_plugin", format!("{} ({at}) built for Slurm {}, running {}", so.display(), show(v), show(r)))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::doctor::Status;

    #[test]
    fn versions() {
        assert_eq!(version_number("slurm-wlm 22.05.8"), Some(0x160508));
        assert_eq!(version_number("slurm 23.11.1"), Some(0x170b01));
        assert_eq!(version_number("nothing"), None);
    }

    #[test]
    fn judges_install_states() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("plugstack.conf");
        std::fs::create_dir(d.path().join("plugstack.conf.d")).unwrap();
        std::fs::write(
            &conf,
            "include ".to_string()
                + d.path().join("plugstack.conf.d/*.conf").to_str().unwrap()
                + "\n",
        )
        .unwrap();
        let opts = Options {
            plugstack: conf.clone(),
            ..Options::default()
        };
        let mut f = gather(&opts);
        f.slurm = Some("slurm-wlm 22.05.8".into());
        let c = &judge(&f)[0];
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.starts_with("not installed"), "{}", c.detail);
        // Listed (required) but missing.
        std::fs::write(
            d.path().join("plugstack.conf.d/warren.conf"),
            "required /nonexistent/spank_warren.so\n",
        )
        .unwrap();
        let mut f = gather(&opts);
        f.slurm = Some("slurm-wlm 22.05.8".into());
        let c = &judge(&f)[0];
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("refuse to start"));
        // A real Slurm plugin stands in for warren's: version compared against slurmd.
        let real = "/usr/lib/x86_64-linux-gnu/slurm-wlm/proctrack_linuxproc.so";
        if Path::new(real).exists() {
            let so = d.path().join("spank_warren.so");
            std::fs::copy(real, &so).unwrap();
            std::fs::write(
                d.path().join("plugstack.conf.d/warren.conf"),
                format!("optional {}\n", so.display()),
            )
            .unwrap();
            let mut f = gather(&opts);
            f.slurm = Some("slurm-wlm 22.05.8".into());
            assert_eq!(judge(&f)[0].status, Status::Ok, "{:?}", judge(&f));
            f.slurm = Some("slurm 23.11.1".into());
            assert_eq!(judge(&f)[0].status, Status::Fail);
        }
    }
}
