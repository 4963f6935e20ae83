//! `warren --version` names the commit it was built from: `WARREN_COMMIT` when the
//! packaging sets it (a build from a source tarball has no .git), else `git rev-parse`
//! when building in warren's own checkout, else "unknown".

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=WARREN_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = match std::env::var("WARREN_COMMIT") {
        Ok(c) if is_commit(c.trim()) => c.trim().to_string(),
        Ok(c) if !c.is_empty() => panic!("WARREN_COMMIT={c:?} is not a hex commit id"),
        _ => from_git(&dir).unwrap_or_else(|| "unknown".into()),
    };
    let short = &commit[..commit.len().min(12)];
    println!(
        "cargo:rustc-env=WARREN_VERSION_LONG={} (commit {short})",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
}

fn is_commit(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// HEAD's commit, only when `dir` is the top of a git checkout (not a tarball unpacked
/// inside someone else's repository), with rebuild triggers on HEAD and its ref.
fn from_git(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let commit = git(dir, &["rev-parse", "HEAD"]).filter(|c| is_commit(c))?;
    // Only existing files: cargo reruns a script on every build for a missing one.
    let mut watch = vec![git(dir, &["rev-parse", "--git-path", "HEAD"])];
    if let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(dir, &["rev-parse", "--git-path", &r]));
    }
    watch.push(git(dir, &["rev-parse", "--git-path", "packed-refs"]));
    for p in watch.into_iter().flatten() {
        let p = if Path::new(&p).is_absolute() {
            PathBuf::from(p)
        } else {
            dir.join(p)
        };
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    Some(commit)
}
