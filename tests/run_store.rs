//! `warren run IMAGE` end to end through the store: images pulled from the loopback test
//! registry into a private store per test (`WARREN_STORE_PATH`), then run as the
//! unprivileged users: pull policies, a debootstrap Debian (apt/dpkg owners, `id`,
//! `whoami`, `$HOME`, package tools as container root) and the torture image's owners with
//! and without a subordinate range; `rmi` deletes the user's prefetch lists of an image.
//!
//! Skips (prints why) unless the run fixture's prerequisites hold and the registry serves
//! the image (scripts/registry.sh start; scripts/test-images.sh busybox|torture|debian).

mod run_support;
use run_support::{fixture, image_ref, ok, registry_lacks, stderr};

macro_rules! need_image {
    ($name:expr) => {
        if let Some(why) = registry_lacks($name) {
            run_support::skip_note(&why);
            return;
        }
    };
}

#[test]
fn pull_policies() {
    let Some(f) = fixture() else { return };
    need_image!("busybox");
    let img = image_ref("busybox");
    let st = f.store(&f.ci, "store-policies");
    let stored = |st| {
        let out = ok(&f
            .store_cmd(&f.ci, st, &["images", "--json"])
            .output()
            .unwrap());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array().unwrap().len()
    };

    // never, on an empty store: one clear line, 125 (could not start), nothing pulled.
    let o = f.store_run(&f.ci, &st, &["--pull=never", &img, "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(&img) && e.contains("--pull=never"), "{e}");
    assert_eq!(stored(&st), 0, "--pull=never pulled something");

    // missing (the default): pulls on first use; the container's stdout is its own.
    let o = f.store_run(&f.ci, &st, &[&img, "sh", "-c", "echo first; id -un"]);
    assert_eq!(ok(&o), "first\nwarren-ci\n");
    assert!(stderr(&o).contains("layer 1/1"), "no pull: {}", stderr(&o));
    assert_eq!(stored(&st), 1);

    // missing again, and never: no registry traffic, same image.
    for policy in ["--pull=missing", "--pull=never"] {
        let o = f.store_run(&f.ci, &st, &[policy, &img, "echo", "again"]);
        assert_eq!(ok(&o), "again\n", "{policy}");
        assert!(!stderr(&o).contains("layer"), "{policy}: {}", stderr(&o));
    }

    // always: asks the registry (the image is current: nothing downloaded), then runs.
    let o = f.store_run(&f.ci, &st, &["--pull=always", &img, "echo", "always"]);
    assert_eq!(ok(&o), "always\n");
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));

    // A reference the registry does not know: the pull error, 125.
    let o = f.store_run(&f.ci, &st, &[&image_ref("no-such-image"), "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));
}

#[test]
fn debootstrap_debian() {
    let Some(f) = fixture() else { return };
    need_image!("debian");
    let img = image_ref("debian");
    let st = f.store(&f.ci, "store-debian");
    // Default identity: yourself, known by name, with your home; the image's owners.
    let o = f.store_run(
        &f.ci,
        &st,
        &[
            "-q",
            &img,
            "sh",
            "-c",
            "id -un; whoami; echo $HOME; cd && pwd; \
             stat -c '%u:%g %n' /usr/bin/apt /usr/bin/dpkg /var/lib/dpkg/status /etc/shadow /var/mail; \
             dpkg -s apt | grep '^Status'; getent passwd _apt | cut -d: -f3",
        ],
    );
    assert_eq!(
        ok(&o),
        "warren-ci\nwarren-ci\n/home/warren-ci\n/home/warren-ci\n\
         0:0 /usr/bin/apt\n0:0 /usr/bin/dpkg\n0:0 /var/lib/dpkg/status\n0:42 /etc/shadow\n0:8 /var/mail\n\
         Status: install ok installed\n42\n"
    );
    // As container root the package tools work and chown really changes owners.
    let o = f.store_run(
        &f.ci,
        &st,
        &[
            "--remap-root",
            "--pull=never",
            &img,
            "sh",
            "-c",
            "id -u; whoami; echo $HOME; touch /x; chown _apt:shadow /x; stat -c '%U:%G %u:%g' /x; \
             apt-get -q check >/dev/null && echo apt-ok; dpkg --configure -a && echo dpkg-ok; \
             useradd -m bob && su bob -c 'whoami; echo $HOME'",
        ],
    );
    assert_eq!(
        ok(&o),
        "0\nroot\n/root\n_apt:shadow 42:42\napt-ok\ndpkg-ok\nbob\n/home/bob\n"
    );
}

#[test]
fn torture_owners_with_and_without_a_range() {
    let Some(f) = fixture() else { return };
    need_image!("torture");
    let img = image_ref("torture");
    // The image has no shell: a host busybox-static is bound in to look.
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap();
    let vol = format!("{bb}:/busybox:ro");
    let look = |user, store| {
        let o = f.store_run(
            user,
            store,
            &[
                "-q",
                "-w",
                "/",
                "-v",
                &vol,
                "--entrypoint",
                "/busybox",
                &img,
                "stat",
                "-c",
                "%u:%g %n",
                "/apache",
                "/home/u1001",
                "/bin/sgid",
                "/hl/zlate",
                "/big-owner",
                "/huge-owner",
                "/bin/tool",
            ],
        );
        ok(&o)
    };
    // With the range: owners inside the 65536 IDs are themselves; beyond it, nobody.
    let st = f.store(&f.ci, "store-torture-ci");
    assert_eq!(
        look(&f.ci, &st),
        "48:48 /apache\n1001:1001 /home/u1001\n0:48 /bin/sgid\n7:0 /hl/zlate\n\
         65534:65534 /big-owner\n65534:65534 /huge-owner\n0:0 /bin/tool\n"
    );
    // Without: only the user's own ID is mapped (1002 is not in the image): all nobody.
    let st = f.store(&f.nosub, "store-torture-nosub");
    let out = look(&f.nosub, &st);
    for line in out.lines() {
        assert!(line.starts_with("65534:65534 "), "{out}");
    }
    assert_eq!(out.lines().count(), 7, "{out}");
}

#[test]
fn rmi_forgets_the_images_prefetch_lists() {
    let Some(f) = fixture() else { return };
    need_image!("busybox");
    let img = image_ref("busybox");
    let st = f.store(&f.ci, "store-rmi-lists");
    let cache = f.user_dir(&f.ci, "cache-rmi-lists");
    let warren = |args: &[&str]| {
        let mut c = f.store_cmd(&f.ci, &st, args);
        c.env("XDG_CACHE_HOME", &cache);
        ok(&c.output().unwrap())
    };
    // A first start records its list (docs/run.md, "The prefetch list"); deleting the
    // image deletes the user's lists of it.
    warren(&["run", "--no-join", &img, "true"]);
    let lists = || {
        std::fs::read_dir(cache.join("warren/prefetch"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(lists(), 1);
    let out = warren(&["rmi", &img]);
    assert!(out.contains("deleted sha256:"), "{out}");
    assert_eq!(lists(), 0);
}
