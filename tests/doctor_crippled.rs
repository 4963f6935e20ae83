//! `warren doctor` run for real, as unprivileged users, in deliberately crippled setups:
//! a newuidmap without its setuid bit, a user without subordinate ranges, a FUSE device
//! the user cannot open, a shared store users can write. Each must report the right
//! FAIL with its fix. Needs root (to build the setups) and the users made by
//! scripts/setup-host.sh; skips with a reason otherwise.

mod support;
use support::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The two test users, or why the test cannot run.
fn prerequisites() -> Result<(User, User), String> {
    let ci = need_user(TEST_USER)?;
    let nosub = need_user(NOSUB_USER)?;
    need_programs(&["/usr/bin/newuidmap"])?;
    Ok((ci, nosub))
}

/// A temp dir the test users can enter.
fn shared_tmp() -> TestDir {
    TestDir::new("warren-doctor-")
}

/// Subid files holding `content` (both).
fn subid_files(dir: &Path, content: &[u8]) -> (PathBuf, PathBuf) {
    let (u, g) = (dir.join("subuid"), dir.join("subgid"));
    for p in [&u, &g] {
        fs::write(p, content).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
    }
    (u, g)
}

/// Run doctor (`--json`) as `user` (None: as root) with extra args and env, with subid
/// files giving a range to warren-ci only.
fn doctor(
    user: Option<&User>,
    args: &[&str],
    env: &[(&str, &str)],
    dir: &Path,
) -> (Output, serde_json::Value) {
    doctor_with(user, args, env, dir, b"warren-ci:100000:65536\n")
}

/// As [`doctor`], with both subid files holding `subids`.
fn doctor_with(
    user: Option<&User>,
    args: &[&str],
    env: &[(&str, &str)],
    dir: &Path,
    subids: &[u8],
) -> (Output, serde_json::Value) {
    let (u, g) = subid_files(dir, subids);
    let mut c = match user {
        Some(user) => user.command(warren_bin()),
        None => Command::new(warren_bin()),
    };
    c.args(["doctor", "--json", "--subuid"])
        .arg(&u)
        .arg("--subgid")
        .arg(&g)
        .args(args);
    c.env("WARREN_CONFIG", "/dev/null")
        .env_remove("XDG_RUNTIME_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let v = json(&o);
    (o, v)
}

fn check<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}: {v}"))
}

#[test]
fn newuidmap_without_setuid_fails_with_fix() {
    let (ci, _) = need!(prerequisites());
    let d = shared_tmp();
    let copy = d.path().join("newuidmap");
    fs::copy("/usr/bin/newuidmap", &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    let (o, v) = doctor(
        Some(&ci),
        &["--newuidmap", copy.to_str().unwrap()],
        &[],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1), "FAIL must exit 1");
    let c = check(&v, "newuidmap");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("chmod u+s {}", copy.display())),
        "{c}"
    );
    assert_eq!(check(&v, "newgidmap")["status"], "ok");
    assert_eq!(check(&v, "subuid")["status"], "ok", "warren-ci has a range");
    assert_eq!(v["summary"]["fail"], 1, "{v}");

    // File capabilities instead of setuid are accepted (real xattr written by setcap).
    if Command::new("setcap")
        .arg("cap_setuid+ep")
        .arg(&copy)
        .status()
        .is_ok_and(|s| s.success())
    {
        let (_, v) = doctor(
            Some(&ci),
            &["--newuidmap", copy.to_str().unwrap()],
            &[],
            d.path(),
        );
        let c = check(&v, "newuidmap");
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["detail"].as_str().unwrap().contains("cap_setuid+ep"));
    } else {
        eprintln!(
            "SKIP part of {}: setcap unavailable",
            prereq::test_name(module_path!())
        );
    }
}

#[test]
fn user_without_subuid_fails_with_fix() {
    let (_, nosub) = need!(prerequisites());
    let d = shared_tmp();
    let (o, v) = doctor(Some(&nosub), &[], &[], d.path());
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(v["user"], "warren-nosub");
    for id in ["subuid", "subgid"] {
        let c = check(&v, id);
        assert_eq!(c["status"], "fail", "{c}");
        assert!(
            c["detail"].as_str().unwrap().contains("no ")
                && c["detail"].as_str().unwrap().contains("warren-nosub")
        );
        let fix = c["fix"].as_str().unwrap();
        assert!(
            fix.contains("usermod --add-subuids") && fix.contains("warren-nosub"),
            "{fix}"
        );
    }
    // Root doctoring the same user gets the same verdict.
    let (o, v) = doctor(None, &["--user", "warren-nosub"], &[], d.path());
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(check(&v, "subuid")["status"], "fail");
    assert_eq!(v["uid"], nosub.uid);
}

