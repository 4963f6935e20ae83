//! The /proc door (docs/security.md) attacked from inside a container run by warren-ci:
//! the default mode (what is reachable is what the threat model says, and warren's own
//! processes are not a door) and `--contain` (no host process, no host path beyond -v).
//!
//! The attack: the image server (warren's own `warren-sqfs`, or `squashfuse_ll`) runs in
//! the container's user namespace
//! and in a mount namespace that shows the host; if it were dumpable, its
//! `/proc/PID/root` and `/proc/PID/fd/N` would let the container read and write any file
//! of the user, here the squashfs file it serves (a user-owned "victim").

mod run_support;
use run_support::{fixture, host_cmd, ok, Fixture};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Run inside: waits for /x/go, then reports `key=value` lines about what it can reach.
const ATTACK: &str = r#"
touch /x/ready
while [ ! -e /x/go ]; do sleep 0.02; done
. /x/pids
sleep 30 & BG=$!
can() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
for n in WARREN MONITOR SQFS FOVL HOLDER HOSTSLEEP; do
  eval p=\$$n
  [ -n "$p" ] || continue
  echo "$n.visible=$(can test -d /proc/$p)"
  echo "$n.root=$(can ls /proc/$p/root/)"
  echo "$n.fd=$(can readlink /proc/$p/fd/0)"
  echo "$n.kill=$(can kill -0 $p)"
