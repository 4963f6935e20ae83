//! Site hooks (`hooks.d`, podman's JSON 1.0.0) and drop-ins (`mounts.d` fstab,
//! `environ.d` env) with `warren run` as the unprivileged test user: real hook scripts
//! that record the OCI state they read on stdin, one in the container's namespaces, one
//! that fails (the start is aborted, its stderr shown), one that hangs past its timeout
//! (killed, nothing left running), a hook whose `when` does not match, and malformed files.

mod run_support;
use run_support::{fixture, live_processes, ok, stderr, Fixture};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A site layout for one test: `D/{hooks.d,mounts.d,environ.d,bin,out,data}`; `out` is
/// the user's, the rest root's and readable.
struct Site {
    dir: PathBuf,
}

impl Site {
    fn new(f: &Fixture, name: &str) -> Site {
        let dir = f.dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["hooks.d", "mounts.d", "environ.d", "bin", "data"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::chown(&out, Some(f.ci.uid), Some(f.ci.gid)).unwrap();
        let s = Site { dir };
        std::fs::write(
            s.dir.join("warren.toml"),
            format!(
                "[cdi]\nspec_dirs = []\n[hooks]\ndirs = [{:?}]\nmounts_dirs = [{:?}]\nenviron_dirs = [{:?}]\n",
                s.path("hooks.d"),
                s.path("mounts.d"),
                s.path("environ.d")
            ),
        )
        .unwrap();
        s
    }

    fn path(&self, p: &str) -> String {
        self.dir.join(p).display().to_string()
    }

    /// An executable script `bin/NAME`.
    fn script(&self, name: &str, body: &str) -> String {
        let p = self.dir.join("bin").join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    /// `hooks.d/FILE.json`.
    fn hook(&self, file: &str, json: serde_json::Value) {
        std::fs::write(
            self.dir.join("hooks.d").join(format!("{file}.json")),
            json.to_string(),
        )
        .unwrap();
    }

    fn run(&self, f: &Fixture, args: &[&str]) -> Output {
        f.cmd(&f.ci, &f.run_args(args))
            .env("WARREN_CONFIG", self.dir.join("warren.toml"))
            .output()
            .unwrap()
    }

    fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.dir.join(p)).unwrap_or_default()
    }
}

