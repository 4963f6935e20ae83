//! Temp dirs the test users can use, always removed (also after a failed assertion:
//! removal is in Drop, and root can remove whatever the users wrote inside).

use super::users::User;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory under /var/tmp (a real disk, unlike a tmpfs /tmp), mode 0755 so the test
/// users can enter it; removed on drop.
pub struct TestDir {
    dir: tempfile::TempDir,
    /// Who owns it (and what [`TestDir::give`] hands out), when not us.
    pub owner: Option<User>,
}

impl TestDir {
    /// `/var/tmp/PREFIX…` (random suffix), owned by us, enterable by all.
    pub fn new(prefix: &str) -> TestDir {
        TestDir::build(tempfile::Builder::new().prefix(prefix))
    }

    /// Exactly `/var/tmp/NAME`, for tools that care about the name (make it unique).
    pub fn named(name: &str) -> TestDir {
        TestDir::build(tempfile::Builder::new().prefix(name).rand_bytes(0))
    }

    fn build(b: &mut tempfile::Builder) -> TestDir {
        let dir = b.tempdir_in("/var/tmp").expect("temp dir in /var/tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        TestDir { dir, owner: None }
    }

    /// Owned by `user` (when Some), so it can write there.
    pub fn owned_by(prefix: &str, user: Option<User>) -> TestDir {
        let mut d = TestDir::new(prefix);
        d.owner = user;
        d.give(d.path());
        d
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Hand `p` and everything below it to the owner (no-op when we own the dir).
    pub fn give(&self, p: &Path) {
        if let Some(u) = &self.owner {
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", u.uid, u.gid))
                .arg(p)
                .status()
                .expect("run chown");
            assert!(st.success(), "chown -R {} {}", u.name, p.display());
        }
    }
}
