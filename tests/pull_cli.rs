//! The store commands end to end: pull, cached re-pull, images, inspect, rmi, prune, and
//! one-line errors for bad input.

mod support;
use support::registry::{need_registry, PLAIN};
use support::*;

#[test]
fn pull_images_inspect_rmi_prune() {
    let env = Env::new();
    let spec = need!(env.torture());
    let d = env.ok(&["pull", "-q", &spec]).trim().to_string();
    assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");

    // Cached: same digest, nothing rebuilt.
    let o = env.run(&["pull", &spec]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), d);
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("squashing"));

    let rows: serde_json::Value = serde_json::from_str(&env.ok(&["images", "--json"])).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["digest"], d);
    assert_eq!(rows[0]["store"], "user");
    assert!(rows[0]["name"].as_str().unwrap().starts_with("oci:/"));
    assert!(rows[0]["size"].as_u64().unwrap() > 0);
    assert!(env.ok(&["images"]).contains(&d[..19]));

    for key in [spec.as_str(), &d, &d[7..19]] {
        let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", key])).unwrap();
        assert_eq!(v["digest"], d);
        assert_eq!(v["entrypoint"], serde_json::json!(["/bin/tool"]));
        assert_eq!(v["cmd"], serde_json::json!(["--help"]));
        assert_eq!(v["workdir"], "/home/u1001");
        assert_eq!(v["user"], "1001:1001");
        assert_eq!(v["env"], serde_json::json!(["PATH=/bin", "TORTURE=1"]));
        assert_eq!(v["labels"]["test"], "torture");
    }

    // Stale staging of a dead pull, and an unreferenced image: prune takes both.
    let stale = env
        .store()
        .join("tmp")
        .join(format!("img-{}.999999.0", &d[7..]));
    std::fs::create_dir(&stale).unwrap();
    env.give(&stale);
    let dry = env.ok(&["prune", "--dry-run"]);
    assert!(
        dry.contains("would remove") && dry.contains("999999"),
        "{dry}"
    );
    assert!(stale.exists(), "dry run removed something");

    let out = env.ok(&["rmi", &spec]);
    assert!(out.contains("untagged") && out.contains(&d), "{out}");
    assert!(!env.sqfs(&d).exists());
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["images", "--json"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 0);
    env.ok(&["prune"]);
    assert!(!stale.exists());

    // Errors: one line, non-zero.
    for args in [
        vec!["pull", "Not A Ref"],
        vec!["pull", "oci:/nonexistent/layout"],
        vec!["inspect", "nothing-here"],
        vec!["rmi", "nothing-here"],
        vec!["pull", "--platform", "linux", &spec],
        vec!["pull", "--store", "elsewhere", &spec],
        vec!["pull", "--shared", &spec],
        vec!["rmi", "--store", "elsewhere", &spec],
        vec!["prune", "--store", "elsewhere"],
        vec!["prune", "--shared"],
    ] {
        let o = env.run(&args);
        let e = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: {e}");
        assert!(
            e.starts_with("warren: ") || e.starts_with("error: "),
            "{args:?}: {e}"
        );
    }
}

