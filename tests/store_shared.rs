//! A shared store: an admin (root, umask 077) pulls into it with `--store shared`; the
//! files come out 0644 and directories 0755 anyway, and an unprivileged user finds,
//! inspects and "pulls" the image from it without copying anything.

mod support;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use support::*;

fn walk(p: &std::path::Path, f: &mut dyn FnMut(&std::path::Path, &std::fs::Metadata)) {
    let m = std::fs::symlink_metadata(p).unwrap();
    f(p, &m);
    if m.is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            walk(&e.path(), f);
        }
    }
}

#[test]
fn admin_pulls_into_shared_user_reuses() {
    need!(need_user(TEST_USER));
    let env = Env::new();
    let shared = env.path().join("shared");
    env.write_config(&format!("shared = [\"{}\"]\n", shared.display()));
    let spec = need!(env.torture());

    // The admin, with a strict umask.
    let o = Command::new("sh")
        .args(["-c", "umask 077; exec \"$0\" pull -q --store shared \"$1\""])
        .arg(warren_bin())
        .arg(&spec)
        .env("WARREN_CONFIG", env.config())
        .output()
        .unwrap();
    assert!(o.status.success(), "admin pull: {}", stderr(&o));
    let digest = String::from_utf8_lossy(&o.stdout).trim().to_string();
    walk(&shared, &mut |p, m| {
        let mode = m.permissions().mode() & 0o7777;
        if m.is_dir() {
            assert_eq!(mode, 0o755, "{p:?}");
        } else {
            assert_eq!(mode, 0o644, "{p:?}");
        }
    });

    // The user: finds it, inspects it, re-pulls it without a copy.
    let out = env.ok(&["images", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["digest"] == digest)
        .expect("image listed");
    assert_eq!(row["store"], "shared");
    let insp: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", &spec])).unwrap();
    assert_eq!(insp["labels"]["test"], "torture");
    let again = env.run(&["pull", &spec]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
    let user_images = env.store().join("images");
    let n = std::fs::read_dir(&user_images)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(n, 0, "the user's store got a copy");
    // The user cannot remove what is in the shared store.
    let rmi = env.run(&["rmi", &digest]);
    assert!(!rmi.status.success());
    assert!(shared
        .join("images")
        .join(digest.trim_start_matches("sha256:"))
        .is_dir());
}

/// The same tag and image in the user's store and a shared one: `images` lists it once,
/// where pull and run find it (the user's store), not twice as "user".
#[test]
fn image_in_both_stores_is_listed_once() {
    need!(need_user(TEST_USER));
    let env = Env::new();
    let shared = env.path().join("shared");
    env.write_config(&format!("shared = [\"{}\"]\n", shared.display()));
    let spec = need!(env.torture());
    let digest = env.ok(&["pull", "-q", &spec]).trim().to_string();
    let o = Command::new(warren_bin())
        .args(["pull", "-q", "--store", "shared", &spec])
        .env("WARREN_CONFIG", env.config())
        .output()
        .unwrap();
    assert!(o.status.success(), "admin pull: {}", stderr(&o));
    assert!(shared
        .join("images")
        .join(digest.trim_start_matches("sha256:"))
        .is_dir());
    let rows = json(&env.run(&["images", "--json"]));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["digest"], digest);
    assert_eq!(rows[0]["store"], "user");
    assert_eq!(rows[0]["store_path"], env.store().display().to_string());
}

/// A damaged image in a shared store the user cannot write: the user's pull does not
/// answer "up to date" from it but builds a sound copy in the user's own store.
#[test]
fn damaged_shared_image_is_rebuilt_in_the_users_store() {
    use std::io::{Seek, SeekFrom, Write};
    need!(need_user(TEST_USER));
    let env = Env::new();
    let shared = env.path().join("shared");
    env.write_config(&format!("shared = [\"{}\"]\n", shared.display()));
    let spec = need!(env.torture());
    let o = Command::new(warren_bin())
        .args(["pull", "-q", "--store", "shared", &spec])
        .env("WARREN_CONFIG", env.config())
        .output()
        .unwrap();
    assert!(o.status.success(), "admin pull: {}", stderr(&o));
    let digest = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let sqfs = shared
        .join("images")
        .join(digest.trim_start_matches("sha256:"))
        .join("image.sqfs");
    let len = std::fs::metadata(&sqfs).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(&sqfs).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&[0xa5; 4096]).unwrap();
    drop(f);

    let again = env.run(&["pull", &spec]);
    assert!(again.status.success(), "{}", stderr(&again));
    let err = stderr(&again);
    assert!(
        err.contains("damaged") && !err.contains("up to date"),
        "{err}"
    );
    assert!(env.sqfs(&digest).is_file(), "no copy in the user's store");
    let v = env.run(&["verify", "--json"]);
    assert_eq!(v.status.code(), Some(1), "the shared copy is still damaged");
    let rows = json(&v);
    let user_row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["store_path"] == env.store().display().to_string())
        .expect("the user's copy is verified");
    assert_eq!(user_row["status"], "sound");
    // The image is found (and run) from the user's store from now on.
    let rows = json(&env.run(&["images", "--json"]));
    assert_eq!(rows[0]["store"], "user", "{rows}");
}

/// A shared image published by an older warren (no integrity record) that the user
/// cannot write is used as it is: no copy per user. Its owner's pull adds the record.
#[test]
fn unrecorded_read_only_shared_image_is_used_as_is() {
    need!(need_user(TEST_USER));
    let env = Env::new();
    let shared = env.path().join("shared");
    env.write_config(&format!("shared = [\"{}\"]\n", shared.display()));
    let spec = need!(env.torture());
    let admin_pull = || {
        let o = Command::new(warren_bin())
            .args(["pull", "--store", "shared", &spec])
            .env("WARREN_CONFIG", env.config())
            .output()
            .unwrap();
        assert!(o.status.success(), "admin pull: {}", stderr(&o));
        o
    };
    let digest = String::from_utf8_lossy(&admin_pull().stdout)
        .trim()
        .to_string();
    let record = shared
        .join("images")
        .join(digest.trim_start_matches("sha256:"))
        .join("integrity.json");
    std::fs::remove_file(&record).unwrap();

    let again = env.run(&["pull", &spec]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
    assert!(!env.sqfs(&digest).exists(), "the user's store got a copy");

    // The owner (root here) can write it: its pull rebuilds it with a record.
    let o = admin_pull();
    assert!(stderr(&o).contains("no integrity record"), "{}", stderr(&o));
    assert!(record.is_file());
}
