//! `warren admin subid plan|check|apply` end to end, on fixture and generated files.
//! Every path is overridden: these tests never touch the real /etc.

mod support;
use support::*;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/subid");

fn warren() -> Command {
    let mut c = Command::new(warren_bin());
    c.env("WARREN_CONFIG", "/dev/null");
    c
}

/// A fake root: ROOT/etc/{passwd,group,login.defs,subuid,subgid} from fixtures.
fn root_with(subuid: Option<&str>, subgid: Option<&str>) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let etc = d.path().join("etc");
    fs::create_dir(&etc).unwrap();
    for f in ["passwd", "group", "login.defs"] {
        fs::copy(Path::new(FIX).join(f), etc.join(f)).unwrap();
    }
    if let Some(s) = subuid {
        fs::copy(Path::new(FIX).join(s), etc.join("subuid")).unwrap();
    }
    if let Some(s) = subgid {
        fs::copy(Path::new(FIX).join(s), etc.join("subgid")).unwrap();
    }
    d
}

fn run(args: &[&str], root: &Path) -> Output {
    warren()
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

/// Append erin (UID 1004, no range yet) to ETC/passwd.
fn add_erin(etc: &Path) {
    let mut pw = fs::read_to_string(etc.join("passwd")).unwrap();
    pw.push_str("erin:x:1004:1004::/home/erin:/bin/bash\n");
    fs::write(etc.join("passwd"), pw).unwrap();
}

/// `warren admin subid plan ARGS --root ROOT`.
fn plan(args: &[&str], root: &Path) -> Output {
    let mut a = vec!["admin", "subid", "plan"];
    a.extend_from_slice(args);
    run(&a, root)
}

/// The planned entries for `file` ("subuid" or "subgid") in `plan --json` output.
fn planned<'a>(v: &'a serde_json::Value, file: &str) -> &'a [serde_json::Value] {
    v["plan"][file].as_array().unwrap()
}

fn findings(v: &serde_json::Value) -> Vec<(String, String, u64)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["file"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                f["line"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn check_clean_fixture_passes() {
    let r = root_with(Some("clean.subuid"), Some("clean.subgid"));
    let o = run(&["admin", "subid", "check"], r.path());
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("0 error(s), 0 warning(s)"));
}

#[test]
fn check_overlapping_fixture_reports_each_problem() {
    let r = root_with(Some("overlapping.subuid"), Some("overlapping.subgid"));
    let o = run(&["admin", "subid", "check", "--json"], r.path());
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["ok"], false);
    let f = findings(&v);
    for want in [
        ("overlap", "subuid", 2),         // bob 150000 overlaps alice 100000:65536
        ("duplicate", "subuid", 4),       // carol twice
        ("unknown-user", "subuid", 5),    // ghost
        ("real-id-overlap", "subuid", 6), // dave:500:65536 covers UIDs 1000-1003
        ("real-id-overlap", "subgid", 4), // ghost's subgid covers GID 450000 (hpc)
        ("missing", "subuid", 6),         // dave has no subgid
        ("mismatch", "subuid", 2),        // bob 150000 vs 165536
    ] {
        let w = (want.0.to_string(), want.1.to_string(), want.2);
        assert!(f.contains(&w), "missing {w:?} in {f:?}");
    }
    assert_eq!(v["errors"], 4, "{f:?}");
    // Text output names file:line.
    let o = run(&["admin", "subid", "check"], r.path());
    let t = stdout(&o);
    assert!(t.contains("etc/subuid:2: [overlap]"), "{t}");
}

#[test]
fn check_broken_fixture_names_lines() {
    let r = root_with(Some("broken.subuid"), Some("broken.subgid"));
    let o = run(&["admin", "subid", "check", "--json"], r.path());
    assert_eq!(o.status.code(), Some(1));
    let f = findings(&json(&o));
    let bad: Vec<u64> = f
        .iter()
        .filter(|x| x.0 == "unparseable")
        .map(|x| x.2)
        .collect();
    assert_eq!(bad, vec![3, 4, 5, 6, 7, 8], "{f:?}");
}