#[test]
fn pull_busybox_from_registry() {
    need!(need_registry(&[PLAIN]));
    let env = Env::new();
    let o = env.run(&["pull", "-q", "127.0.0.1:5000/test/busybox:latest"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let d = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let got = read_sqfs(&env.sqfs(&d));
    assert_eq!(got["bin/sh"].kind, 'l');
    assert_eq!(got["bin/busybox"].kind, 'f');
    assert_eq!(got["tmp"].mode, 0o1777);
    // Cached re-pull answers from the store.
    let o = env.run(&["pull", "127.0.0.1:5000/test/busybox:latest"]);
    assert!(
        o.status.success() && stderr(&o).contains("up to date"),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "127.0.0.1:5000/test/busybox"])).unwrap();
    assert_eq!(v["cmd"], serde_json::json!(["/bin/sh"]));

    // A single-platform image asked for another platform: pulled, with one warning.
    let o = env.run(&[
        "pull",
        "--platform",
        "linux/riscv64",
        "127.0.0.1:5000/test/busybox:latest",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is built for linux/amd64, not the requested linux/riscv64"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn one_tag_per_platform() {
    need!(need_registry(&[PLAIN]));
    let env = Env::new();
    let r = "127.0.0.1:5000/test/multi:latest";
    let o = env.run(&["pull", "-q", "--platform", "linux/amd64", r]);
    if !o.status.success() {
        skip!("test/multi not pullable here: {}", stderr(&o));
    }
    let amd = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let arm = env
        .ok(&["pull", "-q", "--platform", "linux/arm64", r])
        .trim()
        .to_string();
    assert_ne!(amd, arm);
    let rows: serde_json::Value = serde_json::from_str(&env.ok(&["images", "--json"])).unwrap();
    let mut got: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["platform"].as_str().unwrap().to_string(),
                r["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("linux/amd64".to_string(), amd.clone()),
            ("linux/arm64".to_string(), arm.clone())
        ]
    );
    // Both stay cached; rmi takes the tag on every platform and both images.
    let o = env.run(&["pull", "--platform", "linux/amd64", r]);
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    let out = env.ok(&["rmi", r]);
    assert!(out.contains(&amd) && out.contains(&arm), "{out}");
    assert!(!env.sqfs(&amd).exists() && !env.sqfs(&arm).exists());
}

/// tar2sqfs cannot write uncompressed images, so the config refuses to ask for one.
#[test]
fn uncompressed_squashfs_is_refused_by_the_config() {
    let env = Env::with_config("[pull]\ncompression = \"none\"\n");
    let o = env.run(&["pull", "-q", "oci:/nonexistent/layout"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "accepted: {e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("pull.compression") && e.contains("\"none\" is not one of zstd, gzip, xz, lz4"),
        "{e}"
    );
}

/// A config blob that is not JSON, or not an image config, fails the pull (not every
/// later run) with one line naming its digest; nothing is stored.
#[test]
fn bad_config_blob_fails_the_pull() {
    let env = Env::new();
    let layer = RawTar::default().file("f", b"x").done();
    for (i, (cfg, why)) in [
        (&b"\x00\xffnot json"[..], "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (br#"{"config": {"Env": "PATH=/bin"}}"#, "config.Env"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = env.path().join(format!("bad{i}"));
        write_layout_with_config(&dir, std::slice::from_ref(&layer), Some(cfg));
        env.give(&dir);
        let o = env.run(&["pull", "-q", &format!("oci:{}", dir.display())]);
        let e = stderr(&o);
        assert!(!o.status.success(), "accepted config {i}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        let digest = format!("sha256:{}", sha256_hex(cfg));
        assert!(e.contains(&digest) && e.contains(why), "{e}");
    }
    assert!(!env.store().join("images").exists() || env.staging().is_empty());
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["images", "--json"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 0);
}

/// 2000 layers under the usual soft limit of 1024 open files: the pull raises its soft
/// limit (it holds a spool file per layer) and every layer's file is in the image.
#[test]
fn two_thousand_layers_under_a_low_soft_file_limit() {
    use std::os::unix::process::CommandExt;
    need!(need_programs(&["tar2sqfs", "sqfs2tar"]));
    let env = Env::new();
    let dir = env.path().join("many");
    let layers: Vec<Vec<u8>> = (0..2000)
        .map(|i| {
            RawTar::default()
                .file(&format!("l/{i}"), format!("layer {i}").as_bytes())
                .done()
        })
        .collect();
    write_layout(&dir, &layers);
    env.give(&dir);
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if hard < 4096 {
        skip!("hard RLIMIT_NOFILE is {hard}: too low for 2000 layers");
    }
    let mut cmd = env.cmd(&["pull", "-q", &format!("oci:{}", dir.display())]);
    // SAFETY: setrlimit is async-signal-safe; nothing is allocated between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 1024, hard)?;
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let d = stdout(&o);
    let got = read_sqfs(&env.sqfs(&d));
    for i in [0, 999, 1999] {
        assert_eq!(got[&format!("l/{i}")].data, format!("layer {i}").as_bytes());
    }
    assert_eq!(got.keys().filter(|k| k.starts_with("l/")).count(), 2000);
}
