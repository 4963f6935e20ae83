//! Container Device Interface (CDI) spec files: parse and check one file (JSON or YAML,
//! cdiVersion 0.3.0 – 1.0.x) into typed, validated edits. Pure: no file system access
//! beyond what the caller hands in; finding the files and choosing devices is
//! `cdi_registry`, turning edits into binds and hooks is `inject`.
//!
//! A spec is external, possibly hostile input: every path must be absolute, container
//! paths are normalized and must not hold `..` (mounts are then made with
//! `openat2(RESOLVE_IN_ROOT)`, so nothing can land outside the root either way), names
//! follow the CDI grammar, and anything warren cannot honour rootless is either refused
//! (non-bind mount types) or reported as a notice (fileMode/uid/gid of device nodes,
//! additionalGids, intelRdt, netDevices).

use super::bundle::Hook;
use super::mounts::container_path;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A spec file that cannot be used: the file and what is wrong, one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CDI spec {}: {what}", file.display())]
pub struct SpecError {
    pub file: PathBuf,
    pub what: String,
}

/// OCI hook stages a CDI hook may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Stage {
    /// The OCI name (`createRuntime`, …); `None` for an unknown one.
    pub fn parse(s: &str) -> Option<Stage> {
        Some(match s {
            "prestart" => Stage::Prestart,
            "createRuntime" => Stage::CreateRuntime,
            "createContainer" => Stage::CreateContainer,
            "startContainer" => Stage::StartContainer,
            "poststart" => Stage::Poststart,
            "poststop" => Stage::Poststop,
            _ => return None,
        })
    }
}

/// A device node to make visible: bound from `host_path` (rootless: no mknod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: PathBuf,
    pub host_path: PathBuf,
}

/// A bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub read_only: bool,
    pub noexec: bool,
}

/// Checked `containerEdits`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// `K=V`, in order.
    pub env: Vec<String>,
    pub nodes: Vec<Node>,
    pub mounts: Vec<Mount>,
    pub hooks: Vec<(Stage, Hook)>,
    /// What the spec asks for that warren cannot do rootless (told, not fatal).
    pub ignored: Vec<String>,
}

/// One device of a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub edits: Edits,
}

/// One checked spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub file: PathBuf,
    /// `vendor/class`.
    pub kind: String,
    pub devices: Vec<Device>,
    /// Edits applied once when any device of this spec is asked for.
    pub edits: Edits,
}

