//! An image's prefetch list (docs/run.md, "The prefetch list"): the first start of an
//! image on a fresh mount has warren's image server record what it read, and the next
//! fresh mount reads that ahead ("replay" in `--timing`); a list that does not parse is
//! removed with a notice and made again; a list of fewer than 8 entries is not read
//! ahead (the command prefetch covers it); a holder killed with `kill -9` still leaves its
//! list (and nothing else); `run.prefetch_list = false` keeps none.
//!
//! Each test runs an image file of its own and a cache directory of its own.

mod run_support;
use run_support::{fixture, leftover_mounts, ok, stderr, Fixture, User};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A copy of the fixture's image for one test.
fn own_image(f: &Fixture, name: &str) -> PathBuf {
    let p = f.dir.join(format!("plist-{name}.sqfs"));
    std::fs::copy(&f.sqfs, &p).unwrap();
    p
}

/// The fixture, an image file and a cache directory of the test `name`'s own.
fn own(name: &str) -> Option<(&'static Fixture, PathBuf, PathBuf)> {
    let f = fixture()?;
    let cache = f.user_dir(&f.ci, &format!("plist-cache-{name}"));
    Some((f, own_image(f, name), cache))
}

/// `warren run --timing … IMG ARGS` as `u`, with `cache` as `XDG_CACHE_HOME`.
fn run_cmd(f: &Fixture, u: &User, cache: &Path, img: &Path, args: &[&str]) -> Command {
    let mut c = f.cmd(u, &f.run_args_on(img, &[&["--timing"], args].concat()));
    c.env("XDG_CACHE_HOME", cache);
    c
}

/// Run, require success; its `--timing` lines (stderr).
fn run(f: &Fixture, u: &User, cache: &Path, img: &Path, args: &[&str]) -> String {
    let o = run_cmd(f, u, cache, img, args).output().unwrap();
    ok(&o);
    let e = stderr(&o);
    eprintln!("{}", e.trim());
    e
}

/// The lists in `cache` (file names).
fn lists(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.join("warren/prefetch"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The entries of the one list in `cache`, as "KIND PATH" lines (sizes left out).
fn entries(cache: &Path) -> Vec<String> {
    let names = lists(cache);
    assert_eq!(names.len(), 1, "{names:?}");
    let b = std::fs::read(cache.join("warren/prefetch").join(&names[0])).unwrap();
    let body = b
        .strip_prefix(b"warren-prefetch-list 1\n".as_slice())
        .unwrap();
    body.split(|&c| c == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let s = String::from_utf8_lossy(e);
            let (k, rest) = s.split_at(1);
            let path = rest.split_once(' ').unwrap().1;
            format!("{k} {path}")
        })
        .collect()
}

/// Whether the one list in `cache` was read ahead on this node since the fixture began:
/// its reader's lock file exists in the runtime directory (a shared mount's holder reads
/// it from its own start, which no container's `--timing` shows).
fn read_ahead(f: &Fixture, cache: &Path) -> bool {
    let names = lists(cache);
    assert_eq!(names.len(), 1, "{names:?}");
    let lock = format!("{}.lock", names[0]);
    f.rundir(&f.ci).join("prefetch").join(lock).exists()
}

/// Wait (bounded) for `cond`.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No process of `u`'s runs `img`, and no mount of it is left.
fn nothing_left(u: &User, img: &Path) {
    let name = img.to_str().unwrap().to_string();
    eventually("processes of the image left", || {
        run_support::live_processes(u.uid).iter().all(|p| {
            let pid = p.split(' ').next().unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !String::from_utf8_lossy(&cmd).contains(&name)
        })
    });
    let m = leftover_mounts();
    assert!(m.iter().all(|l| !l.contains(&name)), "{m:?}");
}

const WALK: &[&str] = &[
    "sh",
    "-c",
    "ls /work /bin /etc /tmp /root /u1 /u65534 /data48 >/dev/null && cat /data48/f >/dev/null",
];

#[test]
fn a_first_start_records_and_the_next_fresh_mount_reads_it_ahead() {
    let Some((f, img, cache)) = own("replay") else {
        return;
    };
    let t = run(f, &f.ci, &cache, &img, &[&["--no-join"], WALK].concat());
    assert!(!t.contains("replay"), "nothing to read ahead yet: {t}");
    let names = lists(&cache);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].ends_with(".sh"),
        "named for the command: {names:?}"
    );
    let e = entries(&cache);
    // The shell (busybox), the directory it listed and the file it read, in that order.
    let at = |x: &str| {
        e.iter()
            .position(|y| y == x)
            .unwrap_or_else(|| panic!("{x} in {e:?}"))
    };
    assert!(at("f /bin/busybox") < at("d /work"), "{e:?}");
    assert!(at("d /work") < at("f /data48/f"), "{e:?}");
    let mode = std::fs::metadata(cache.join("warren/prefetch").join(&names[0])).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&mode), f.ci.uid);

    // A fresh mount again (private): read ahead. The list is kept as it was.
    let t = run(f, &f.ci, &cache, &img, &[&["--no-join"], WALK].concat());
    assert!(t.contains("replay"), "{t}");
    assert_eq!(entries(&cache), e);
    // Another command of the image gets its own list; one of a few files (what the
    // command's own prefetch reads) is not read ahead.
    run(f, &f.ci, &cache, &img, &["--no-join", "cat", "/etc/group"]);
    assert_eq!(lists(&cache).len(), 2, "{:?}", lists(&cache));
    let t = run(f, &f.ci, &cache, &img, &["--no-join", "cat", "/etc/group"]);
    assert!(!t.contains("replay"), "{t}");
    nothing_left(&f.ci, &img);
}