done
echo "own.root=$(can ls /proc/$BG/root/)"
for p in /proc/[0-9]*; do
  printf X 2>/dev/null >> "$p/root$VICTIM" && echo "wrote=$p/root"
  for f in "$p"/fd/*; do
    case "$(readlink "$f" 2>/dev/null)" in
      *victim.sqfs*) printf X 2>/dev/null >> "$f" && echo "wrote=$f" ;;
    esac
  done
done
echo "procs=$(ls /proc | grep -c '^[0-9]')"
echo "home=$(can test -e "$HOMEMARK")"
echo "tmp=$(ls -A /tmp | wc -l)"
echo "tmpfs=$(grep -c ' /tmp .* - tmpfs ' /proc/self/mountinfo)"
echo "shm=$(can test -e "/dev/shm/$SHMMARK")"
# The shell's descriptors other than pipes (the command substitution's own is one).
echo "fds=$(ls -l /proc/$$/fd | grep -v pipe: | grep -o ' [0-9]* ->' | tr -d ' >-' | tr '\n' ' ')"
env | sed 's/^/env:/'
kill $BG
"#;

/// What the attack reported: `key=value` (a key may repeat: `wrote`) and `env:` lines.
struct Report {
    kv: BTreeMap<String, Vec<String>>,
    env: Vec<String>,
}

impl Report {
    fn get(&self, k: &str) -> &str {
        self.kv
            .get(k)
            .and_then(|v| v.first())
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {k} in the report"))
    }
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The session ID of `pid` (a holder is the leader of its own session).
fn session(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(") ")?.1.to_string();
            rest.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(0)
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Kills and reaps a child when dropped (the host-side `sleep`, a stuck warren).
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run the attack as warren-ci with `opts`, from a user-owned copy of the image (the
/// victim), with an extra fd 7 and host variables LANG (allowlisted) and SECRET (not).
fn attack(f: &Fixture, opts: &[&str], tag: &str) -> (Report, Vec<u8>) {
    let dir = f.user_dir(&f.ci, &format!("contain-{tag}"));
    let victim = dir.join("victim.sqfs");
    std::fs::copy(&f.sqfs, &victim).unwrap();
    std::os::unix::fs::chown(&victim, Some(f.ci.uid), Some(f.ci.gid)).unwrap();
    let before = std::fs::read(&victim).unwrap();
    let x = dir.join("x");
    std::fs::create_dir(&x).unwrap();
    std::os::unix::fs::chown(&x, Some(f.ci.uid), Some(f.ci.gid)).unwrap();
    let home_mark =
        f.ci.home
            .join(format!(".warren-contain-test-{}", std::process::id()));
    std::fs::write(&home_mark, "h").unwrap();
    let shm_mark = format!("warren-contain-test-{}-{tag}", std::process::id());
    std::fs::write(Path::new("/dev/shm").join(&shm_mark), "s").unwrap();
    let vol = format!("{}:/x", x.display());
    let victim_s = victim.to_str().unwrap().to_string();
    let mut args = vec![
        "run",
        "--squashfs",
        &victim_s,
        "--image-config",
        f.config.to_str().unwrap(),
        "-v",
        &vol,
        "-e",
        "FOO=bar",
    ];
    args.extend_from_slice(opts);
    args.extend(["sh", "-c", ATTACK]);
    let extra = std::fs::File::open("/dev/null").unwrap();
    let extra_fd = extra.as_raw_fd();
    let mut cmd = f.cmd(&f.ci, &args);
    cmd.env("LANG", "C.UTF-8")
        .env("SECRET", "host-secret")
        .stdout(Stdio::piped());
    // SAFETY: dup2 in the forked child before exec: async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(extra_fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut warren = KillOnDrop(cmd.spawn().unwrap());
    drop(extra);
    let hostsleep = KillOnDrop(host_cmd(&f.ci, &["sleep", "60"]).spawn().unwrap());
    let wpid = warren.0.id() as i32;
    // warren → monitor → (squashfuse_ll, the command …); with a shared image mount (the
    // default) warren → holder (its own session) → squashfuse_ll, and warren → monitor →
    // (fuse-overlayfs, the command …).
    let t = Instant::now();
    let (monitor, sqfs, fovl, holder) = loop {
        let kids = children(wpid);
        let holder = kids.iter().copied().find(|&k| session(k) == k);
        let found = kids
            .iter()
            .copied()
            .find(|&k| Some(k) != holder)
            .and_then(|m| {
                let named = |p: i32, n: &str| children(p).into_iter().find(|c| comm(*c) == n);
                named(holder.unwrap_or(m), "squashfuse_ll")
                    .or_else(|| named(holder.unwrap_or(m), "warren-sqfs"))
                    .map(|s| (m, s, named(m, "fuse-overlayfs"), holder))
            });
        if let (Some(x), true) = (found, x.join("ready").exists()) {
            break x;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{tag}: the command never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // The hardening as the host sees it: squashfuse_ll runs from its execute-only copy in
    // the runtime dir, and it, warren and the monitor are non-dumpable (the kernel then
    // gives the files in their /proc/PID to root, of the host or of the namespace).
    // warren's own server (a fork of warren, no exec) makes itself non-dumpable instead.
    if comm(sqfs) == "squashfuse_ll" {
        let exe = std::fs::read_link(format!("/proc/{sqfs}/exe")).unwrap();
        assert!(exe.starts_with(f.rundir(&f.ci).join("helpers")), "{exe:?}");
        let mode = std::fs::metadata(&exe).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o111, "{exe:?}");
    }
    // (With --remap-root the namespace's root is the user: no owner tells there.)
    let remap = opts.contains(&"--remap-root");
    for p in [wpid, monitor, sqfs] {
        if remap && p != wpid {
            continue;
        }
        let owner = std::fs::metadata(format!("/proc/{p}/environ"))
            .unwrap()
            .uid();
        assert_ne!(
            owner,
            f.ci.uid,
            "{tag}: /proc/{p} ({}) is dumpable",
            comm(p)
        );
    }
    std::fs::write(
        x.join("pids"),
        format!(
            "WARREN={wpid}\nMONITOR={monitor}\nSQFS={sqfs}\nFOVL={}\nHOLDER={}\nHOSTSLEEP={}\nVICTIM={}\nHOMEMARK={}\nSHMMARK={shm_mark}\n",
            fovl.map(|p| p.to_string()).unwrap_or_default(),
            holder.map(|p| p.to_string()).unwrap_or_default(),
            hostsleep.0.id(),
            victim.display(),
            home_mark.display()
        ),
    )
    .unwrap();
    std::fs::write(x.join("go"), "").unwrap();
    let mut out = String::new();
    warren
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = warren.0.wait().unwrap();
    let _ = std::fs::remove_file(&home_mark);
    let _ = std::fs::remove_file(Path::new("/dev/shm").join(&shm_mark));
    assert!(status.success(), "{tag}: {status:?}\n{out}");
    let mut kv: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut env = Vec::new();
    for l in out.lines() {
        if let Some(e) = l.strip_prefix("env:") {
            env.push(e.split('=').next().unwrap_or_default().to_string());
        } else if let Some((k, v)) = l.split_once('=') {
            kv.entry(k.into()).or_default().push(v.into());
        }
    }
    env.sort();
    let after = std::fs::read(&victim).unwrap();
    assert!(after == before, "{tag}: the victim image was modified");
    (Report { kv, env }, after)
}

#[test]
fn default_mode_reaches_only_what_the_threat_model_says() {
    let Some(f) = fixture() else { return };
    let (r, _) = attack(f, &[], "default");
    // Host PID namespace: every process of the host is visible, and the user's processes
    // can be signalled (same kernel UID) ...
    for n in ["WARREN", "MONITOR", "SQFS", "HOSTSLEEP"] {
        assert_eq!(r.get(&format!("{n}.visible")), "yes", "{n}");
        assert_eq!(r.get(&format!("{n}.kill")), "yes", "{n}");
    }
    // ... but none of them opens: warren and the user's host processes are in the parent
    // user namespace, the monitor keeps its capabilities, and squashfuse_ll (in the
    // container's user namespace, without capabilities) is non-dumpable.
    for n in ["WARREN", "MONITOR", "SQFS", "HOSTSLEEP"] {
        assert_eq!(r.get(&format!("{n}.root")), "no", "{n}.root");
        assert_eq!(r.get(&format!("{n}.fd")), "no", "{n}.fd");
    }
    // The default joins a shared image mount: its holder (dumpable, but holding all
    // capabilities of the namespace the container joined) is visible and never opens.
    assert_eq!(r.get("HOLDER.visible"), "yes");
    assert_eq!(r.get("HOLDER.root"), "no");
    assert_eq!(r.get("HOLDER.fd"), "no");
    // The control: a dumpable process of the container's namespace is open to it (what
    // squashfuse_ll was before it was hardened).
    assert_eq!(r.get("own.root"), "yes");
    assert!(!r.kv.contains_key("wrote"), "{:?}", r.kv.get("wrote"));
    // Home mounted, private /tmp, host IPC, inherited fds and allowlisted env pass.
    assert_eq!(r.get("home"), "yes");
    assert_eq!((r.get("tmp"), r.get("tmpfs")), ("0", "1"));
    assert_eq!(r.get("shm"), "yes");
    assert!(
        r.get("fds").split_whitespace().any(|f| f == "7"),
        "{}",
        r.get("fds")
    );
    assert!(r.env.contains(&"LANG".to_string()), "{:?}", r.env);
    assert!(!r.env.contains(&"SECRET".to_string()), "{:?}", r.env);
}

#[test]
fn fuse_overlayfs_is_no_door_either() {
    let Some(f) = fixture() else { return };
    for (opts, tag) in [
        (&["--overlay", "fuse"][..], "fuse"),
        (&["--overlay", "fuse", "--remap-root"][..], "fuse-root"),
    ] {
        let (r, _) = attack(f, opts, tag);
        // In the container's user namespace with all its capabilities (ambient): visible
        // and signallable in the host PID namespace, never opened.
        assert_eq!(r.get("FOVL.visible"), "yes", "{tag}");
        for n in ["FOVL", "SQFS", "MONITOR", "HOLDER"] {
            assert_eq!(r.get(&format!("{n}.root")), "no", "{tag} {n}.root");
            assert_eq!(r.get(&format!("{n}.fd")), "no", "{tag} {n}.fd");
        }
        assert!(
            !r.kv.contains_key("wrote"),
            "{tag}: {:?}",
            r.kv.get("wrote")
        );
    }
}

#[test]
fn contain_reaches_no_host_process_and_no_host_path() {
    let Some(f) = fixture() else { return };
    let (r, _) = attack(f, &["--contain"], "contain");
    // Its own PID namespace: no host process exists for it.
    for n in ["WARREN", "MONITOR", "SQFS", "HOSTSLEEP"] {
        for what in ["visible", "root", "fd", "kill"] {
            assert_eq!(r.get(&format!("{n}.{what}")), "no", "{n}.{what}");
        }
    }
    // Only its own processes: init, the shell, the background sleep, ls, grep.
    let procs: u32 = r.get("procs").parse().unwrap();
    assert!((3..=6).contains(&procs), "{procs} processes visible");
    assert_eq!(r.get("own.root"), "yes");
    assert!(!r.kv.contains_key("wrote"), "{:?}", r.kv.get("wrote"));
    assert_eq!(r.get("home"), "no");
    assert_eq!((r.get("tmp"), r.get("tmpfs")), ("0", "1"));
    assert_eq!(r.get("shm"), "no");
    let fds: Vec<u32> = r
        .get("fds")
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert!(fds.iter().all(|f| *f <= 2), "{fds:?}");
    // The image's environment, -e, and what warren always sets; nothing of the host's.
    assert_eq!(
        r.env,
        ["FOO", "HOME", "IMGVAR", "PATH", "PWD", "SHLVL"],
        "{:?}",
        r.env
    );
}

#[test]
fn contain_refuses_the_home_mount_and_a_holder() {
    let Some(f) = fixture() else { return };
    let o = f.run(&f.ci, &["--contain", "--mount-home", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", run_support::stderr(&o));
    assert!(run_support::stderr(&o).contains("--mount-home"));
    let o = f.run(&f.ci, &["--contain", "--holder", "--name", "h", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", run_support::stderr(&o));
    assert!(run_support::stderr(&o).contains("--holder"));
    // run.contain = true refuses --mount-home with one line naming both.
    let o = f
        .cmd(&f.ci, &f.run_args(&["--mount-home", "true"]))
        .env("WARREN_RUN_CONTAIN", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let e = run_support::stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("--contain") && e.contains("--mount-home"), "{e}");
    // run.contain = true is the default for every run; --no-contain overrides it.
    let procs = |extra: &[&str]| {
        let mut a = extra.to_vec();
        a.extend(["sh", "-c", "ls /proc | grep -c '^[0-9]'"]);
        let o = f
            .cmd(&f.ci, &f.run_args(&a))
            .env("WARREN_RUN_CONTAIN", "1")
            .output()
            .unwrap();
        ok(&o).trim().parse::<u32>().unwrap()
    };
    assert!(procs(&[]) < 10);
    assert!(procs(&["--no-contain"]) > 10);
}

#[test]
fn contain_exit_codes_and_signals_pass_through() {
    let Some(f) = fixture() else { return };
    let o = f.run(&f.ci, &["--contain", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let o = f.run(&f.ci, &["--contain", "nonexistent-cmd"]);
    assert_eq!(o.status.code(), Some(127));
    // SIGTERM to warren reaches the command (not PID 1 of its namespace: a shell there
    // would ignore it).
    let mut c = f
        .cmd(
            &f.ci,
            &f.run_args(&["--contain", "sh", "-c", "echo up; sleep 30"]),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 3];
    c.stdout.take().unwrap().read_exact(&mut buf).unwrap();
    // SAFETY: our child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    assert_eq!(c.wait().unwrap().code(), Some(143));
}

#[test]
fn contain_keeps_the_terminal_but_not_the_hosts_other_terminals() {
    let Some(f) = fixture() else { return };
    // script(1) gives warren a pseudo-terminal as stdin/stdout.
    let inner = format!(
        "{} run --contain -t --squashfs {} --image-config {} sh -c 'test -t 0 && echo isatty; ls /dev/pts | tr \"\\n\" \" \"; echo; echo TERM=$TERM'",
        f.bin.display(),
        f.sqfs.display(),
        f.config.display()
    );
    let o = host_cmd(&f.ci, &["script", "-qec", &inner, "/dev/null"])
        .env_clear()
        .env("HOME", &f.ci.home)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TERM", "vt100")
        .env("WARREN_CONFIG", "/dev/null")
        .env("XDG_CACHE_HOME", f.dir.join(format!("cache-{}", f.ci.uid)))
        .env("WARREN_RUN_RUNTIME_DIR", f.rundir(&f.ci))
        .output()
        .unwrap();
    let out = ok(&o).replace('\r', "");
    let lines: Vec<&str> = out.lines().collect();
    // The terminal works through its descriptors; /dev/pts is a new, empty instance;
    // the host's TERM is not passed (-t sets one).
    assert_eq!(lines, ["isatty", "ptmx ", "TERM=xterm"], "{out}");
}

#[test]
fn contain_works_without_a_subordinate_range() {
    let Some(f) = fixture() else { return };
    let o = f.run(
        &f.nosub,
        &[
            "--contain",
            "sh",
            "-c",
            "ls /proc | grep -c '^[0-9]'; grep -c ' - mqueue ' /proc/self/mountinfo",
        ],
    );
    let out = ok(&o);
    let lines: Vec<&str> = out.lines().collect();
    let procs: u32 = lines[0].parse().unwrap();
    assert!((2..=5).contains(&procs), "{out}");
    assert_eq!(lines[1], "1", "{out}");
}

#[test]
fn a_wrapper_script_as_squashfuse_still_runs_with_a_notice() {
    let Some(f) = fixture() else { return };
    let dir = f.user_dir(&f.ci, "wrapper");
    let w = dir.join("squashfuse-wrapper");
    std::fs::write(&w, "#!/bin/sh\nexec squashfuse_ll \"$@\"\n").unwrap();
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = f
        .cmd(&f.ci, &f.run_args(&["echo", "ran"]))
        .env("WARREN_RUN_SQUASHFUSE", &w)
        .env("WARREN_RUN_IMAGE_SERVER", "squashfuse")
        .output()
        .unwrap();
    assert_eq!(ok(&o), "ran\n");
    let e = run_support::stderr(&o);
    assert!(
        e.contains("runs unhardened") && e.contains("not an ELF executable"),
        "{e}"
    );
}
