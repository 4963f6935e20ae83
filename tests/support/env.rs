//! `warren` with a private store and config per test. As root with the test user present,
//! everything belongs to that user and `warren` runs as that user (the rootless path);
//! otherwise as ourselves.

use super::tmp::TestDir;
use super::users::{User, TEST_USER};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory with its own store (`DIR/store`) and config (`DIR/warren.toml`).
pub struct Env {
    pub dir: TestDir,
}

impl Env {
    pub fn new() -> Env {
        Env::with_config("")
    }

    /// `extra` is appended to the generated config (after `[store] path = …`).
    pub fn with_config(extra: &str) -> Env {
        let user = if super::is_root() {
            User::lookup(TEST_USER)
        } else {
            None
        };
        let env = Env {
            dir: TestDir::owned_by("warren-pulltest-", user),
        };
        env.write_config(extra);
        env
    }

    /// Run `warren` as ourselves from now on (root: for tests of the tree itself, or of
    /// an admin).
    pub fn run_as_self(mut self) -> Env {
        self.dir.owner = None;
        self
    }

    /// Who `warren` runs as, when not us.
    pub fn user(&self) -> Option<&User> {
        self.dir.owner.as_ref()
    }

    pub fn write_config(&self, extra: &str) {
        let cfg = format!("[store]\npath = \"{}\"\n{extra}\n", self.store().display());
        let p = self.config();
        std::fs::write(&p, cfg).unwrap();
        self.give(&p);
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("warren.toml")
    }

    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }

    /// The torture layout (scripts/test-images.sh) built in `DIR/torture` for the user
    /// warren runs as: its `oci:PATH` image spec, or why it cannot be built here.
    pub fn torture(&self) -> Result<String, String> {
        let layout = self.path().join("torture");
        super::torture_layout(&layout)?;
        self.give(&layout);
        Ok(format!("oci:{}", layout.display()))
    }

    /// Hand `p` to the user warren runs as.
    pub fn give(&self, p: &Path) {
        self.dir.give(p)
    }

    /// `prog` as the user warren runs as, from this directory.
    pub fn as_user(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = match self.user() {
            Some(u) => u.command(prog),
            None => Command::new(prog),
        };
        c.current_dir(self.path());
        c
    }

    /// A command running `warren ARGS` with this test's config.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.as_user(super::warren_bin());
        c.args(args)
            .env("WARREN_CONFIG", self.config())
            .env("HOME", self.path())
            // A shared image mount ends with its last container: tests leave nothing.
            .env("WARREN_RUN_SHARED_MOUNT_IDLE", "0")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run warren")
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "warren {args:?} failed: {}\n{}",
            super::stderr(&o),
            super::stdout(&o)
        );
        super::stdout(&o)
    }

    /// The image directory of `digest` (`sha256:…`) in this store.
    pub fn image_dir(&self, digest: &str) -> PathBuf {
        self.store()
            .join("images")
            .join(digest.trim().trim_start_matches("sha256:"))
    }

    /// The squashfs of image `digest` in this store.
    pub fn sqfs(&self, digest: &str) -> PathBuf {
        self.image_dir(digest).join("image.sqfs")
    }

    /// Names left in the store's staging dir (`tmp/`), which must exist.
    pub fn staging(&self) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(self.store().join("tmp"))
            .expect("the store's tmp/")
            .flatten()
            .map(|e| e.file_name())
            .collect()
    }
}
