//! `warren run --device` with CDI specs, as the unprivileged test user: stand-in character
//! devices (made here with mknod as copies of /dev/null's major/minor), a library
//! directory and env from a spec; `=all`; unknown devices and malformed specs; the
//! NVIDIA-shaped fixture with its paths redirected to stand-ins (its nvidia-cdi-hook
//! calls answered by tests/fixtures/cdi/nvidia-cdi-hook, which finds the container's
//! root as NVIDIA's does and makes its symlinks, ld.so.conf.d file and modes there); the
//! glibc guard against a fabricated old libc and an image without glibc.

mod run_support;
use run_support::{fixture, ok, stderr, Fixture};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-ec", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// A directory for one test under the fixture's (removed with it), readable by all.
fn test_dir(f: &Fixture, name: &str) -> PathBuf {
    let d = f.dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Stand-in GPUs `D/dev/warren-gpu0..n`: character devices with /dev/null's numbers.
fn stand_in_devices(d: &Path, n: usize) {
    sh(&format!(
        "mkdir -p {d}/dev; for i in $(seq 0 {last}); do mknod -m 666 {d}/dev/warren-gpu$i c 1 3; done",
        d = d.display(),
        last = n - 1
    ));
}

/// `warren run` on the fixture image as warren-ci with a config naming `cdi_dir`.
fn run_with_cdi(f: &Fixture, d: &Path, cdi_dir: &Path, args: &[&str]) -> Output {
    let cfg = d.join("warren.toml");
    std::fs::write(
        &cfg,
        format!(
            "[cdi]\nspec_dirs = [{:?}]\n[hooks]\ndirs = []\nmounts_dirs = []\nenviron_dirs = []\n",
            cdi_dir.display().to_string()
        ),
    )
    .unwrap();
    f.cmd(&f.ci, &f.run_args(args))
        .env("WARREN_CONFIG", &cfg)
        .output()
        .unwrap()
}

fn write_test_spec(d: &Path) -> PathBuf {
    let cdi = d.join("cdi");
    std::fs::create_dir_all(cdi.join("lib")).unwrap();
    std::fs::write(cdi.join("lib/libvendor.so.1"), "not really a library\n").unwrap();
    let spec = serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": "warren.test/gpu",
        "containerEdits": {
            "env": ["VENDOR_LIB=/opt/vendor/lib"],
            "mounts": [{"hostPath": cdi.join("lib"), "containerPath": "/opt/vendor/lib", "options": ["ro", "nosuid", "nodev", "bind"]}]
        },
        "devices": [
            {"name": "0", "containerEdits": {"env": ["GPU0=yes"], "deviceNodes": [{"path": "/dev/warren-gpu0", "hostPath": d.join("dev/warren-gpu0"), "type": "c"}]}},
            {"name": "1", "containerEdits": {"deviceNodes": [{"path": "/dev/warren-gpu1", "hostPath": d.join("dev/warren-gpu1"), "type": "c"}]}}
        ]
    });
    std::fs::write(cdi.join("test.json"), spec.to_string()).unwrap();
    cdi
}