/// Field report: one Latin-1 name made check/apply abort ("stream did not contain valid
/// UTF-8") and `warren run` fail for everyone. Now: that line is an error with its
/// file:line, every other line works, and apply keeps its bytes unchanged.
#[test]
fn non_utf8_line_is_reported_and_the_rest_still_works() {
    let r = root_with(Some("clean.subuid"), Some("clean.subgid"));
    let etc = r.path().join("etc");
    let mut before = fs::read(etc.join("subuid")).unwrap();
    before.extend_from_slice(b"j\xe9r\xf4me:500000:65536\n");
    fs::write(etc.join("subuid"), &before).unwrap();

    let o = run(&["admin", "subid", "check", "--json"], r.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["entries"]["subuid"], 4, "{v}");
    let f = findings(&v);
    assert!(
        f.contains(&("unparseable".into(), "subuid".into(), 6)),
        "{f:?}"
    );
    let o = run(&["admin", "subid", "check"], r.path());
    let t = stdout(&o);
    assert!(
        t.contains("etc/subuid:6: [unparseable]") && t.contains("UTF-8"),
        "{t}"
    );
    // The library lookup (what `warren run` uses) still finds the other users.
    let u = warren::subid::read(&etc.join("subuid")).unwrap();
    assert_eq!(u.ranges_for("bob", 1001)[0].start, 165536);

    add_erin(&etc);
    let o = run(&["admin", "subid", "apply"], r.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let mut want = before.clone();
    want.extend_from_slice(b"erin:362144:65536\n");
    assert_eq!(fs::read(etc.join("subuid")).unwrap(), want);
    assert_eq!(fs::read(etc.join("subuid-")).unwrap(), before);
}

/// Lines newuidmap ignores (CRLF, spaces) used to pass check as OK; each is an error
/// with its line now, and the range such a line names is never handed out again.
#[test]
fn lines_newuidmap_ignores_are_errors() {
    let r = root_with(None, Some("clean.subgid"));
    let etc = r.path().join("etc");
    fs::write(
        etc.join("subuid"),
        "alice:100000:65536\r\n bob:165536:65536\n1002:231072:65536 \ndave:0296608:65536\n",
    )
    .unwrap();
    let o = run(&["admin", "subid", "check", "--json"], r.path());
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    let f = findings(&v);
    let bad: Vec<u64> = f
        .iter()
        .filter(|x| x.0 == "unparseable" && x.1 == "subuid")
        .map(|x| x.2)
        .collect();
    assert_eq!(bad, vec![1, 2, 3, 4], "{f:?}");
    let msgs: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["code"] == "unparseable")
        .map(|x| x["message"].as_str().unwrap())
        .collect();
    assert!(msgs[0].contains("carriage return"), "{msgs:?}");
    assert!(msgs[1].contains("white space"), "{msgs:?}");
    assert!(msgs[3].contains("leading zero"), "{msgs:?}");
    // Nobody is given IDs those four lines name (100000-362143): once repaired, the
    // lines are live again.
    let o = plan(&["--strategy", "first-fit", "--json"], r.path());
    let v = json(&o);
    let starts: Vec<u64> = planned(&v, "subuid")
        .iter()
        .map(|e| e["start"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, vec![362144, 427680, 493216, 558752], "{v}");
}

/// `apply` on a symlinked /etc/subuid used to replace the link with a file. It writes
/// through to the target now, as shadow does, and the link stays.
#[test]
fn apply_writes_through_a_symlink_and_keeps_it() {
    let r = root_with(None, Some("clean.subgid"));
    let etc = r.path().join("etc");
    let shared = r.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::copy(Path::new(FIX).join("clean.subuid"), shared.join("subuid")).unwrap();
    std::os::unix::fs::symlink("../shared/subuid", etc.join("subuid")).unwrap();
    let before = fs::read_to_string(shared.join("subuid")).unwrap();
    add_erin(&etc);
    let o = run(&["admin", "subid", "apply"], r.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let m = fs::symlink_metadata(etc.join("subuid")).unwrap();
    assert!(m.file_type().is_symlink(), "the link was replaced");
    assert_eq!(
        fs::read_link(etc.join("subuid")).unwrap(),
        Path::new("../shared/subuid")
    );
    assert_eq!(
        fs::read_to_string(shared.join("subuid")).unwrap(),
        format!("{before}erin:362144:65536\n")
    );
    assert_eq!(fs::read_to_string(etc.join("subuid-")).unwrap(), before);
    let left: Vec<String> = fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["subuid"],
        "temp file left in the target's directory"
    );
    // A dangling link is refused with a message, and nothing is written.
    let r = root_with(None, Some("clean.subgid"));
    let etc = r.path().join("etc");
    std::os::unix::fs::symlink("/nonexistent/subuid", etc.join("subuid")).unwrap();
    let g = fs::read(etc.join("subgid")).unwrap();
    add_erin(&etc);
    let o = run(&["admin", "subid", "apply"], r.path());
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("is a symlink to /nonexistent/subuid that cannot be followed"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "one-line error: {e}");
    assert_eq!(fs::read(etc.join("subgid")).unwrap(), g);
}

#[test]
fn plan_deterministic_and_first_fit() {
    let r = root_with(Some("clean.subuid"), None);
    let mut gr = fs::read_to_string(r.path().join("etc/group")).unwrap();
    gr.push_str("lab:x:165540:\n");
    fs::write(r.path().join("etc/group"), gr).unwrap();
    // carol (UID 1002) is written by UID in subuid; the plan must recognise her.
    let o = plan(&["--json"], r.path());
    let v = json(&o);
    assert_eq!(planned(&v, "subuid").len(), 0);
    let g: Vec<(String, u64)> = planned(&v, "subgid")
        .iter()
        .map(|e| {
            (
                e["owner"].as_str().unwrap().to_string(),
                e["start"].as_u64().unwrap(),
            )
        })
        .collect();
    // SUB_GID_MIN + (UID - UID_MIN) * 65536; but 165536.. covers GID 165540 (hpc): refused.
    assert_eq!(
        g,
        vec![
            ("alice".into(), 100000),
            ("carol".into(), 231072),
            ("dave".into(), 296608)
        ]
    );
    assert_eq!(v["plan"]["errors"][0]["user"], "bob");
    assert_eq!(o.status.code(), Some(1));
    let o = plan(&[], r.path());
    assert_eq!(o.status.code(), Some(1), "errors make plan fail");
    assert!(stderr(&o).contains("bob (UID 1001)"));
    // first-fit gives the others their subuid start, and bob the first free range.
    let o = plan(&["--strategy", "first-fit", "--json"], r.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let bob = planned(&v, "subgid")
        .iter()
        .find(|e| e["owner"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(bob["start"], 362144, "{v}");
    let starts: Vec<u64> = planned(&v, "subgid")
        .iter()
        .map(|e| e["start"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, vec![100000, 362144, 231072, 296608]);
}

#[test]
fn plan_selection_and_limits() {
    let r = root_with(None, None);
    let users = r.path().join("users");
    fs::write(&users, "# two of them\nbob\ncarol\n").unwrap();
    let o = plan(
        &[
            "--json",
            "--users-file",
            users.to_str().unwrap(),
            "--base",
            "1000000",
            "--size",
            "100000",
        ],
        r.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let lines: Vec<String> = planned(&v, "subuid")
        .iter()
        .map(|e| {
            format!(
                "{}:{}:{}",
                e["owner"].as_str().unwrap(),
                e["start"],
                e["count"]
            )
        })
        .collect();
    assert_eq!(lines, vec!["bob:1100000:100000", "carol:1200000:100000"]);
    fs::write(&users, "bob\nmallory\n").unwrap();
    let o = plan(&["--users-file", users.to_str().unwrap()], r.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(":2: no such user \"mallory\""),
        "{}",
        stderr(&o)
    );
    // UID range: UIDs without accounts are written by number.
    let o = plan(&["--json", "--uid-range", "1003-1004"], r.path());
    let v = json(&o);
    let owners: Vec<&str> = planned(&v, "subuid")
        .iter()
        .map(|e| e["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, vec!["dave", "1004"]);
    // Past 2^32-1: refused.
    let o = plan(
        &[
            "--strategy",
            "first-fit",
            "--base",
            "4294900000",
            "--max",
            "4294967295",
        ],
        r.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let o = plan(&["--size", "0"], r.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid SUB_UID limits"));
}

#[test]
fn apply_twice_is_idempotent_and_dry_run_writes_nothing() {
    let r = root_with(Some("clean.subuid"), Some("clean.subgid"));
    let etc = r.path().join("etc");
    add_erin(&etc);
    let before = fs::read_to_string(etc.join("subuid")).unwrap();

    let o = run(&["admin", "subid", "apply", "--dry-run"], r.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(
        t.contains("+erin:362144:65536") && t.contains("dry run"),
        "{t}"
    );
    assert_eq!(fs::read_to_string(etc.join("subuid")).unwrap(), before);

    let o = run(&["admin", "subid", "apply"], r.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(
        t.contains("--- ") && t.contains("+erin:362144:65536") && t.contains("added 1 entry"),
        "{t}"
    );
    let after = fs::read_to_string(etc.join("subuid")).unwrap();
    assert_eq!(after, format!("{before}erin:362144:65536\n"));
    assert_eq!(fs::read_to_string(etc.join("subuid-")).unwrap(), before);
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(etc.join("subuid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o644);
    // Only root can give the file to root:root (as a user, apply keeps the owner).
    if is_root() {
        assert_eq!((m.uid(), m.gid()), (0, 0));
    }
    let mtime = m.mtime_nsec();

    let o = run(&["admin", "subid", "apply"], r.path());
    assert!(o.status.success());
    let t = stdout(&o);
    assert_eq!(
        t.matches("no change (already up to date)").count(),
        2,
        "{t}"
    );
    assert_eq!(fs::read_to_string(etc.join("subuid")).unwrap(), after);
    assert_eq!(
        fs::metadata(etc.join("subuid")).unwrap().mtime_nsec(),
        mtime,
        "second run rewrote the file"
    );
    let o = run(&["admin", "subid", "check"], r.path());
    assert!(o.status.success(), "{}", stdout(&o));
    let names: Vec<String> = fs::read_dir(&etc)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // .pwd.lock stays, as glibc's lckpwdf leaves /etc/.pwd.lock.
    assert!(
        !names
            .iter()
            .any(|n| (n.ends_with(".lock") && n != ".pwd.lock") || n.contains("tmp")),
        "{names:?}"
    );
}

#[test]
fn apply_refuses_on_errors_and_respects_locks() {
    let r = root_with(Some("clean.subuid"), Some("clean.subgid"));
    let etc = r.path().join("etc");
    // Someone (alive: this test process) holds shadow's lock on subuid.
    fs::write(etc.join("subuid.lock"), format!("{}\0", std::process::id())).unwrap();
    let o = run(
        &["admin", "subid", "apply", "--lock-timeout", "0"],
        r.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("subuid.lock is locked by PID"), "{e}");
    fs::remove_file(etc.join("subuid.lock")).unwrap();
    // A plan with errors writes nothing (bob's deterministic subgid covers GID 165540).
    let mut gr = fs::read_to_string(etc.join("group")).unwrap();
    gr.push_str("lab:x:165540:\n");
    fs::write(etc.join("group"), gr).unwrap();
    fs::remove_file(etc.join("subgid")).unwrap();
    let o = run(&["admin", "subid", "apply"], r.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(!etc.join("subgid").exists());
}

/// `useradd --prefix` cannot take /etc/subuid while warren holds it: we lock as shadow does.
#[test]
fn useradd_is_excluded_while_apply_holds_the_lock() {
    need!(need_root("useradd --prefix"));
    need!(need_programs(&["useradd"]));
    let r = root_with(Some("clean.subuid"), Some("clean.subgid"));
    let etc = r.path().join("etc");
    for f in ["shadow", "gshadow"] {
        fs::write(etc.join(f), "").unwrap();
    }
    add_erin(&etc);
    // The pause applies to each file, so warren holds the locks for 2 × 12 s: longer than
    // useradd's 15 one-second tries.
    let (mut child, _err) = paused_apply(r.path(), 12);
    let t0 = std::time::Instant::now();
    let ua = Command::new("useradd")
        .args(["--prefix", r.path().to_str().unwrap(), "-M", "frank"])
        .output()
        .unwrap();
    let waited = t0.elapsed();
    eprintln!(
        "useradd returned after {waited:?}: {}",
        String::from_utf8_lossy(&ua.stderr).trim()
    );
    let _ = child.wait();
    let e = String::from_utf8_lossy(&ua.stderr);
    // useradd saw shadow's own lock file, held by warren, and gave up after its retries.
    assert!(
        !ua.status.success(),
        "useradd got the lock while warren held it"
    );
    assert!(
        e.contains("subuid.lock already used by PID") || e.contains("cannot lock"),
        "{e}"
    );
    assert!(
        waited >= Duration::from_secs(10),
        "useradd did not retry: {waited:?}"
    );
    assert!(!fs::read_to_string(etc.join("passwd"))
        .unwrap()
        .contains("frank"));
    let u = fs::read_to_string(etc.join("subuid")).unwrap();
    assert!(u.contains("erin:362144:65536"), "{u}");
    assert!(crate_parse_ok(&u));
}

fn crate_parse_ok(text: &str) -> bool {
    warren::subid::parse(text).problems.is_empty()
}

/// Start `apply` with the test pause; returns once it is paused before the rename.
fn paused_apply(
    root: &Path,
    secs: u64,
) -> (std::process::Child, BufReader<std::process::ChildStderr>) {
    let mut child = warren()
        .args(["admin", "subid", "apply", "--root"])
        .arg(root)
        .env("WARREN_ADMIN_TEST_PAUSE_BEFORE_RENAME", secs.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("apply exited before pausing");
        }
        if line.contains("test pause before rename") {
            break;
        }
    }
    (child, err)
}

#[test]
fn apply_killed_mid_write_leaves_old_file_and_next_run_recovers() {
    let r = root_with(Some("clean.subuid"), Some("clean.subgid"));
    let etc = r.path().join("etc");
    add_erin(&etc);
    let before = fs::read_to_string(etc.join("subuid")).unwrap();
    let (mut child, _err) = paused_apply(r.path(), 60);
    // The new content is complete in the temp file, not yet renamed.
    assert!(fs::read_to_string(etc.join("subuid.warren-tmp"))
        .unwrap()
        .contains("erin"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(fs::read_to_string(etc.join("subuid")).unwrap(), before);
    assert!(
        etc.join("subuid.lock").exists(),
        "killed writer leaves shadow's lock behind"
    );
    // The next run takes over the stale lock, cleans the temp file and finishes.
    let o = run(
        &["admin", "subid", "apply", "--lock-timeout", "0"],
        r.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(etc.join("subuid")).unwrap(),
        format!("{before}erin:362144:65536\n")
    );
    assert!(!etc.join("subuid.warren-tmp").exists());
    assert!(!etc.join("subuid.lock").exists());
}

#[test]
fn apply_killed_at_random_times_leaves_old_or_new() {
    let d = tempfile::tempdir().unwrap();
    let gen = generate(d.path(), 20_000);
    let apply = || {
        let mut c = warren();
        c.args([
            "admin",
            "subid",
            "apply",
            "--lock-timeout",
            "5",
            "--strategy",
            "first-fit",
            "--size",
            "1000",
            "--root",
        ])
        .arg(&gen)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        c
    };
    let reset = || {
        for f in ["subuid", "subgid", "subuid-", "subgid-"] {
            let _ = fs::remove_file(gen.join("etc").join(f));
        }
    };
    // How long one whole run takes here and now: the kills below are spread from 0 to
    // 1.5 times that, so some land before the rename and some after. Not an assertion
    // on time: only where the kills land depends on it.
    let t0 = std::time::Instant::now();
    assert!(apply().status().unwrap().success());
    let whole = t0.elapsed();
    let full = fs::read_to_string(gen.join("etc/subuid")).unwrap();
    assert_eq!(warren::subid::parse(&full).entries.len(), 20_000);
    let (mut seen_old, mut seen_new) = (0, 0);
    for i in 0..60u32 {
        if i >= 25 && seen_old > 0 && seen_new > 0 {
            break;
        }
        reset();
        let mut child = apply().spawn().unwrap();
        std::thread::sleep(whole * ((i * 7) % 31) / 20);
        let _ = child.kill();
        let _ = child.wait();
        match fs::read_to_string(gen.join("etc/subuid")) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => seen_old += 1,
            Err(e) => panic!("iteration {i}: {e}"),
            Ok(now) => {
                // Only the complete new file may ever be visible.
                assert_eq!(now, full, "torn or partial file at iteration {i}");
                seen_new += 1;
            }
        }
    }
    eprintln!("kills that left the old state: {seen_old}, the new file: {seen_new}");
    assert!(
        seen_old > 0 && seen_new > 0,
        "the kills never landed on both sides of the rename (old {seen_old}, new {seen_new}): the test proved nothing"
    );
    // A retry after a kill finishes the job and leaves no lock or temp file.
    reset();
    let mut child = apply().spawn().unwrap();
    std::thread::sleep(whole / 3);
    let _ = child.kill();
    let _ = child.wait();
    assert!(apply().status().unwrap().success());
    assert_eq!(fs::read_to_string(gen.join("etc/subuid")).unwrap(), full);
    let names: Vec<String> = fs::read_dir(gen.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| (n.ends_with(".lock") && n != ".pwd.lock") || n.contains("tmp")),
        "{names:?}"
    );
}

/// ROOT/etc with `n` users (UIDs 1000..), their groups, and login.defs allowing them all.
fn generate(dir: &Path, n: u32) -> PathBuf {
    let root = dir.join("gen");
    let etc = root.join("etc");
    fs::create_dir_all(&etc).unwrap();
    let mut pw = String::from("root:x:0:0:root:/root:/bin/bash\n");
    let mut gr = String::from("root:x:0:\n");
    for i in 0..n {
        let uid = 1000 + i;
        pw.push_str(&format!("u{i:06}:x:{uid}:{uid}::/home/u{i:06}:/bin/bash\n"));
        gr.push_str(&format!("u{i:06}:x:{uid}:\n"));
    }
    fs::write(etc.join("passwd"), pw).unwrap();
    fs::write(etc.join("group"), gr).unwrap();
    fs::write(etc.join("login.defs"), "UID_MIN 1000\nUID_MAX 200000\n").unwrap();
    root
}

#[test]
fn hundred_thousand_users() {
    let d = tempfile::tempdir().unwrap();
    let gen = generate(d.path(), 100_000);
    // 100,000 × 65536 IDs do not fit in 32 bits: refused, nothing written.
    let o = run(&["admin", "subid", "apply", "--base", "200000"], &gen);
    assert_eq!(o.status.code(), Some(1));
    assert!(!gen.join("etc/subuid").exists());
    let args = ["--base", "200000", "--size", "40000", "--max", "4294967294"];
    let mut a = vec!["admin", "subid", "apply"];
    a.extend(args);
    let o = run(&a, &gen);
    assert!(o.status.success(), "{}", stderr(&o));
    let u = warren::subid::read(&gen.join("etc/subuid")).unwrap();
    assert_eq!(u.entries.len(), 100_000);
    let last = u.entries.last().unwrap();
    assert_eq!(
        (last.owner.as_str(), last.start),
        ("u099999", 200000 + 99_999 * 40000)
    );
    let o = run(&a, &gen);
    assert!(stdout(&o).matches("no change").count() == 2);
    let o = run(&["admin", "subid", "check", "--json"], &gen);
    assert!(o.status.success());
    let v = json(&o);
    assert_eq!(v["errors"], 0);
    assert_eq!(v["warnings"], 200_000, "every range is below 65536 IDs");
    assert_eq!(v["entries"]["subuid"], 100_000);
}