#[test]
fn a_list_that_does_not_parse_is_removed_and_made_again() {
    let Some((f, img, cache)) = own("bad") else {
        return;
    };
    run(f, &f.ci, &cache, &img, &[&["--no-join"], WALK].concat());
    let path = cache.join("warren/prefetch").join(&lists(&cache)[0]);
    std::fs::write(&path, b"warren-prefetch-list 1\nf12 ../../etc/shadow\0").unwrap();
    let t = run(f, &f.ci, &cache, &img, &[&["--no-join"], WALK].concat());
    assert!(
        t.contains("prefetch list") && t.contains("not an absolute path") && t.contains("removed"),
        "{t}"
    );
    let timing = t.lines().find(|l| l.contains("timing: prepare")).unwrap();
    assert!(!timing.contains("replay"), "nothing read ahead: {t}");
    assert!(!path.exists());
    run(f, &f.ci, &cache, &img, &[&["--no-join"], WALK].concat());
    assert!(path.exists(), "made again by the next fresh mount");
    nothing_left(&f.ci, &img);
}

#[test]
fn kill_9_of_a_recording_holder_leaves_its_list_and_nothing_else() {
    let Some((f, img, cache)) = own("kill") else {
        return;
    };
    let mut c = run_cmd(f, &f.ci, &cache, &img, WALK);
    c.env("WARREN_RUN_SHARED_MOUNT_IDLE", "60");
    ok(&c.output().unwrap());
    assert!(
        lists(&cache).is_empty(),
        "the holder records for a while after its start"
    );
    let ps = ok(&f.cmd(&f.ci, &["ps", "--json"]).output().unwrap());
    let all: Vec<serde_json::Value> = serde_json::from_str(&ps).unwrap();
    let holder = all
        .iter()
        .find(|r| r["kind"] == "holder" && r["image"] == img.to_str().unwrap())
        .expect("a shared mount's holder");
    let pid = holder["pid"].as_i64().unwrap() as i32;
    // SAFETY: a signal to the test user's holder process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    eventually("the list written after the holder's death", || {
        lists(&cache).len() == 1
    });
    assert!(entries(&cache).contains(&"d /work".to_string()));
    nothing_left(&f.ci, &img);
    // Its holder's record is stale now; the next run works, and its new shared mount
    // reads the list ahead.
    assert!(!read_ahead(f, &cache));
    run(f, &f.ci, &cache, &img, WALK);
    assert!(read_ahead(f, &cache));
    nothing_left(&f.ci, &img);
}