#[test]
fn a_device_its_library_directory_and_env_are_visible() {
    let Some(f) = fixture() else { return };
    let d = test_dir(f, "cdi-basic");
    stand_in_devices(&d, 2);
    let cdi = write_test_spec(&d);
    let out = ok(&run_with_cdi(
        f,
        &d,
        &cdi,
        &[
            "--device",
            "warren.test/gpu=0",
            "sh",
            "-c",
            "test -c /dev/warren-gpu0 && echo char; echo x > /dev/warren-gpu0 && echo wrote; \
             ls /opt/vendor/lib; echo $VENDOR_LIB $GPU0; test -e /dev/warren-gpu1 || echo no-gpu1; \
             touch /opt/vendor/lib/x 2>/dev/null || echo lib-ro",
        ],
    ));
    assert_eq!(
        out,
        "char\nwrote\nlibvendor.so.1\n/opt/vendor/lib yes\nno-gpu1\nlib-ro\n"
    );
    // =all: both stand-ins, the spec's own edits once.
    let out = ok(&run_with_cdi(
        f,
        &d,
        &cdi,
        &[
            "--device",
            "warren.test/gpu=all",
            "sh",
            "-c",
            "ls /dev | grep warren-gpu",
        ],
    ));
    assert_eq!(out, "warren-gpu0\nwarren-gpu1\n");
    // A plain device path, as podman takes it (at the same path, or renamed).
    let g1 = d.join("dev/warren-gpu1").display().to_string();
    let renamed = format!("{g1}:/dev/renamed");
    let out = ok(&run_with_cdi(
        f,
        &d,
        &cdi,
        &[
            "--device",
            &g1,
            "--device",
            &renamed,
            "sh",
            "-c",
            &format!("test -c {g1} && test -c /dev/renamed && echo x > /dev/renamed && echo ok"),
        ],
    ));
    assert_eq!(out, "ok\n");
    let o = run_with_cdi(f, &d, &cdi, &["--device", "/etc/hostname", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "warren: --device /etc/hostname: not a device node\n"
    );
}

#[test]
fn unknown_devices_and_malformed_specs_fail_in_one_line() {
    let Some(f) = fixture() else { return };
    let d = test_dir(f, "cdi-errors");
    stand_in_devices(&d, 2);
    let cdi = write_test_spec(&d);
    let one_line = |o: &Output| {
        assert_eq!(o.status.code(), Some(125), "{}", stderr(o));
        let e = stderr(o);
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    };
    let e = one_line(&run_with_cdi(
        f,
        &d,
        &cdi,
        &["--device", "warren.test/gpu=7", "true"],
    ));
    assert_eq!(
        e,
        "warren: CDI device warren.test/gpu=7: unknown (known: 0, 1)\n"
    );
    let e = one_line(&run_with_cdi(
        f,
        &d,
        &cdi,
        &["--device", "other.test/x=0", "true"],
    ));
    assert!(e.contains("no spec of kind other.test/x"), "{e}");
    let e = one_line(&run_with_cdi(f, &d, &cdi, &["--device", "gpu0", "true"]));
    assert!(e.contains("vendor.com/class=name"), "{e}");
    // A device node that is gone from the host.
    std::fs::remove_file(d.join("dev/warren-gpu1")).unwrap();
    let e = one_line(&run_with_cdi(
        f,
        &d,
        &cdi,
        &["--device", "warren.test/gpu=1", "true"],
    ));
    assert!(
        e.contains("warren.test/gpu=1") && e.contains("warren-gpu1"),
        "{e}"
    );
    // A malformed spec of the asked-for kind names its file and the problem.
    std::fs::write(
        cdi.join("zz-broken.yaml"),
        "cdiVersion: 0.6.0\nkind: warren.test/gpu\ndevices:\n- name: \"2\"\n  containerEdits:\n    deviceNodes:\n    - path: dev/relative\n",
    )
    .unwrap();
    let e = one_line(&run_with_cdi(
        f,
        &d,
        &cdi,
        &["--device", "warren.test/gpu=0", "true"],
    ));
    assert!(
        e.contains(&format!("CDI spec {}/zz-broken.yaml: ", cdi.display()))
            && e.contains("\"dev/relative\" must be an absolute path"),
        "{e}"
    );
}

/// The NVIDIA-shaped spec, every host path moved under `d` (device nodes get a hostPath,
/// mounts' sources and the hook's path are redirected): otherwise unchanged.
fn redirected_nvidia_spec(d: &Path) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cdi/nvidia.yaml"
    ))
    .unwrap();
    let mut v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let host = |p: &str| format!("{}{p}", d.display());
    let fix = |edits: &mut serde_yaml::Value| {
        if let Some(nodes) = edits
            .get_mut("deviceNodes")
            .and_then(|n| n.as_sequence_mut())
        {
            for n in nodes {
                let p = n["path"].as_str().unwrap().to_string();
                n["hostPath"] = host(&p).into();
            }
        }
        if let Some(ms) = edits.get_mut("mounts").and_then(|m| m.as_sequence_mut()) {
            for m in ms {
                let p = m["hostPath"].as_str().unwrap().to_string();
                m["hostPath"] = host(&p).into();
            }
        }
        if let Some(hs) = edits.get_mut("hooks").and_then(|h| h.as_sequence_mut()) {
            for h in hs {
                let p = h["path"].as_str().unwrap().to_string();
                h["path"] = host(&p).into();
            }
        }
    };
    fix(&mut v["containerEdits"]);
    for dev in v["devices"].as_sequence_mut().unwrap() {
        fix(&mut dev["containerEdits"]);
    }
    serde_yaml::to_string(&v).unwrap()
}