// The wire format (field names as in the CDI spec; unknown fields are ignored, as the
// reference implementation does, so newer minor versions still load).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecJson {
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Option<Vec<DeviceJson>>,
    #[serde(default)]
    container_edits: Option<EditsJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceJson {
    name: String,
    #[serde(default)]
    container_edits: Option<EditsJson>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EditsJson {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    device_nodes: Option<Vec<NodeJson>>,
    #[serde(default)]
    hooks: Option<Vec<HookJson>>,
    #[serde(default)]
    mounts: Option<Vec<MountJson>>,
    #[serde(default, rename = "intelRdt")]
    intel_rdt: Option<IgnoredAny>,
    #[serde(default, rename = "additionalGIDs")]
    additional_gids: Option<Vec<u32>>,
    #[serde(default)]
    net_devices: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeJson {
    path: String,
    #[serde(default)]
    host_path: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    major: Option<i64>,
    #[serde(default)]
    minor: Option<i64>,
    #[serde(default)]
    file_mode: Option<u32>,
    #[serde(default)]
    permissions: Option<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MountJson {
    host_path: String,
    container_path: String,
    #[serde(default)]
    options: Option<Vec<String>>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookJson {
    hook_name: String,
    path: String,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    timeout: Option<i64>,
}

/// Just the kind, to tell which vendor a malformed file was meant for.
#[derive(Deserialize)]
struct KindOnly {
    kind: String,
}

/// Is `file` a spec file by its name (`.json`, `.yaml`, `.yml`)?
pub fn is_spec_file(file: &Path) -> bool {
    matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("json" | "yaml" | "yml")
    )
}

/// The `kind` a file claims, if it parses that far (for naming a broken file's vendor).
pub fn claimed_kind(file: &Path, text: &str) -> Option<String> {
    let k: KindOnly = if is_json(file) {
        serde_json::from_str(text).ok()?
    } else {
        serde_yaml::from_str(text).ok()?
    };
    Some(k.kind)
}

fn is_json(file: &Path) -> bool {
    file.extension().and_then(|e| e.to_str()) == Some("json")
}

/// Largest spec file read (nvidia-ctk's are ~100 KiB).
pub const MAX_SPEC_BYTES: u64 = 4 << 20;

/// Parse and check the text of spec file `file`.
pub fn parse(file: &Path, text: &str) -> Result<Spec, SpecError> {
    let fail = |what: String| SpecError {
        file: file.to_path_buf(),
        what,
    };
    let raw: SpecJson = if is_json(file) {
        serde_json::from_str(text).map_err(|e| fail(one_line(&e.to_string())))?
    } else {
        serde_yaml::from_str(text).map_err(|e| fail(one_line(&e.to_string())))?
    };
    check_version(&raw.cdi_version).map_err(fail)?;
    check_kind(&raw.kind).map_err(fail)?;
    let common = edits(raw.container_edits.unwrap_or_default()).map_err(fail)?;
    let raw_devices = raw.devices.unwrap_or_default();
    if raw_devices.is_empty() {
        return Err(fail("no devices".into()));
    }
    let mut devices: Vec<Device> = Vec::with_capacity(raw_devices.len());
    for d in raw_devices {
        if !device_name_ok(&d.name) {
            return Err(fail(format!(
                "device name {:?} is not valid (letters, digits, '-', '_', '.', ':'; starting and ending with a letter or digit)",
                d.name
            )));
        }
        if devices.iter().any(|x| x.name == d.name) {
            return Err(fail(format!("device {:?} is defined twice", d.name)));
        }
        let Some(e) = d.container_edits else {
            return Err(fail(format!("device {:?} has no containerEdits", d.name)));
        };
        let e = edits(e).map_err(|w| fail(format!("device {:?}: {w}", d.name)))?;
        devices.push(Device {
            name: d.name,
            edits: e,
        });
    }
    Ok(Spec {
        file: file.to_path_buf(),
        kind: raw.kind,
        devices,
        edits: common,
    })
}

/// A parser's message on one line (serde_yaml's can span several).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// cdiVersion: semantic version 0.3.0 – 0.8.x or 1.0.x (older files use other field
/// names).
fn check_version(v: &str) -> Result<(), String> {
    let parts: Vec<&str> = v.split('.').collect();
    let num = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let ok = match parts.as_slice() {
        [a, b, c] => match (num(a), num(b), num(c)) {
            (Some(0), Some(minor), Some(_)) => (3..=8).contains(&minor),
            (Some(1), Some(0), Some(_)) => true,
            _ => false,
        },
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "cdiVersion {v:?} is not supported (0.3.0 to 0.8.x, or 1.0.x)"
        ))
    }
}

/// `vendor/class`: vendor is letters, digits, '-', '_', '.' starting with a letter and
/// ending with a letter or digit; class the same without '.'.
pub fn check_kind(kind: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "kind {kind:?} is not vendor/class (e.g. nvidia.com/gpu)"
        ))
    };
    let Some((vendor, class)) = kind.split_once('/') else {
        return bad();
    };
    let part = |s: &str, extra: &[u8]| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 253
            && b[0].is_ascii_alphabetic()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_' || extra.contains(c))
    };
    if part(vendor, b".") && part(class, b"") {
        Ok(())
    } else {
        bad()
    }
}

/// A device name: letters, digits, '-', '_', '.', ':', starting and ending with a letter
/// or digit (nvidia-ctk uses "0", "GPU-<uuid>", "all").
pub fn device_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// A host path: absolute, no NUL, no `..` (a spec has no business walking up).
fn host_path(what: &str, p: &str) -> Result<PathBuf, String> {
    if container_path(p).is_none() {
        return Err(format!(
            "{what} {p:?} must be an absolute path without '..'"
        ));
    }
    Ok(PathBuf::from(p))
}

