//! N processes pulling one image at once: all succeed with the same digest, and exactly
//! one of them fetches the blobs and builds the squashfs (the others wait on its lock).
//! Through a request-counting proxy: the config and layer blobs are each fetched once.

mod support;
use std::process::Stdio;
use support::proxy::CountingProxy;
use support::registry::{need_registry, PLAIN};
use support::*;

fn eight_pulls(env: &Env, image: &str) {
    let children: Vec<_> = (0..8)
        .map(|_| {
            env.cmd(&["pull", image])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn warren")
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(o.status.success(), "a pull failed: {}", stderr(o));
    }
    let digests: std::collections::BTreeSet<String> = outs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .collect();
    assert_eq!(digests.len(), 1, "digests differ: {digests:?}");
    // Plain progress (no TTY): only the builder announces layers and squashes.
    let builders = outs
        .iter()
        .filter(|o| stderr(o).contains("squashing"))
        .count();
    let fetchers = outs
        .iter()
        .filter(|o| stderr(o).contains("layer 1/"))
        .count();
    assert_eq!(builders, 1, "squashfs built by {builders} processes");
    assert_eq!(fetchers, 1, "blobs fetched by {fetchers} processes");
    let d = digests.into_iter().next().unwrap();
    assert!(env.sqfs(&d).is_file());
    let tmp = env.staging();
    assert!(tmp.is_empty(), "debris in tmp: {tmp:?}");
}

#[test]
fn eight_concurrent_pulls_of_a_layout() {
    let env = Env::new();
    let spec = need!(env.torture());
    eight_pulls(&env, &spec);
}

#[test]
fn eight_concurrent_pulls_from_the_registry() {
    need!(need_registry(&[PLAIN]));
    let env = Env::new();
    let probe = env.run(&["pull", "-q", "127.0.0.1:5000/test/busybox:latest"]);
    assert!(probe.status.success(), "{}", stderr(&probe));
    // Start again from an empty store.
    std::fs::remove_dir_all(env.store()).unwrap();
    eight_pulls(&env, "127.0.0.1:5000/test/busybox:latest");
}

#[test]
fn waiting_pullers_fetch_only_manifests() {
    need!(need_registry(&[PLAIN]));
    let proxy = CountingProxy::start();
    let host = proxy.addr.to_string();
    let env = Env::with_config(&format!("[[registry]]\nhost = \"{host}\"\nhttp = true\n"));
    let image = format!("{host}/test/busybox:latest");
    eight_pulls(&env, &image);
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            env.image_dir(&env.ok(&["pull", "-q", &image]))
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let config = m["config"]["digest"].as_str().unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        proxy.count(&format!("GET /v2/test/busybox/blobs/{config}")),
        1,
        "config GETs"
    );
    assert_eq!(
        proxy.count(&format!("GET /v2/test/busybox/blobs/{layer}")),
        1,
        "layer GETs"
    );
    // Every puller asked for the manifest; nothing else was fetched.
    let all = proxy.seen.lock().unwrap().clone();
    let other: Vec<_> = all
        .iter()
        .filter(|r| !r.contains("/manifests/") && !r.contains(config) && !r.contains(layer))
        .filter(|r| r.as_str() != "GET /v2/")
        .collect();
    assert!(other.is_empty(), "unexpected requests: {other:?}");
}