#[test]
fn an_nvidia_ctk_spec_works_with_stand_in_paths() {
    let Some(f) = fixture() else { return };
    let d = test_dir(f, "cdi-nvidia");
    sh(&format!(
        "D={d}; mkdir -p $D/dev/dri $D/run/nvidia-persistenced $D/usr/bin $D/usr/lib/x86_64-linux-gnu
         for n in nvidia0 nvidiactl nvidia-uvm nvidia-uvm-tools nvidia-modeset dri/card1 dri/renderD128; do
           mknod -m 666 $D/dev/$n c 1 3; done
         : > $D/run/nvidia-persistenced/socket
         printf '#!/bin/sh\\necho nvidia-smi stand-in\\n' > $D/usr/bin/nvidia-smi; chmod 755 $D/usr/bin/nvidia-smi
         echo lib > $D/usr/lib/x86_64-linux-gnu/libcuda.so.575.64.03
         echo lib > $D/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.575.64.03
         cp {hook} $D/usr/bin/nvidia-cdi-hook",
        d = d.display(),
        // Finds the root as NVIDIA's does (state, bundle, config.json) and acts there.
        hook = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cdi/nvidia-cdi-hook"),
    ));
    let cdi = d.join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    std::fs::write(cdi.join("nvidia.yaml"), redirected_nvidia_spec(&d)).unwrap();
    let out = ok(&run_with_cdi(
        f,
        &d,
        &cdi,
        &[
            "--device",
            "nvidia.com/gpu=0",
            "sh",
            "-c",
            "ls /dev/nvidia0 /dev/nvidiactl /dev/dri/renderD128 /usr/lib/x86_64-linux-gnu/libcuda.so.575.64.03; \
             /usr/bin/nvidia-smi; echo $NVIDIA_VISIBLE_DEVICES; cat /tmp/nvidia-cdi-hook.log; \
             readlink /usr/lib/x86_64-linux-gnu/libcuda.so; readlink /dev/dri/by-path/pci-0000:84:00.0-card; \
             cat /etc/ld.so.conf.d/00-nvcr-warren.conf; stat -c %a /dev/dri",
        ],
    ));
    assert_eq!(
        out,
        "/dev/dri/renderD128\n/dev/nvidia0\n/dev/nvidiactl\n/usr/lib/x86_64-linux-gnu/libcuda.so.575.64.03\n\
         nvidia-smi stand-in\nvoid\n\
         create-symlinks\nupdate-ldcache\ncreate-symlinks\nchmod\n\
         libcuda.so.1\n../card1\n/usr/lib/x86_64-linux-gnu\n755\n"
    );
    // The UUID name and "all" name the same GPU.
    let out = ok(&run_with_cdi(
        f,
        &d,
        &cdi,
        &[
            "--device",
            "nvidia.com/gpu=GPU-520e01f2-cf30-6396-abef-e8e9a5233b0e",
            "--device",
            "nvidia.com/gpu=all",
            "ls",
            "/dev/dri",
        ],
    ));
    assert_eq!(out, "card1\nrenderD128\n");
}

/// A shared library needing `GLIBC_2.34` (pthread_create's version since glibc 2.34)
/// and a fake libc.so.6 defining only GLIBC_2.2.5 and GLIBC_2.17.
fn build_libs(d: &Path) -> bool {
    if Command::new("cc").arg("--version").output().is_err() {
        return false;
    }
    sh(&format!(
        "cd {d}
         printf '#include <pthread.h>\\nint use_threads(void) {{ pthread_t t; return pthread_create(&t, 0, 0, 0); }}\\n' > new.c
         cc -shared -fPIC -o libneedsnew.so new.c
         printf 'int fake_a(void) {{ return 1; }}\\nint fake_b(void) {{ return 2; }}\\n' > oldc.c
         printf 'GLIBC_2.2.5 {{ global: fake_a; local: *; }};\\nGLIBC_2.17 {{ global: fake_b; }} GLIBC_2.2.5;\\n' > oldc.map
         cc -shared -fPIC -nostdlib -Wl,-soname,libc.so.6 -Wl,--version-script=oldc.map -o libc.so.6 oldc.c",
        d = d.display()
    ));
    true
}

