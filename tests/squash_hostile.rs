//! Hostile layers: each is refused with one line naming the layer and the entry, nothing
//! is published, and nothing appears outside the store. Absolute paths are neutralised
//! (made relative to the image root) rather than refused.

mod support;
use support::*;

struct Case {
    name: &'static str,
    layers: Vec<Vec<u8>>,
    /// Text the error must contain (besides "layer N").
    want: &'static str,
    config: &'static str,
}

fn cases(outside: &str) -> Vec<Case> {
    let outside: &'static str = Box::leak(outside.to_string().into_boxed_str());
    let big = vec![b'x'; 200];
    let mut many = RawTar::default();
    for i in 0..20 {
        many = many.file(&format!("f{i}"), b"x");
    }
    vec![
        Case {
            name: "dotdot",
            layers: vec![RawTar::default().file("../escape", b"x").done()],
            want: "entry \"../escape\": path has a '..' component",
            config: "",
        },
        Case {
            name: "dotdot-inside",
            layers: vec![RawTar::default().dir("a").file("a/../../b", b"x").done()],
            want: "'..'",
            config: "",
        },
        Case {
            name: "through-symlink-same-layer",
            layers: vec![RawTar::default()
                .symlink("etc", outside)
                .file("etc/passwd", b"x")
                .done()],
            want: "entry /etc/passwd: parent /etc is a symlink",
            config: "",
        },
        Case {
            name: "through-symlink-next-layer",
            layers: vec![
                RawTar::default().symlink("etc", outside).done(),
                RawTar::default().file("etc/passwd", b"x").done(),
            ],
            want: "layer 2",
            config: "",
        },
        Case {
            name: "hardlink-outside",
            layers: vec![RawTar::default().hardlink("pw", "../../etc/passwd").done()],
            want: "hard link target: path has a '..' component",
            config: "",
        },
        Case {
            name: "hardlink-missing",
            layers: vec![RawTar::default().hardlink("pw", "etc/shadow").done()],
            want: "hard link to /etc/shadow, which is not in the image",
            config: "",
        },
        Case {
            name: "hardlink-whited-out",
            layers: vec![
                RawTar::default().file("a", b"x").done(),
                RawTar::default()
                    .file(".wh.a", b"")
                    .hardlink("b", "a")
                    .done(),
            ],
            want: "not in the image",
            config: "",
        },
        Case {
            name: "too-many-entries",
            layers: vec![many.done()],
            want: "pull.max_entries",
            config: "[pull]\nmax_entries = 10\n",
        },
        Case {
            name: "too-big-file",
            layers: vec![RawTar::default().file("big", &big).done()],
            want: "entry \"big\": file of 200 bytes exceeds pull.max_file_size",
            config: "[pull]\nmax_file_size = 100\n",
        },
        Case {
            name: "long-name",
            layers: vec![RawTar::default().file(&"n".repeat(300), b"x").done()],
            want: "path component longer than 255 bytes",
            config: "",
        },
        Case {
            name: "hardlink-to-dir",
            layers: vec![RawTar::default().dir("d").hardlink("l", "d").done()],
            want: "hard link to directory /d",
            config: "",
        },
    ]
}

#[test]
fn hostile_layers_rejected() {
    need!(need_programs(&["tar2sqfs"]));
    let env = Env::new();
    let outside = env.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    env.give(&outside);
    for c in cases(outside.to_str().unwrap()) {
        env.write_config(c.config);
        let layout = env.path().join(c.name);
        write_layout(&layout, &c.layers);
        env.give(&layout);
        let o = env.run(&["pull", "-q", &format!("oci:{}", layout.display())]);
        let err = stderr(&o);
        assert!(!o.status.success(), "{}: accepted", c.name);
        eprintln!("{}: {}", c.name, err.trim());
        assert!(
            err.contains(c.want),
            "{}: error {err:?} lacks {:?}",
            c.name,
            c.want
        );
        assert!(
            err.contains("layer ") || err.contains("image has more"),
            "{}: no layer named in {err:?}",
            c.name
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{}: one line: {err:?}",
            c.name
        );
        assert!(err.starts_with("warren: "), "{}: {err:?}", c.name);
        let images: Vec<_> = std::fs::read_dir(env.store().join("images"))
            .unwrap()
            .collect();
        assert!(images.is_empty(), "{}: something was published", c.name);
        let refs: Vec<_> = std::fs::read_dir(env.store().join("refs"))
            .unwrap()
            .collect();
        assert!(refs.is_empty(), "{}: a tag was written", c.name);
        let tmp = env.staging();
        assert!(tmp.is_empty(), "{}: staging left behind: {tmp:?}", c.name);
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "{}: wrote outside",
            c.name
        );
    }
}

#[test]
fn absolute_and_dot_paths_are_neutralised() {
    need!(need_programs(&["tar2sqfs", "sqfs2tar"]));
    let env = Env::new();
    let layout = env.path().join("abs");
    write_layout(
        &layout,
        &[RawTar::default()
            .dir("/")
            .file("/abs/file", b"abs")
            .file("./dot/file", b"dot")
            .file("//double//slash", b"ds")
            .done()],
    );
    env.give(&layout);
    let d = env.ok(&["pull", "-q", &format!("oci:{}", layout.display())]);
    let got = read_sqfs(&env.sqfs(&d));
    let paths: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            ".",
            "abs",
            "abs/file",
            "dot",
            "dot/file",
            "double",
            "double/slash"
        ]
    );
    assert_eq!(got["abs/file"].data, b"abs");
    assert!(!std::path::Path::new("/abs/file").exists());
}