/// Field report: doctor proposed `usermod --add-subuids 231072-296607` for a user without
/// a range while another user already had 231072:65536. The proposal now comes from the
/// planner: never overlapping, and it names the policy that chose it.
#[test]
fn proposed_range_never_overlaps_and_names_its_policy() {
    let (ci, nosub) = need!(prerequisites());
    if nosub.uid < 1000 {
        skip!("{NOSUB_USER} has UID {} < UID_MIN 1000", nosub.uid);
    }
    let d = shared_tmp();
    let defs = d.path().join("login.defs");
    fs::write(
        &defs,
        "UID_MIN 1000\nSUB_UID_MIN 100000\nSUB_UID_MAX 600100000\nSUB_UID_COUNT 65536\nSUB_GID_MIN 100000\nSUB_GID_MAX 600100000\nSUB_GID_COUNT 65536\n",
    )
    .unwrap();
    fs::set_permissions(&defs, fs::Permissions::from_mode(0o644)).unwrap();
    let det = 100000 + (nosub.uid as u64 - 1000) * 65536;
    let args = ["--login-defs", defs.to_str().unwrap()];
    // Free: the deterministic range, so named.
    let (_, v) = doctor_with(
        Some(&nosub),
        &args,
        &[],
        d.path(),
        format!("{}:{}:65536\n", ci.name, det + 65536 * 100).as_bytes(),
    );
    let fix = check(&v, "subuid")["fix"].as_str().unwrap().to_string();
    assert!(
        fix.contains(&format!("--add-subuids {det}-{}", det + 65535))
            && fix.contains("deterministic policy"),
        "{fix}"
    );
    // Taken by warren-ci: first-fit elsewhere, never overlapping, and the text says why.
    let (o, v) = doctor_with(
        Some(&nosub),
        &args,
        &[],
        d.path(),
        format!("{}:{det}:65536\n", ci.name).as_bytes(),
    );
    assert_eq!(o.status.code(), Some(1));
    for id in ["subuid", "subgid"] {
        let fix = check(&v, id)["fix"].as_str().unwrap().to_string();
        assert!(fix.contains("chosen first-fit"), "{fix}");
        assert!(fix.contains("overlaps"), "{fix}");
        let flag = if id == "subuid" {
            "--add-subuids "
        } else {
            "--add-subgids "
        };
        let range = fix.split(flag).nth(1).unwrap().split(' ').next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        assert!(b < det || a >= det + 65536, "{range} overlaps {det}: {fix}");
        assert_eq!(b - a + 1, 65536);
    }
}

/// Field report: a CRLF line passed doctor as OK, then newuidmap ignored it. It is a
/// FAIL naming file:line now, for the user whose line it is and in `subuid_lines`.
#[test]
fn malformed_subid_lines_fail_with_file_and_line() {
    let (ci, _) = need!(prerequisites());
    let d = shared_tmp();
    let (o, v) = doctor_with(
        Some(&ci),
        &[],
        &[],
        d.path(),
        b"# site ranges\r\nwarren-ci:100000:65536\r\nj\xe9r\xf4me:200000:65536\n",
    );
    assert_eq!(o.status.code(), Some(1));
    let sub = d.path().join("subuid");
    let c = check(&v, "subuid");
    assert_eq!(c["status"], "fail", "{c}");
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("{}:2: ", sub.display())) && detail.contains("carriage return"),
        "{c}"
    );
    let c = check(&v, "subuid_lines");
    assert_eq!(c["status"], "fail", "{c}");
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{}:2: ", sub.display()))
            && detail.contains(&format!("{}:3: not valid UTF-8", sub.display())),
        "{c}"
    );
}

#[test]
fn unreadable_fuse_device_fails_with_fix() {
    let (ci, _) = need!(prerequisites());
    let d = shared_tmp();
    // A private device node (same major/minor as /dev/fuse), so the real one is untouched.
    let dev = d.path().join("fuse");
    let made = nix::sys::stat::mknod(
        &dev,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(10, 229),
    );
    if made.is_err() {
        skip!("cannot mknod in {}: {made:?}", d.path().display());
    }
    fs::set_permissions(&dev, fs::Permissions::from_mode(0o600)).unwrap();
    let devs = dev.to_str().unwrap();
    let (o, v) = doctor(
        Some(&ci),
        &[],
        &[("WARREN_DOCTOR_FUSE_DEV", devs)],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let c = check(&v, "fuse_device");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .starts_with(&format!("as root: chmod 0666 {devs}")),
        "{c}"
    );
    // Root checking for the user opens it as the user (not as root).
    let (_, v) = doctor(
        None,
        &["--user", "warren-ci", "--fuse-dev", devs],
        &[],
        d.path(),
    );
    assert_eq!(check(&v, "fuse_device")["status"], "fail");
    // Fixed as the fix says: OK.
    fs::set_permissions(&dev, fs::Permissions::from_mode(0o666)).unwrap();
    let (_, v) = doctor(
        Some(&ci),
        &[],
        &[("WARREN_DOCTOR_FUSE_DEV", devs)],
        d.path(),
    );
    assert_eq!(check(&v, "fuse_device")["status"], "ok", "{v}");
    // Missing device.
    let (_, v) = doctor(
        Some(&ci),
        &["--fuse-dev", "/nonexistent/fuse"],
        &[],
        d.path(),
    );
    assert!(check(&v, "fuse_device")["fix"]
        .as_str()
        .unwrap()
        .contains("modprobe fuse"));
}