/// A busybox image with `libc` as its /lib/x86_64-linux-gnu/libc.so.6.
fn image_with_libc(f: &Fixture, d: &Path, name: &str, libc: &Path) -> PathBuf {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    let sq = d.join(format!("{name}.sqfs"));
    sh(&format!(
        "R={d}/{name}-root; mkdir -p $R/bin $R/etc $R/lib/x86_64-linux-gnu $R/usr/lib
         cp {bb} $R/bin/busybox; ln -s busybox $R/bin/sh; ln -s busybox $R/bin/echo
         printf 'root:x:0:0:root:/root:/bin/sh\\n' > $R/etc/passwd; printf 'root:x:0:\\n' > $R/etc/group
         cp {libc} $R/lib/x86_64-linux-gnu/libc.so.6
         mksquashfs $R {sq} -comp zstd -noappend -quiet -no-progress >/dev/null; chmod 644 {sq}; rm -rf $R",
        d = d.display(),
        libc = libc.display(),
        sq = sq.display(),
    ));
    let _ = f;
    sq
}

#[test]
fn the_glibc_guard_refuses_libraries_the_image_cannot_load() {
    let Some(f) = fixture() else { return };
    let d = test_dir(f, "cdi-guard");
    if !build_libs(&d) {
        run_support::skip_note("no C compiler (cc) to build the guard's test libraries");
        return;
    }
    let cdi = d.join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    let spec = serde_json::json!({
        "cdiVersion": "0.6.0", "kind": "warren.test/lib",
        "devices": [{"name": "new", "containerEdits": {"mounts": [
            {"hostPath": d.join("libneedsnew.so"), "containerPath": "/usr/lib/libneedsnew.so", "options": ["ro", "bind"]}]}},
            // A library directory: the libraries inside it are checked too.
            {"name": "dir", "containerEdits": {"mounts": [
            {"hostPath": d.join("plugins"), "containerPath": "/opt/plugins", "options": ["ro", "bind"]}]}}]
    });
    std::fs::create_dir_all(d.join("plugins/sub")).unwrap();
    std::fs::copy(d.join("libneedsnew.so"), d.join("plugins/sub/mca_x.so")).unwrap();
    std::fs::write(d.join("plugins/README"), "not a library").unwrap();
    std::fs::write(cdi.join("lib.json"), spec.to_string()).unwrap();
    let old = image_with_libc(f, &d, "old", &d.join("libc.so.6"));
    let host_libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    let Some(host_libc) = host_libc else {
        run_support::skip_note("no x86_64 multiarch libc.so.6 on this host");
        return;
    };
    let new = image_with_libc(f, &d, "new", &host_libc);
    let run_dev = |sq: &Path, dev: &str| {
        let mut a = f.run_args_on(sq, &[]);
        a.extend(["--device", dev, "echo", "started"]);
        let cfg = d.join("warren.toml");
        std::fs::write(
            &cfg,
            format!(
                "[cdi]\nspec_dirs = [{:?}]\n[hooks]\ndirs = []\nmounts_dirs = []\nenviron_dirs = []\n",
                cdi.display().to_string()
            ),
        )
        .unwrap();
        f.cmd(&f.ci, &a)
            .env("WARREN_CONFIG", &cfg)
            .output()
            .unwrap()
    };
    let run_on = |sq: &Path| run_dev(sq, "warren.test/lib=new");
    let o = run_on(&old);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "warren: host library {}/libneedsnew.so needs glibc 2.34 but the image has glibc 2.17: use an image with glibc 2.34 or newer (or host libraries built for 2.17)\n",
            d.display()
        )
    );
    assert!(o.stdout.is_empty());
    let o = run_dev(&old, "warren.test/lib=dir");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!(
            "warren: host library {}/plugins/sub/mca_x.so needs glibc 2.34 but the image has glibc 2.17",
            d.display()
        )),
        "{}",
        stderr(&o)
    );
    // The host's own libc (2.34 or newer) in the image: it starts.
    assert_eq!(ok(&run_on(&new)), "started\n");
    assert_eq!(ok(&run_dev(&new, "warren.test/lib=dir")), "started\n");
    // No glibc at all (the static busybox image).
    let o = run_on(&f.sqfs);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("the image has no glibc"),
        "{}",
        stderr(&o)
    );
}