#[test]
fn the_setting_turns_it_off() {
    let Some((f, img, cache)) = own("off") else {
        return;
    };
    let mut c = run_cmd(f, &f.ci, &cache, &img, &[&["--no-join"], WALK].concat());
    c.env("WARREN_RUN_PREFETCH_LIST", "false");
    ok(&c.output().unwrap());
    assert!(!cache.join("warren").exists());
    nothing_left(&f.ci, &img);
}

#[test]
fn a_join_reads_the_list_ahead_once_the_caches_were_dropped() {
    let Some((f, img, cache)) = own("dropped") else {
        return;
    };
    run(f, &f.ci, &cache, &img, &[&["--no-join"], WALK].concat());
    let held = |args: &[&str]| {
        let mut c = run_cmd(f, &f.ci, &cache, &img, args);
        c.env("WARREN_RUN_SHARED_MOUNT_IDLE", "60");
        let o = c.output().unwrap();
        ok(&o);
        stderr(&o)
    };
    // The shared mount's first run: fresh, read ahead (by its holder). A join: warm,
    // nothing to do.
    assert!(!read_ahead(f, &cache));
    held(WALK);
    assert!(read_ahead(f, &cache));
    let t = held(WALK);
    assert!(t.contains("join") && !t.contains("replay"), "{t}");
    // With the kernel's caches dropped the held mount is cold again.
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let t = held(WALK);
    assert!(t.contains("join") && t.contains("replay"), "{t}");
    // End this image's shared mount (only its: other tests' holders are theirs).
    let ps = ok(&f.cmd(&f.ci, &["ps", "--json"]).output().unwrap());
    let all: Vec<serde_json::Value> = serde_json::from_str(&ps).unwrap();
    for r in all.iter().filter(|r| r["image"] == img.to_str().unwrap()) {
        ok(&f
            .cmd(&f.ci, &["rm", r["id"].as_str().unwrap()])
            .output()
            .unwrap());
    }
    nothing_left(&f.ci, &img);
}

#[test]
fn a_list_a_week_old_is_made_again() {
    // docs/run.md, "The prefetch list": a list is recorded from one start; after a week
    // the next fresh mount records it again instead of reading it ahead.
    let Some((f, img, cache)) = own("stale") else {
        return;
    };
    run(f, &f.ci, &cache, &img, &[&["--no-join"], WALK].concat());
    let names = lists(&cache);
    assert_eq!(names.len(), 1, "{names:?}");
    let path = cache.join("warren/prefetch").join(&names[0]);
    let age = |days: u64| {
        let t = std::time::SystemTime::now() - Duration::from_secs(days * 24 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    // Six days old: read ahead, kept as it is.
    age(6);
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let t = run(f, &f.ci, &cache, &img, &[&["--no-join"], WALK].concat());
    assert!(t.contains("replay"), "{t}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        before
    );
    // Eight days old: not read ahead, recorded anew (a new file, of today).
    age(8);
    let t = run(f, &f.ci, &cache, &img, &[&["--no-join"], WALK].concat());
    assert!(!t.contains("replay"), "a stale list is not read ahead: {t}");
    assert_eq!(lists(&cache), names);
    let fresh = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert!(
        fresh.elapsed().unwrap() < Duration::from_secs(600),
        "{fresh:?}"
    );
    assert!(entries(&cache).contains(&"d /work".to_string()));
    // And the new list is read ahead by the next fresh mount.
    let t = run(f, &f.ci, &cache, &img, &[&["--no-join"], WALK].concat());
    assert!(t.contains("replay"), "{t}");
    nothing_left(&f.ci, &img);
}