/// A path inside the container: absolute, normalized, not `/`.
fn inside_path(what: &str, p: &str) -> Result<PathBuf, String> {
    match container_path(p) {
        Some(d) if d != Path::new("/") => Ok(d),
        Some(_) => Err(format!(
            "{what} {p:?}: the container's root cannot be replaced"
        )),
        None => Err(format!(
            "{what} {p:?} must be an absolute path without '..'"
        )),
    }
}

fn check_env(e: &str) -> Result<(), String> {
    match e.split_once('=') {
        Some((k, _)) if !k.is_empty() && !e.contains('\0') => Ok(()),
        _ => Err(format!("env entry {e:?} is not NAME=VALUE")),
    }
}

/// Mount options warren understands; the rest are refused (hostile input is not guessed
/// at). Propagation and atime options are accepted and have no effect on a bind.
fn mount_option(o: &str, m: &mut Mount) -> Result<(), String> {
    match o {
        "ro" | "rro" => m.read_only = true,
        "rw" | "rrw" => m.read_only = false,
        "noexec" => m.noexec = true,
        "exec" => m.noexec = false,
        "bind" | "rbind" | "nosuid" | "nodev" | "private" | "rprivate" | "slave" | "rslave"
        | "shared" | "rshared" | "unbindable" | "runbindable" | "relatime" | "norelatime"
        | "noatime" | "nodiratime" | "strictatime" | "z" | "Z" => {}
        other => return Err(format!("mount option {other:?} is not supported")),
    }
    Ok(())
}

fn edits(e: EditsJson) -> Result<Edits, String> {
    let mut out = Edits::default();
    for v in e.env.unwrap_or_default() {
        check_env(&v)?;
        out.env.push(v);
    }
    for n in e.device_nodes.unwrap_or_default() {
        let path = inside_path("deviceNodes path", &n.path)?;
        let host = match &n.host_path {
            Some(h) if !h.is_empty() => host_path("deviceNodes hostPath", h)?,
            _ => host_path("deviceNodes path", &n.path)?,
        };
        match n.kind.as_deref() {
            None | Some("" | "c" | "b" | "u" | "p") => {}
            Some(t) => {
                return Err(format!(
                    "deviceNodes {:?}: type {t:?} is not c, b, u or p",
                    n.path
                ))
            }
        }
        if let Some(p) = &n.permissions {
            if p.is_empty() || !p.chars().all(|c| "rwm".contains(c)) {
                return Err(format!(
                    "deviceNodes {:?}: permissions {p:?} is not made of r, w, m",
                    n.path
                ));
            }
        }
        if n.file_mode.is_some()
            || n.uid.is_some()
            || n.gid.is_some()
            || n.major.is_some()
            || n.minor.is_some()
        {
            out.ignored.push(format!(
                "{}: major/minor/fileMode/uid/gid (the host's node is bound as it is)",
                n.path
            ));
        }
        out.nodes.push(Node {
            path,
            host_path: host,
        });
    }
    for m in e.mounts.unwrap_or_default() {
        match m.kind.as_deref() {
            None | Some("" | "bind" | "rbind") => {}
            Some(t) => {
                return Err(format!(
                    "mount on {:?}: type {t:?} is not supported (rootless: bind mounts only)",
                    m.container_path
                ))
            }
        }
        let mut mount = Mount {
            host_path: host_path("mounts hostPath", &m.host_path)?,
            container_path: inside_path("mounts containerPath", &m.container_path)?,
            read_only: false,
            noexec: false,
        };
        for o in m.options.unwrap_or_default() {
            mount_option(&o, &mut mount)
                .map_err(|w| format!("mount on {:?}: {w}", m.container_path))?;
        }
        out.mounts.push(mount);
    }
    for h in e.hooks.unwrap_or_default() {
        let Some(stage) = Stage::parse(&h.hook_name) else {
            return Err(format!(
                "hook {:?}: hookName {:?} is not an OCI hook stage",
                h.path, h.hook_name
            ));
        };
        let path = host_path("hook path", &h.path)?;
        let env = h.env.unwrap_or_default();
        for v in &env {
            check_env(v).map_err(|w| format!("hook {:?}: {w}", h.path))?;
        }
        let timeout = match h.timeout {
            None => None,
            Some(t) if t > 0 => Some(u32::try_from(t).unwrap_or(u32::MAX)),
            Some(t) => {
                return Err(format!(
                    "hook {:?}: timeout {t} must be greater than zero",
                    h.path
                ))
            }
        };
        out.hooks.push((
            stage,
            Hook {
                path,
                args: h.args.unwrap_or_default(),
                env,
                timeout,
            },
        ));
    }
    if e.additional_gids.is_some_and(|g| !g.is_empty()) {
        out.ignored
            .push("additionalGIDs (groups outside the user namespace cannot be added)".into());
    }
    if e.intel_rdt.is_some() {
        out.ignored.push("intelRdt (resctrl needs root)".into());
    }
    if e.net_devices.is_some() {
        out.ignored
            .push("netDevices (the container shares the host's network)".into());
    }
    Ok(out)
}

