//! A published image changed behind the store's back (a container wrote into another
//! image's image.sqfs, a truncation, an image from before integrity records): `warren
//! pull` of the up-to-date tag notices and rebuilds it; `warren verify` checks them all.

mod support;
use std::io::{Seek, SeekFrom, Write};
use support::*;

/// A small one-layer layout: a few files with known bytes.
fn layout(env: &Env) -> (String, Vec<(String, String)>) {
    let dir = env.path().join("img");
    let mut t = RawTar::default().dir("data");
    let mut files = Vec::new();
    for i in 0..4u8 {
        // Pseudo-random, so the squashfs has real data blocks to damage.
        let data: Vec<u8> = (0..200_000u32)
            .map(|n| (n.wrapping_mul(2_654_435_761).rotate_left(u32::from(i)) >> 13) as u8)
            .collect();
        let name = format!("data/f{i}");
        files.push((name.clone(), sha256_hex(&data)));
        t = t.file(&name, &data);
    }
    write_layout(&dir, &[t.done()]);
    env.give(&dir);
    (format!("oci:{}", dir.display()), files)
}

fn assert_files(env: &Env, d: &str, files: &[(String, String)]) {
    let got = read_sqfs(&env.sqfs(d));
    for (name, sum) in files {
        assert_eq!(&sha256_hex(&got[name].data), sum, "{name}");
    }
}

/// Overwrite 4 KiB in the middle of the image file (same size).
fn scribble(p: &std::path::Path) {
    let len = std::fs::metadata(p).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&[0x5a; 4096]).unwrap();
}

fn repull(env: &Env, spec: &str, d: &str) -> String {
    let o = env.run(&["pull", spec]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), d.trim());
    stderr(&o)
}

#[test]
fn repull_repairs_a_modified_image() {
    need!(need_programs(&["tar2sqfs", "sqfs2tar"]));
    let env = Env::new();
    let (spec, files) = layout(&env);
    let d = env.ok(&["pull", "-q", &spec]);
    assert!(env.image_dir(&d).join("integrity.json").is_file());
    assert!(repull(&env, &spec, &d).contains("up to date"));

    scribble(&env.sqfs(&d));
    let err = repull(&env, &spec, &d);
    assert!(
        err.contains("damaged") && err.contains("squashing"),
        "{err}"
    );
    assert_files(&env, &d, &files);
    assert!(repull(&env, &spec, &d).contains("up to date"));
    assert!(env.staging().is_empty(), "{:?}", env.staging());
}

#[test]
fn repull_repairs_a_truncated_image() {
    need!(need_programs(&["tar2sqfs", "sqfs2tar"]));
    let env = Env::new();
    let (spec, files) = layout(&env);
    let d = env.ok(&["pull", "-q", &spec]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(env.sqfs(&d))
        .unwrap();
    f.set_len(4096).unwrap();
    drop(f);
    let err = repull(&env, &spec, &d);
    assert!(
        err.contains("4096 bytes") && err.contains("squashing"),
        "{err}"
    );
    assert_files(&env, &d, &files);
}

#[test]
fn image_without_a_record_is_rebuilt_once() {
    need!(need_programs(&["tar2sqfs", "sqfs2tar"]));
    let env = Env::new();
    let (spec, files) = layout(&env);
    let d = env.ok(&["pull", "-q", &spec]);
    // As published by an older warren.
    std::fs::remove_file(env.image_dir(&d).join("integrity.json")).unwrap();
    let v = env.run(&["verify"]);
    assert!(v.status.success(), "unrecorded is not damaged");
    assert!(stdout(&v).starts_with("unrecorded"), "{}", stdout(&v));
    let err = repull(&env, &spec, &d);
    assert!(
        err.contains("no integrity record") && err.contains("squashing"),
        "{err}"
    );
    assert!(env.image_dir(&d).join("integrity.json").is_file());
    assert_files(&env, &d, &files);
    assert!(repull(&env, &spec, &d).contains("up to date"));
}

#[test]
fn verify_reports_damage_and_the_next_pull_rebuilds() {
    need!(need_programs(&["tar2sqfs", "sqfs2tar"]));
    let env = Env::new();
    let (spec, files) = layout(&env);
    let d = env.ok(&["pull", "-q", &spec]);
    let ok = env.run(&["verify", "--json"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let rows = json(&ok);
    assert_eq!(rows[0]["status"], "sound", "{rows}");
    assert_eq!(rows[0]["digest"], d.trim());

    scribble(&env.sqfs(&d));
    let bad = env.run(&["verify"]);
    assert_eq!(bad.status.code(), Some(1), "{}", stdout(&bad));
    let line = stdout(&bad);
    assert!(
        line.starts_with("damaged") && line.contains(d.trim()),
        "{line}"
    );
    assert!(
        line.contains("the next pull of its tag rebuilds it"),
        "{line}"
    );

    let err = repull(&env, &spec, &d);
    assert!(err.contains("squashing"), "{err}");
    assert_files(&env, &d, &files);
    assert!(env.run(&["verify"]).status.success());
}