/// The `status` and `pid` of each state JSON line in `log`, with the line's tag.
fn states(log: &str) -> Vec<(String, String, i64)> {
    log.lines()
        .map(|l| {
            let (tag, json) = l.split_once(' ').unwrap();
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["ociVersion"], "1.0.2", "{l}");
            (
                tag.to_string(),
                v["status"].as_str().unwrap().to_string(),
                v["pid"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn hooks_run_in_order_with_the_state_and_drop_ins_apply() {
    let Some(f) = fixture() else { return };
    let s = Site::new(f, "hooks-order");
    let log = s.path("out/log");
    let record = s.script("record", &format!("echo \"$1 $(cat)\" >> {log}"));
    let hook = |tag: &str, stages: &[&str]| {
        serde_json::json!({"version": "1.0.0", "hook": {"path": record, "args": ["record", tag]},
                           "when": {"always": true}, "stages": stages})
    };
    s.hook(
        "10-a",
        hook("a", &["prestart", "createRuntime", "poststart", "poststop"]),
    );
    s.hook("20-b", hook("b", &["prestart"]));
    s.hook(
        "30-never",
        serde_json::json!({"version": "1.0.0", "hook": {"path": record, "args": ["record", "never"]},
                           "when": {"commands": [".*/python3"]}, "stages": ["prestart"]}),
    );
    // In the container's namespaces, before its pivot_root (as runc runs them): finds the
    // container's root as NVIDIA's nvidia-cdi-hook does (the state's bundle, its
    // config.json's root.path) and writes into the container's /tmp.
    let inside = s.script(
        "inside",
        "st=$(cat); b=$(printf %s \"$st\" | jq -er .bundle); \
         r=$(jq -er .root.path \"$b/config.json\"); printf %s \"$st\" > \"$r/tmp/created-state\"",
    );
    s.hook(
        "40-inside",
        serde_json::json!({"version": "1.0.0", "hook": {"path": inside},
                           "when": {"commands": ["sh"]}, "stages": ["createContainer"]}),
    );
    std::fs::write(s.dir.join("data/file"), "site data\n").unwrap();
    std::fs::write(
        s.dir.join("mounts.d/10-site.fstab"),
        format!(
            "# site mounts\n{} /site/data none bind,ro\n/nonexistent/warren /x none bind,nofail\n",
            s.path("data")
        ),
    )
    .unwrap();
    std::fs::write(
        s.dir.join("environ.d/10-site.env"),
        "# site env\nSITE_VAR=site\nOVERRIDE=site\n",
    )
    .unwrap();
    let out = ok(&s.run(
        f,
        &[
            "-e",
            "OVERRIDE=user",
            "sh",
            "-c",
            "cat /site/data/file; echo $SITE_VAR $OVERRIDE; test -e /x || echo no-x; \
             touch /site/data/y 2>/dev/null || echo ro; grep -o '\"status\":\"created\"' /tmp/created-state",
        ],
    ));
    assert_eq!(
        out,
        "site data\nsite user\nno-x\nro\n\"status\":\"created\"\n"
    );
    let st = states(&s.read("out/log"));
    let tags: Vec<(&str, &str)> = st
        .iter()
        .map(|(t, s, _)| (t.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        tags,
        [
            ("a", "created"),
            ("b", "created"),
            ("a", "created"),
            ("a", "running"),
            ("a", "stopped")
        ]
    );
    // prestart/createRuntime/poststart see the container's process; poststop none.
    let pid = st[0].2;
    assert!(pid > 0);
    assert!(st[1..4].iter().all(|(_, _, p)| *p == pid), "{st:?}");
    assert_eq!(st[4].2, 0);
}

/// `--annotation KEY=VALUE` (podman's): hooks.d's `when.annotations` match it and the
/// state JSON carries it; a malformed one is a one-line error.
#[test]
fn annotations_select_hooks_and_reach_their_state() {
    let Some(f) = fixture() else { return };
    let s = Site::new(f, "hooks-annotations");
    let log = s.path("out/log");
    let record = s.script("record", &format!("cat >> {log}; echo >> {log}"));
    s.hook(
        "10-gpu",
        serde_json::json!({"version": "1.0.0", "hook": {"path": record},
            "when": {"annotations": {"^com\\.example\\.site/gpu$": "^(yes|all)$"}}, "stages": ["prestart"]}),
    );
    assert_eq!(ok(&s.run(f, &["echo", "plain"])), "plain\n");
    assert_eq!(s.read("out/log"), "", "ran without the annotation");
    let o = s.run(
        f,
        &["--annotation", "com.example.site/gpu=no", "echo", "no"],
    );
    assert_eq!(ok(&o), "no\n");
    assert_eq!(s.read("out/log"), "", "ran for a value that does not match");
    let o = s.run(
        f,
        &[
            "--annotation",
            "com.example.site/gpu=yes",
            "--annotation",
            "other=1=2",
            "echo",
            "yes",
        ],
    );
    assert_eq!(ok(&o), "yes\n");
    let text = s.read("out/log");
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        v["annotations"],
        serde_json::json!({"com.example.site/gpu": "yes", "other": "1=2"}),
        "{text}"
    );
    let o = s.run(f, &["--annotation", "=x", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "warren: --annotation \"=x\": expected KEY=VALUE with a non-empty KEY\n"
    );
}

#[test]
fn a_failing_hook_aborts_the_start_and_shows_its_stderr() {
    let Some(f) = fixture() else { return };
    let s = Site::new(f, "hooks-fail");
    let fail = s.script(
        "fail",
        "cat >/dev/null; echo 'license server unreachable' >&2; exit 3",
    );
    s.hook(
        "10-fail",
        serde_json::json!({"version": "1.0.0", "hook": {"path": fail}, "when": {"always": true}, "stages": ["prestart"]}),
    );
    let ran = s.path("out/ran");
    let o = s.run(f, &["touch", &ran]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!("warren: hook prestart[0] {fail}: failed (exit status: 3)\nlicense server unreachable\n")
    );
    assert!(!Path::new(&ran).exists(), "the command ran");
}

#[test]
fn a_hook_past_its_timeout_is_killed_and_the_start_aborted() {
    let Some(f) = fixture() else { return };
    let s = Site::new(f, "hooks-timeout");
    let hang = s.script("hang", "exec sleep 31");
    s.hook(
        "10-hang",
        serde_json::json!({"version": "1.0.0", "hook": {"path": hang, "timeout": 1},
                           "when": {"always": true}, "stages": ["createRuntime"]}),
    );
    let o = s.run(f, &["true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!("warren: hook createRuntime[0] {hang}: timed out after 1 s\n")
    );
    let left: Vec<String> = live_processes(f.ci.uid)
        .into_iter()
        .filter(|p| {
            let pid = p.split(' ').next().unwrap_or_default();
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("sleep\u{0}31"))
        })
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn malformed_site_files_name_file_and_line() {
    let Some(f) = fixture() else { return };
    let s = Site::new(f, "hooks-bad");
    std::fs::write(
        s.dir.join("hooks.d/10-x.json"),
        r#"{"version":"1.0.0","hook":{"path":"/bin/true"},"when":{},"stages":["prestart"]}"#,
    )
    .unwrap();
    let o = s.run(f, &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        format!(
            "warren: hook file {}: when has no condition (always, annotations, commands, hasBindMounts)\n",
            s.path("hooks.d/10-x.json")
        )
    );
    std::fs::remove_file(s.dir.join("hooks.d/10-x.json")).unwrap();
    std::fs::write(s.dir.join("mounts.d/10.fstab"), "/a /b tmpfs\n").unwrap();
    let o = s.run(f, &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        format!(
            "warren: {} line 1: type \"tmpfs\" is not supported (rootless: none, bind or rbind)\n",
            s.path("mounts.d/10.fstab")
        )
    );
    std::fs::remove_file(s.dir.join("mounts.d/10.fstab")).unwrap();
    std::fs::write(s.dir.join("environ.d/10.env"), "OK=1\nBAD NAME=2\n").unwrap();
    let o = s.run(f, &["true"]);
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(
        e.starts_with(&format!(
            "warren: {} line 2: invalid variable name",
            s.path("environ.d/10.env")
        )),
        "{e}"
    );
}
