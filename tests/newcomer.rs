//! The README's first commands as a brand-new account: made with `useradd -m` (no
//! `~/.local`, no `/run/user/UID`), environment reduced to HOME, USER and PATH (`env -i`),
//! no config file. With a subuid range and without.

mod support;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use support::registry::{need_registry, PLAIN};
use support::*;

const BUSYBOX: &str = "127.0.0.1:5000/test/busybox:latest";
const DEBIAN: &str = "127.0.0.1:5000/test/debian:latest";

/// Account creation and subuid allocation happen one at a time (tests run in threads;
/// two picking the same free range would overlap).
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// A fresh account, removed with its home, its subordinate ranges and warren's runtime
/// directory on drop (also when an assertion failed).
struct Newcomer {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    /// `START-END` given to usermod, when it has a range.
    range: Option<String>,
}

fn run_root(cmd: &mut Command) -> Result<(), String> {
    let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", stderr(&o)))
    }
}

/// The first ID after every range in /etc/subuid and /etc/subgid, rounded up to 65536
/// (and at least 2^21, above the ranges of scripts/setup-host.sh).
fn free_range_start() -> u64 {
    let mut end = 1u64 << 21;
    for f in ["/etc/subuid", "/etc/subgid"] {
        for l in std::fs::read_to_string(f).unwrap_or_default().lines() {
            let mut p = l.split(':').skip(1);
            if let (Some(Ok(s)), Some(Ok(n))) = (
                p.next().map(str::parse::<u64>),
                p.next().map(str::parse::<u64>),
            ) {
                end = end.max(s + n);
            }
        }
    }
    end.div_ceil(65536) * 65536
}

impl Newcomer {
    fn create(with_range: bool) -> Result<Newcomer, String> {
        need_root("useradd")?;
        need_programs(&["useradd", "userdel", "usermod", "setpriv", "env"])?;
        let _g = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        // Unique per process and call; user names are at most 32 characters.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("wnew{}x{n}", std::process::id());
        run_root(Command::new("useradd").args(["-m", "-s", "/bin/sh", &name]))?;
        let u = User::lookup(&name).ok_or("useradd made no user")?;
        let mut me = Newcomer {
            name,
            uid: u.uid,
            gid: u.gid,
            home: u.home,
            range: None,
        };
        if with_range {
            let start = free_range_start();
            let r = format!("{start}-{}", start + 65535);
            run_root(Command::new("usermod").args([
                "--add-subuids",
                &r,
                "--add-subgids",
                &r,
                &me.name,
            ]))?;
            me.range = Some(r);
        }
        Ok(me)
    }

    /// `warren ARGS` as this user with nothing but HOME, USER and PATH, from `/`.
    fn warren(&self, args: &[&str]) -> Output {
        Command::new("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .args(["--", "env", "-i"])
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("USER={}", self.name))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin")
            .arg(warren_bin())
            .args(args)
            .current_dir("/")
            .output()
            .expect("run warren as the newcomer")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.warren(args);
        assert!(
            o.status.success(),
            "warren {args:?} as {} failed: {}",
            self.name,
            stderr(&o)
        );
        stdout(&o)
    }
}

impl Newcomer {
    /// Live shared image mounts (holders) of this user, from `warren ps --json`.
    fn holders(&self) -> Vec<serde_json::Value> {
        let out = self.warren(&["ps", "--json"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["kind"] == "holder")
            .collect()
    }
}

impl Drop for Newcomer {
    fn drop(&mut self) {
        // Its shared image mounts end after their idle time: stop them now (also when an
        // assertion failed), or userdel would find the account in use.
        for h in self.holders() {
            if let Some(id) = h["id"].as_str() {
                let _ = self.warren(&["rm", id]);
            }
        }
        let _g = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = &self.range {
            let _ = run_root(Command::new("usermod").args([
                "--del-subuids",
                r,
                "--del-subgids",
                r,
                &self.name,
            ]));
        }
        if let Err(e) = run_root(Command::new("userdel").args(["-r", &self.name])) {
            // Only "no mail spool" is expected here; anything else is worth seeing.
            eprintln!("{e}");
        }
        // warren's runtime fallback (no /run/user/UID on this machine).
        let _ = std::fs::remove_dir_all(format!("/tmp/warren-{}", self.uid));
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// pull, images, run (as in README and scripts/demo.sh), then what was created.
fn first_commands(u: &Newcomer) {
    assert!(
        !u.home.join(".local").exists(),
        "useradd -m made ~/.local: not a fresh account"
    );
    let digest = u.ok(&["pull", BUSYBOX]);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    let listed = u.ok(&["images"]);
    assert!(listed.contains("test/busybox"), "{listed}");
    u.ok(&["run", "--rm", BUSYBOX, "true"]);
    let out = u.ok(&["run", "--rm", BUSYBOX, "sh", "-c", "id -u; cat /etc/passwd"]);
    assert!(out.starts_with(&format!("{}\n", u.uid)), "{out}");
    assert!(out.contains("root:x:0:0"), "{out}");
    // Both runs used one shared image mount, kept for the default idle time: a third run
    // is in its user namespace; `warren rm` ends it.
    let hs = u.holders();
    assert_eq!(hs.len(), 1, "{hs:?}");
    assert_eq!(hs[0]["idle"], 60);
    let ns = u.ok(&["run", BUSYBOX, "readlink", "/proc/self/ns/user"]);
    let pid = hs[0]["pid"].as_i64().unwrap();
    let holder_ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    assert_eq!(ns.trim(), holder_ns.display().to_string());
    u.ok(&["rm", hs[0]["id"].as_str().unwrap()]);
    assert!(u.holders().is_empty());
    // XDG: the parents warren made are private; the store itself is 0755.
    assert_eq!(mode(&u.home.join(".local")), 0o700);
    assert_eq!(mode(&u.home.join(".local/share")), 0o700);
    let store = u.home.join(".local/share/warren");
    assert_eq!(mode(&store), 0o755);
    let md = std::fs::metadata(&store).unwrap();
    assert_eq!((md.uid(), md.gid()), (u.uid, u.gid));
    // A re-pull answers from the store and finds the image sound.
    let again = u.warren(&["pull", BUSYBOX]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
}

#[test]
fn newcomer_with_a_subuid_range_pulls_and_runs() {
    need!(need_registry(&[PLAIN]));
    let u = need!(Newcomer::create(true));
    first_commands(&u);
    // A distribution image: its os-release is readable inside.
    u.ok(&["pull", "-q", DEBIAN]);
    let os = u.ok(&["run", "--rm", DEBIAN, "cat", "/etc/os-release"]);
    assert!(os.contains("ID=debian"), "{os}");
}

#[test]
fn newcomer_without_a_subuid_range_pulls_and_runs() {
    need!(need_registry(&[PLAIN]));
    let u = need!(Newcomer::create(false));
    first_commands(&u);
}