/// A device request `vendor/class=name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: String,
    pub name: String,
}

/// Parse `vendor.com/class=name` (what `--device` takes).
pub fn parse_request(s: &str) -> Result<Request, String> {
    let Some((kind, name)) = s.split_once('=') else {
        return Err(format!(
            "device {s:?} is not a CDI name vendor.com/class=name (e.g. nvidia.com/gpu=0, or =all)"
        ));
    };
    check_kind(kind).map_err(|e| format!("device {s:?}: {e}"))?;
    if !device_name_ok(name) {
        return Err(format!("device {s:?}: {name:?} is not a valid device name"));
    }
    Ok(Request {
        kind: kind.into(),
        name: name.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = r#"{
      "cdiVersion": "0.6.0", "kind": "example.com/gpu",
      "containerEdits": {"env": ["A=1"], "deviceNodes": [{"path": "/dev/ctl"}]},
      "devices": [
        {"name": "0", "containerEdits": {
          "deviceNodes": [{"path": "/dev/g0", "hostPath": "/dev/null", "type": "c", "permissions": "rw"}],
          "mounts": [{"hostPath": "/usr/lib/x", "containerPath": "/usr/lib/./x", "options": ["ro", "nosuid", "nodev", "bind", "noexec"]}],
          "hooks": [{"hookName": "createContainer", "path": "/bin/true", "args": ["true", "x"], "timeout": 5}]
        }}
      ]}"#;

    fn p(name: &str, text: &str) -> Result<Spec, SpecError> {
        parse(Path::new(name), text)
    }

    #[test]
    fn a_good_spec() {
        let s = p("/etc/cdi/x.json", GOOD).unwrap();
        assert_eq!(s.kind, "example.com/gpu");
        assert_eq!(s.edits.env, vec!["A=1"]);
        assert_eq!(s.edits.nodes[0].host_path, Path::new("/dev/ctl"));
        let d = &s.devices[0];
        assert_eq!(
            d.edits.nodes[0],
            Node {
                path: "/dev/g0".into(),
                host_path: "/dev/null".into()
            }
        );
        assert_eq!(
            d.edits.mounts[0],
            Mount {
                host_path: "/usr/lib/x".into(),
                container_path: "/usr/lib/x".into(),
                read_only: true,
                noexec: true
            }
        );
        assert_eq!(d.edits.hooks[0].0, Stage::CreateContainer);
        assert_eq!(d.edits.hooks[0].1.timeout, Some(5));
    }

    #[test]
    fn yaml_too() {
        let y = "cdiVersion: 0.5.0\nkind: example.com/gpu\ndevices:\n- name: all\n  containerEdits:\n    env: [B=2]\n";
        let s = p("/etc/cdi/x.yaml", y).unwrap();
        assert_eq!(s.devices[0].edits.env, vec!["B=2"]);
    }

    #[test]
    fn the_nvidia_shaped_fixture_parses() {
        let f = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cdi/nvidia.yaml"
        );
        let s = p(f, &std::fs::read_to_string(f).unwrap()).unwrap();
        assert_eq!(s.kind, "nvidia.com/gpu");
        let names: Vec<_> = s.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names[0], "0");
        assert!(names.contains(&"all"));
        assert!(s
            .edits
            .hooks
            .iter()
            .all(|(st, h)| *st == Stage::CreateContainer
                && h.path == Path::new("/usr/bin/nvidia-cdi-hook")));
        assert!(s
            .edits
            .mounts
            .iter()
            .any(|m| m.container_path == Path::new("/usr/bin/nvidia-smi") && m.read_only));
    }

    #[test]
    fn bad_specs_name_the_file_and_the_problem() {
        let cases = [
            (GOOD.replace("0.6.0", "0.2.0"), "cdiVersion \"0.2.0\""),
            (GOOD.replace("example.com/gpu", "gpu"), "kind \"gpu\""),
            (GOOD.replace("\"/dev/g0\"", "\"dev/g0\""), "absolute"),
            (
                GOOD.replace("/usr/lib/./x", "/usr/../../etc"),
                "without '..'",
            ),
            (GOOD.replace("/usr/lib/./x", "/"), "root cannot be replaced"),
            (
                GOOD.replace("\"noexec\"", "\"suid\""),
                "mount option \"suid\"",
            ),
            (
                GOOD.replace("createContainer", "whenever"),
                "hookName \"whenever\"",
            ),
            (
                GOOD.replace("\"timeout\": 5", "\"timeout\": 0"),
                "greater than zero",
            ),
            (GOOD.replace("\"A=1\"", "\"=1\""), "NAME=VALUE"),
            (
                GOOD.replace("\"name\": \"0\"", "\"name\": \"-x\""),
                "device name",
            ),
            (
                GOOD.replace("\"type\": \"c\"", "\"type\": \"q\""),
                "type \"q\"",
            ),
            (GOOD.replace("\"rw\"", "\"rx\""), "permissions"),
            ("{".into(), "EOF"),
        ];
        for (text, want) in cases {
            let e = p("/etc/cdi/bad.json", &text).unwrap_err().to_string();
            assert!(e.starts_with("CDI spec /etc/cdi/bad.json: "), "{e}");
            assert!(e.contains(want), "{want:?} not in {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let two = GOOD.replace(
            "\"devices\": [",
            "\"devices\": [{\"name\": \"0\", \"containerEdits\": {}},",
        );
        assert!(p("/x.json", &two)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let e = p("/x.yaml", "cdiVersion: 0.5.0\nkind: a.b/c\ndevices: []\n").unwrap_err();
        assert!(e.to_string().contains("no devices"), "{e}");
        let e = p("/x.yaml", "cdiVersion: [\n").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn rootless_limits_are_told() {
        let t = GOOD.replace(
            "\"env\": [\"A=1\"]",
            "\"env\": [\"A=1\"], \"additionalGIDs\": [5], \"intelRdt\": {\"closID\": \"x\"}",
        );
        let s = p("/x.json", &t).unwrap();
        assert_eq!(s.edits.ignored.len(), 2, "{:?}", s.edits.ignored);
    }

    #[test]
    fn requests() {
        assert_eq!(
            parse_request("nvidia.com/gpu=all").unwrap(),
            Request {
                kind: "nvidia.com/gpu".into(),
                name: "all".into()
            }
        );
        for bad in [
            "nvidia.com/gpu",
            "gpu=0",
            "nvidia.com/gpu=",
            "a.b/c=x y",
            "a.b/c/d=0",
        ] {
            assert!(parse_request(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_text_gives_a_spec_or_one_line(s in ".{0,400}") {
            for f in ["/a.json", "/a.yaml"] {
                if let Err(e) = p(f, &s) {
                    prop_assert!(!e.to_string().contains('\n'));
                }
            }
        }

        #[test]
        fn accepted_paths_stay_inside(path in "[/a-z.]{1,24}", host in "[/a-z.]{1,24}") {
            let t = GOOD
                .replace("/usr/lib/./x", &path)
                .replace("\"/usr/lib/x\"", &format!("{host:?}"));
            if let Ok(s) = p("/a.json", &t) {
                let m = &s.devices[0].edits.mounts[0];
                prop_assert!(m.container_path.is_absolute());
                prop_assert!(m.container_path != Path::new("/"));
                prop_assert!(m.container_path.components().all(|c| matches!(c,
                    std::path::Component::RootDir | std::path::Component::Normal(_))));
                prop_assert!(m.host_path.is_absolute());
            }
        }

        #[test]
        fn requests_never_panic(s in ".{0,64}") {
            if let Ok(r) = parse_request(&s) {
                prop_assert!(device_name_ok(&r.name));
                prop_assert!(check_kind(&r.kind).is_ok());
            }
        }
    }
}