#[test]
fn writable_shared_store_fails() {
    let (ci, _) = need!(prerequisites());
    let d = shared_tmp();
    let shared = d.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let (o, v) = doctor(
        Some(&ci),
        &[],
        &[("WARREN_STORE_SHARED", shared.to_str().unwrap())],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let c = check(&v, "shared_store");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(c["fix"].as_str().unwrap().contains("chmod go-w"));
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
    let (_, v) = doctor(
        Some(&ci),
        &[],
        &[("WARREN_STORE_SHARED", shared.to_str().unwrap())],
        d.path(),
    );
    assert_eq!(check(&v, "shared_store")["status"], "ok");
}

#[test]
fn healthy_user_and_cli_surface() {
    let (ci, _) = need!(prerequisites());
    let d = shared_tmp();
    // A plugstack of our own: the node's may list the real plugin (Slurm's tests
    // install it), which its own tests check.
    let plugstack = d.path().join("plugstack.conf");
    fs::write(&plugstack, "# no plugins\n").unwrap();
    fs::set_permissions(&plugstack, fs::Permissions::from_mode(0o644)).unwrap();
    let (_, v) = doctor(
        Some(&ci),
        &["--plugstack", plugstack.to_str().unwrap()],
        &[],
        d.path(),
    );
    for id in [
        "kernel",
        "max_user_namespaces",
        "newuidmap",
        "newgidmap",
        "subuid",
        "subgid",
    ] {
        assert_eq!(check(&v, id)["status"], "ok", "{id}: {}", check(&v, id));
    }
    // No plugin listed: a clean WARN, not a failure.
    assert_eq!(check(&v, "spank_plugin")["status"], "warn");
    assert!(check(&v, "spank_plugin")["detail"]
        .as_str()
        .unwrap()
        .starts_with("not installed"));
    // The overlay probe's answer (or its error) is reported, never a FAIL.
    assert_ne!(check(&v, "overlay")["status"], "fail");
    // A user cannot doctor someone else.
    let o = ci
        .command(warren_bin())
        .args(["doctor", "--user", NOSUB_USER])
        .env("WARREN_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("only root can check another user"));
    let o = Command::new(warren_bin())
        .args(["doctor", "--apparmor-profile"])
        .output()
        .unwrap();
    let p = String::from_utf8_lossy(&o.stdout);
    assert!(
        p.contains("userns,") && p.contains("profile warren /"),
        "{p}"
    );
}

/// `SLURM_VERSION_NUMBER` from the installed `slurm/slurm_version.h` (libslurm-dev).
fn slurm_version_number() -> Result<u32, String> {
    let h = "/usr/include/slurm/slurm_version.h";
    let text =
        fs::read_to_string(h).map_err(|e| format!("{h}: {e} (libslurm-dev not installed)"))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("#define"))
        .filter_map(|l| l.trim().strip_prefix("SLURM_VERSION_NUMBER"))
        .find_map(|v| u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| format!("{h}: no SLURM_VERSION_NUMBER"))
}

/// doctor's ELF reader against the real Slurm plugins: each `plugin_version` equals the
/// installed Slurm's `SLURM_VERSION_NUMBER` (read from its header, not assumed).
#[test]
fn elf_reader_reads_installed_slurm_plugin_versions() {
    let want = need!(slurm_version_number());
    // Where distributions install Slurm's plugins (as doctor's slurm check looks).
    let dir = need!([
        "/usr/lib/x86_64-linux-gnu/slurm-wlm",
        "/usr/lib64/slurm",
        "/usr/lib/slurm",
        "/usr/local/lib/slurm"
    ]
    .iter()
    .map(Path::new)
    .find(|d| d.join("proctrack_linuxproc.so").is_file())
    .ok_or("no Slurm plugin directory with proctrack_linuxproc.so (slurm-wlm not installed)"));
    let mut read = 0;
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "so") {
            continue;
        }
        let b = fs::read(&p).unwrap();
        if let Some(v) = warren::admin::doctor::elf::u32_symbol(&b, "plugin_version") {
            assert_eq!(v, want, "{}: {v:#x} != {want:#x}", p.display());
            read += 1;
        }
    }
    let b = fs::read(dir.join("proctrack_linuxproc.so")).unwrap();
    assert_eq!(
        warren::admin::doctor::elf::u32_symbol(&b, "plugin_version"),
        Some(want)
    );
    eprintln!("{read} plugins in {} are version {want:#x}", dir.display());
}
