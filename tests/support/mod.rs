//! The one support module of the integration tests (`mod support;` in each tests/*.rs).
//!
//! - [`prereq`]: skipping with a printed reason when a prerequisite is missing (not root,
//!   a program, a test user, the test registries), so the suite passes on a bare machine
//!   and runs everything on CI, where scripts/setup-host.sh provides it all.
//! - [`users`]: the unprivileged test users and running commands as them (setpriv).
//! - [`bin`]: the `warren` binary at a path the test users can execute.
//! - [`tmp`]: temp dirs the test users can enter, always removed.
//! - [`env`]: `warren` with a private store and config ([`Env`]).
//! - [`registry`]: the test registries of `scripts/registry.sh` and their credentials.
//! - [`layout`]: OCI layouts from raw tar bytes, the torture layout.
//! - [`sqfs`]: reading a squashfs back (`sqfs2tar`), trees of paths to compare.
//! - [`output`]: a finished process's output as text or JSON.
//! - [`proxy`]: a request-counting proxy in front of the plain test registry.
//!
//! Each test binary uses part of it, hence `allow(dead_code)`.
#![allow(dead_code, unused_imports)]

pub mod bin;
pub mod env;
pub mod layout;
pub mod output;
pub mod prereq;
pub mod proxy;
pub mod registry;
pub mod sqfs;
pub mod tmp;
pub mod users;

pub use bin::warren_bin;
pub use env::Env;
pub use layout::{sha256_hex, torture_layout, write_layout, write_layout_with_config, RawTar};
pub use output::{json, ok, stderr, stdout};
pub use prereq::{have, is_root, need_programs, need_root};
pub use sqfs::{dir_tree, read_sqfs, sqfs_tree, Ent, Node};
pub use tmp::TestDir;
pub use users::{need_user, User, NOSUB_USER, TEST_USER};

/// Print why a test does not run (`SKIP test: why`), and return from it.
#[macro_export]
macro_rules! skip {
    ($($t:tt)*) => {{
        let why = format!("{}: {}", $crate::support::prereq::test_name(module_path!()), format!($($t)*));
        // CI sets this: there every prerequisite is installed, so a skip is a failure.
        if std::env::var_os("WARREN_TEST_NO_SKIP").is_some() {
            panic!("would skip under WARREN_TEST_NO_SKIP: {why}");
        }
        eprintln!("SKIP {why}");
        return;
    }};
}

/// The value of a prerequisite check (`Result<T, String>`), or skip with its reason.
#[macro_export]
macro_rules! need {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(why) => $crate::skip!("{why}"),
        }
    };
}
