//! The `warren` binary's handling of its own input: configuration files and `WARREN_*`
//! variables, usage errors and exit codes, `-e`/`--env-file` and image `Env` names,
//! where `run`'s options end. Configuration tests run as `warren-ci` (as root) with a
//! private config (tests/support); container tests use the `run` fixture
//! (tests/run_support: a busybox squashfs run with the hidden `--squashfs`).

mod run_support;
mod support;

use std::process::Output;
use support::Env;

/// stderr of a process that failed with `code`, checked to be one line `warren: …`.
fn failed(o: &Output, code: i32) -> String {
    let err = support::stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {err}",
        support::stdout(o)
    );
    assert!(
        err.starts_with("warren: ") && err.ends_with('\n') && err.lines().count() == 1,
        "not one line: {err:?}"
    );
    err
}

#[test]
fn usage_errors_exit_125_for_run_and_2_for_other_commands() {
    let env = Env::new();
    let err = failed(&env.run(&["run", "--no-such-flag", "img"]), 125);
    assert!(err.contains("'--no-such-flag'"), "{err}");
    let err = failed(&env.run(&["run", "-e"]), 125);
    assert!(err.contains("--env"), "{err}");
    // Global flags before the command do not hide it.
    let err = failed(
        &env.run(&["--quiet", "run", "--overlay", "kernel", "img"]),
        125,
    );
    // What clap puts on further lines is kept on the one line.
    assert!(err.contains("possible values: auto, native, fuse"), "{err}");
    let err = failed(&env.run(&["images", "--no-such-flag"]), 2);
    assert!(err.contains("'--no-such-flag'"), "{err}");
    failed(&env.run(&["no-such-command"]), 2);
    // Help is not an error.
    let o = env.run(&["run", "--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", support::stderr(&o));
    assert!(support::stdout(&o).contains("IMAGE [COMMAND [ARG...]]"));
}

#[test]
fn config_errors_exit_125_for_run_and_name_the_variable() {
    let env = Env::new();
    for (args, code) in [(&["images"][..], 2), (&["run", "img", "true"][..], 125)] {
        let o = env
            .cmd(args)
            .env("WARREN_PULL_PARALLEL", "lots")
            .output()
            .unwrap();
        let err = failed(&o, code);
        assert!(
            err.contains("WARREN_PULL_PARALLEL") && err.contains("lots"),
            "{err}"
        );
    }
    let o = env
        .cmd(&["images"])
        .env("WARREN_STORE_KEEP_LAYERS", "perhaps")
        .output()
        .unwrap();
    let err = failed(&o, 2);
    assert!(
        err.contains("WARREN_STORE_KEEP_LAYERS") && err.contains("1/0, yes/no, true/false"),
        "{err}"
    );
    // Every boolean spelling is accepted.
    for v in ["1", "0", "YES", "no", "True", "false"] {
        let o = env
            .cmd(&["images"])
            .env("WARREN_STORE_KEEP_LAYERS", v)
            .output()
            .unwrap();
        support::ok(&o);
    }
}

#[test]
fn toml_errors_are_one_line_with_file_line_and_column() {
    let env = Env::with_config("[pull]\nretries = = 3\n");
    let err = failed(&env.run(&["images"]), 2);
    // Line 1-2 are the generated [store] section.
    let want = format!("warren: {}:4:11: ", env.config().display());
    assert!(err.starts_with(&want), "{err}");
    let env = Env::with_config("[run]\nmount_home = \"sometimes\"\n");
    let err = failed(&env.run(&["run", "img"]), 125);
    let want = format!("warren: {}:4:14: ", env.config().display());
    assert!(err.starts_with(&want) && err.contains("1/0"), "{err}");
}

#[test]
fn a_missing_warren_config_is_an_error() {
    let env = Env::new();
    let o = env
        .cmd(&["images"])
        .env("WARREN_CONFIG", "/nonexistent/warren.toml")
        .output()
        .unwrap();
    let err = failed(&o, 2);
    assert!(
        err.starts_with("warren: config WARREN_CONFIG=/nonexistent/warren.toml: "),
        "{err}"
    );
}

#[test]
fn relative_paths_are_refused_naming_key_and_source() {
    let env = Env::new();
    // A file with a relative store.path (the generated one is absolute: replace it).
    std::fs::write(env.config(), "[store]\npath = \"store\"\n").unwrap();
    let err = failed(&env.run(&["images"]), 2);
    assert!(
        err.contains(&env.config().display().to_string())
            && err.contains("store.path: \"store\" is a relative path"),
        "{err}"
    );
    env.write_config("");
    let o = env
        .cmd(&["run", "img"])
        .env("WARREN_RUN_RUNTIME_DIR", "rt")
        .output()
        .unwrap();
    let err = failed(&o, 125);
    assert!(
        err.contains("WARREN_RUN_RUNTIME_DIR: run.runtime_dir: \"rt\" is a relative path"),
        "{err}"
    );
}

#[test]
fn warren_timing_takes_booleans() {
    let Some(f) = run_support::fixture() else {
        return;
    };
    for (v, shown) in [("1", true), ("yes", true), ("TRUE", true), ("0", false)] {
        let o = f
            .cmd(&f.ci, &f.run_args(&["true"]))
            .env("WARREN_TIMING", v)
            .output()
            .unwrap();
        run_support::ok(&o);
        assert_eq!(
            run_support::stderr(&o).contains("warren timing: "),
            shown,
            "WARREN_TIMING={v}: {}",
            run_support::stderr(&o)
        );
    }
    let o = f
        .cmd(&f.ci, &f.run_args(&["true"]))
        .env("WARREN_TIMING", "maybe")
        .output()
        .unwrap();
    let err = failed(&o, 125);
    assert!(err.contains("WARREN_TIMING"), "{err}");
}

#[test]
fn options_end_at_the_image() {
    let Some(f) = run_support::fixture() else {
        return;
    };
    // With --squashfs the command's first word stands where IMAGE would. Right after it,
    // words that are warren options belong to the command.
    let o = f.run(&f.ci, &["-e", "X=1", "echo", "-e", "Y=2", "--name", "n"]);
    assert_eq!(run_support::ok(&o), "Y=2 --name n\n");
    let o = f.run(
        &f.ci,
        &[
            "-e",
            "X=1",
            "sh",
            "-c",
            "echo \"X=$X Y=$Y\"; printf '%s|' \"$@\"",
            "sh",
            "-e",
            "Y=2",
            "--",
            "--name",
        ],
    );
    assert_eq!(run_support::ok(&o), "X=1 Y=\n-e|Y=2|--|--name|");
}

#[test]
fn env_names_are_checked_and_env_files_bounded() {
    let Some(f) = run_support::fixture() else {
        return;
    };
    let dir = f.user_dir(&f.ci, "config-cli-env");
    for bad in ["A B=1", "A\nB=1", "=1", "A\tB=1"] {
        let err = failed(&f.run(&f.ci, &["-e", bad, "true"]), 125);
        assert!(err.contains("-e: invalid variable name"), "{bad:?}: {err}");
    }
    let file = dir.join("bad.env");
    std::fs::write(&file, "# comment\nGOOD=1\nBAD NAME=2\n").unwrap();
    let err = failed(
        &f.run(&f.ci, &["--env-file", file.to_str().unwrap(), "true"]),
        125,
    );
    assert!(
        err.contains(&format!(
            "--env-file {} line 3: invalid variable name \"BAD NAME\"",
            file.display()
        )),
        "{err}"
    );
    let err = failed(&f.run(&f.ci, &["--env-file", "/dev/zero", "true"]), 125);
    assert!(err.contains("/dev/zero: more than 1024 KiB"), "{err}");
    // An image whose config sets a bad name.
    let cfg = dir.join("config.json");
    std::fs::write(
        &cfg,
        r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","BAD NAME=1"],"Cmd":["/bin/true"]}}"#,
    )
    .unwrap();
    let o = f
        .cmd(
            &f.ci,
            &[
                "run",
                "--squashfs",
                f.sqfs.to_str().unwrap(),
                "--image-config",
                cfg.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    let err = failed(&o, 125);
    assert!(
        err.contains("image config Env: invalid variable name \"BAD NAME\""),
        "{err}"
    );
    // What is valid still arrives: values with blanks, '=' and from a file.
    let good = dir.join("good.env");
    std::fs::write(&good, "  FROMFILE=a b=c  \n").unwrap();
    let o = f.run(
        &f.ci,
        &[
            "--env-file",
            good.to_str().unwrap(),
            "-e",
            "SP=x y",
            "sh",
            "-c",
            "echo \"$FROMFILE|$SP\"",
        ],
    );
    assert_eq!(run_support::ok(&o), "a b=c|x y\n");
}
