//! What the packages are made of, from the built binary: `--version` names the commit,
//! `warren man-pages` writes one page per command, the bash completion loads and
//! completes real subcommands (zsh and fish: in scripts/test-packages.sh's Debian root); both work without a usable configuration
//! (a build host's). The packages themselves: scripts/test-packages.sh.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use support::{have, ok, stderr, stdout};

fn warren(args: &[&str]) -> Command {
    let mut c = Command::new(support::bin::BUILT);
    // A configuration that cannot load: generated files must not depend on it.
    c.args(args)
        .env("WARREN_CONFIG", "/nonexistent/warren.toml");
    c
}

#[test]
fn version_names_the_commit() {
    let out = ok(&Command::new(support::bin::BUILT)
        .arg("--version")
        .output()
        .unwrap());
    let head = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let commit = match (std::env::var("WARREN_COMMIT"), head) {
        (Ok(c), _) if !c.is_empty() => c,
        (_, Some(h)) => h,
        _ => "unknown".into(),
    };
    assert_eq!(
        out.trim(),
        format!(
            "warren {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            &commit[..commit.len().min(12)]
        )
    );
}

/// Subcommand paths from `--help` output, recursively: `run`, `admin subid plan`, …
fn commands(prefix: &[&str]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = prefix.to_vec();
    args.push("--help");
    let help = ok(&warren(&args).output().unwrap());
    let mut found = Vec::new();
    let mut in_cmds = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_cmds = true;
            continue;
        }
        if in_cmds {
            let Some(name) = line
                .strip_prefix("  ")
                .and_then(|l| l.split_whitespace().next())
            else {
                break;
            };
            if name == "help" {
                continue;
            }
            let mut path: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
            path.push(name.to_string());
            let sub: Vec<&str> = path.iter().map(String::as_str).collect();
            found.extend(commands(&sub));
            found.push(path);
        }
    }
    found
}

#[test]
fn one_man_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = warren(&["man-pages", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let got: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut want: BTreeSet<String> = commands(&[])
        .iter()
        .map(|p| format!("warren-{}.1", p.join("-")))
        .collect();
    want.insert("warren.1".into());
    assert!(want.contains("warren-run.1") && want.contains("warren-admin-subid-plan.1"));
    assert_eq!(got, want);
    let run = std::fs::read_to_string(dir.path().join("warren-run.1")).unwrap();
    assert!(
        run.starts_with(".ie") && run.contains(".TH warren-run 1"),
        "{run}"
    );
    assert!(
        run.contains("\\-\\-volume"),
        "warren-run.1 lacks the run options"
    );
    // Same input, same bytes: the packages are reproducible.
    let again = tempfile::tempdir().unwrap();
    assert!(warren(&["man-pages", again.path().to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    for name in &got {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            std::fs::read(again.path().join(name)).unwrap(),
            "{name} differs between two runs"
        );
    }
    if have("man") {
        // man renders the page without a groff warning.
        let o = Command::new("man")
            .args(["--warnings", "-l", "-Tutf8"])
            .arg(dir.path().join("warren-run.1"))
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            stderr(&o),
            "",
            "man --warnings complains about warren-run.1"
        );
        assert!(stdout(&o).contains("warren-run - Run a command in a new rootless container"));
    }
}

#[test]
fn bash_completion_completes_subcommands_and_options() {
    need!(support::need_programs(&["bash"]));
    let script = ok(&warren(&["completion", "bash"]).output().unwrap());
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), script).unwrap();
    let complete = |words: &str| {
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {} && COMP_WORDS=({words}) && COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) \
                 && _warren warren \"${{COMP_WORDS[-1]}}\" && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                f.path().display()
            ))
            .output()
            .unwrap();
        ok(&o)
    };
    assert_eq!(complete("warren pu").trim(), "pull");
    // The build's hidden generator is not offered; `completion` is.
    assert_eq!(complete("warren m").trim(), "");
    assert_eq!(complete("warren com").trim(), "completion");
    let run = complete("warren run --rea");
    assert_eq!(run.trim(), "--read-only");
}

#[test]
fn bad_shell_and_unwritable_dir_are_one_line_errors() {
    let o = warren(&["completion", "tcsh"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid value 'tcsh'"));
    let o = warren(&["man-pages", "/proc/warren-no-such-dir"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("warren: create /proc/warren-no-such-dir"),
        "{err}"
    );
}
