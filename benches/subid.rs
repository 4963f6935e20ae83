//! Benchmark: `warren admin subid` plan/check/apply for 100,000 users.
//!
//! Run: `cargo bench --bench subid` (release profile). Generates a passwd/group with
//! 100,000 users in a temp dir, then times, median of several runs:
//! - in-process: plan (deterministic, first-fit), check, apply (first write, idempotent);
//! - whole commands (`warren admin subid plan|check|apply --root DIR`), process included.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use warren::admin::subid_check::{self, Input};
use warren::admin::subid_plan::{self, Candidate, Params, Strategy};
use warren::admin::subid_source::{self, Paths, Selection};
use warren::admin::{logindefs, subid_apply};

const USERS: u32 = 100_000;
const RUNS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(mut f: impl FnMut()) -> Duration {
    median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn generate(root: &Path) {
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let mut pw = String::from("root:x:0:0:root:/root:/bin/bash\n");
    let mut gr = String::from("root:x:0:\n");
    for i in 0..USERS {
        let uid = 1000 + i;
        pw.push_str(&format!("u{i:06}:x:{uid}:{uid}::/home/u{i:06}:/bin/bash\n"));
        gr.push_str(&format!("u{i:06}:x:{uid}:\n"));
    }
    std::fs::write(etc.join("passwd"), pw).unwrap();
    std::fs::write(etc.join("group"), gr).unwrap();
    // 100,000 × 40,000 IDs fit below 2^32-1 (× 65,536 would not).
    std::fs::write(etc.join("login.defs"), "UID_MIN 1000\nUID_MAX 200000\nSUB_UID_MIN 200000\nSUB_UID_MAX 4294967294\nSUB_UID_COUNT 40000\nSUB_GID_MIN 200000\nSUB_GID_MAX 4294967294\nSUB_GID_COUNT 40000\n").unwrap();
}

fn main() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    generate(root);
    let paths = Paths::under(Some(root));
    let db = paths.load_db().unwrap();
    let defs = logindefs::read(&paths.login_defs, true).unwrap();
    let cands: Vec<Candidate> =
        subid_source::candidates(&db, &Selection::Enumerated { all: false }, &defs, false).unwrap();
    let real = subid_source::real_ids(&db);
    let empty = warren::subid::parse("");
    let params = |strategy| Params {
        strategy,
        uid_min: defs.uid_min,
        sub_uid: defs.sub_uid,
        sub_gid: defs.sub_gid,
    };
    println!(
        "subid admin benchmark: {} users, median of {RUNS} runs",
        cands.len()
    );

    let t_load = time(|| {
        let _ = paths.load_db().unwrap();
    });
    let t_det = time(|| {
        let p = subid_plan::plan(
            &params(Strategy::Deterministic),
            &cands,
            &empty,
            &empty,
            &real,
        )
        .unwrap();
        assert_eq!(p.subuid.len(), USERS as usize);
    });
    let t_ff = time(|| {
        let p =
            subid_plan::plan(&params(Strategy::FirstFit), &cands, &empty, &empty, &real).unwrap();
        assert_eq!(p.subuid.len(), USERS as usize);
    });

    let plan = subid_plan::plan(
        &params(Strategy::Deterministic),
        &cands,
        &empty,
        &empty,
        &real,
    )
    .unwrap();
    let text = subid_plan::render(b"", &plan.subuid);
    let t_parse = time(|| {
        let _ = warren::subid::parse_bytes(&text);
    });
    let parsed = warren::subid::parse_bytes(&text);
    let t_check = time(|| {
        let f = subid_check::check(
            Input {
                file: "subuid",
                parsed: &parsed,
                real: &real.uids,
            },
            Input {
                file: "subgid",
                parsed: &parsed,
                real: &real.gids,
            },
            &db,
        );
        assert_eq!(subid_check::counts(&f).0, 0);
    });
    let t_replan = time(|| {
        let p = subid_plan::plan(
            &params(Strategy::Deterministic),
            &cands,
            &parsed,
            &parsed,
            &real,
        )
        .unwrap();
        assert_eq!(p.unchanged, USERS as usize);
    });

    let apply_once = || {
        subid_apply::apply(&paths, false, Duration::ZERO, |u, g| {
            Ok(subid_plan::plan(
                &params(Strategy::Deterministic),
                &cands,
                u,
                g,
                &real,
            )?)
        })
        .unwrap()
    };
    let t_apply = median(
        (0..RUNS)
            .map(|_| {
                for f in ["etc/subuid", "etc/subgid", "etc/subuid-", "etc/subgid-"] {
                    let _ = std::fs::remove_file(root.join(f));
                }
                let t = Instant::now();
                let o = apply_once();
                let e = t.elapsed();
                assert!(o.written);
                e
            })
            .collect(),
    );
    let t_idem = time(|| {
        assert!(!apply_once().written);
    });

    println!("| step (in-process, 100k users) | median ms |");
    println!("|---|---|");
    for (name, t) in [
        ("load passwd+group files", t_load),
        ("plan deterministic (empty files)", t_det),
        ("plan first-fit (empty files)", t_ff),
        ("parse 100k-line subuid", t_parse),
        ("check (both files)", t_check),
        ("plan again (all users present)", t_replan),
        (
            "apply: lock, read, plan, backup, write both files, fsync, rename",
            t_apply,
        ),
        ("apply again (idempotent, no write)", t_idem),
    ] {
        println!("| {name} | {:.1} |", t.as_secs_f64() * 1e3);
    }

    // Whole commands, process start and output included.
    let bin = env!("CARGO_BIN_EXE_warren");
    let cmd = |args: &[&str]| {
        time(|| {
            let s = Command::new(bin)
                .args(args)
                .arg("--root")
                .arg(root)
                .env("WARREN_CONFIG", "/dev/null")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(s.success(), "{args:?}");
        })
    };
    println!("| command (100k users, files already provisioned) | median ms |");
    println!("|---|---|");
    for args in [
        &["admin", "subid", "plan"][..],
        &["admin", "subid", "plan", "--strategy", "first-fit"][..],
        &["admin", "subid", "check"][..],
        &["admin", "subid", "check", "--json"][..],
        &["admin", "subid", "apply"][..],
    ] {
        println!(
            "| warren {} | {:.1} |",
            args.join(" "),
            cmd(args).as_secs_f64() * 1e3
        );
    }
    for f in ["etc/subuid", "etc/subgid"] {
        let _ = std::fs::remove_file(root.join(f));
    }
    let t_cold = median(
        (0..RUNS)
            .map(|_| {
                for f in ["etc/subuid", "etc/subgid"] {
                    let _ = std::fs::remove_file(root.join(f));
                }
                let t = Instant::now();
                let s = Command::new(bin)
                    .args(["admin", "subid", "apply", "--root"])
                    .arg(root)
                    .env("WARREN_CONFIG", "/dev/null")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                assert!(s.success());
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "| warren admin subid apply (writes 2 × 100k lines, prints diff to /dev/null) | {:.1} |",
        t_cold.as_secs_f64() * 1e3
    );
}
