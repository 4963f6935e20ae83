//! The native-overlay probe `warren doctor` uses: an actual userxattr overlay mount over a
//! squashfuse lower with a tmpfs upper in a user namespace, cached per boot.

use std::process::Command;

#[test]
fn probe_answers_and_caches() {
    let have = |p: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("mksquashfs") || !have("squashfuse_ll") {
        skip("mksquashfs or squashfuse_ll not installed (scripts/setup-host.sh)");
        return;
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        skip("no /dev/fuse");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mut cfg = warren::config::Config::default();
    cfg.run.runtime_dir = Some(d.path().join("rt"));
    let p = warren::runtime::probe::native_overlay(&cfg).unwrap();
    // This kernel (6.18) supports it; on others the reason must be named.
    match &p {
        warren::runtime::probe::OverlayProbe::Native => {}
        warren::runtime::probe::OverlayProbe::Unsupported(why) => assert!(!why.is_empty()),
    }
    let rt = d.path().join("rt");
    let cached = std::fs::read_to_string(rt.join("overlay-probe")).unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert!(cached.starts_with(boot.trim()), "{cached}");
    assert_eq!(warren::runtime::probe::cached(&rt), Some(p.clone()));
    // A cache from another boot is ignored.
    std::fs::write(rt.join("overlay-probe"), "other-boot\nnative\n").unwrap();
    assert_eq!(warren::runtime::probe::cached(&rt), None);
    // Nothing mounted is left: the probe's namespace died with its process.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(rt.to_str().unwrap()), "{mi}");
}

fn skip(why: &str) {
    assert!(
        std::env::var_os("WARREN_TEST_NO_SKIP").is_none(),
        "would skip under WARREN_TEST_NO_SKIP: {why}"
    );
    eprintln!("SKIP: {why}");
}
