//! `--shared` / `--store user|shared`: which store `pull`, `rmi` and `prune` write to.

use anyhow::{bail, Result};

/// The store a writing command acts on (flattened into its arguments).
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// Act on the first shared store (store.shared) instead of your own (admins).
    #[arg(long)]
    pub shared: bool,
    /// Store to act on: `user` (default) or `shared` (same as --shared).
    #[arg(long, value_name = "user|shared")]
    pub store: Option<String>,
}

impl StoreArgs {
    /// True for the shared store. Checked here rather than by clap, so that a bad value
    /// is a one-line error like every other.
    pub fn shared(&self) -> Result<bool> {
        match self.store.as_deref() {
            None | Some("user") => Ok(self.shared),
            Some("shared") => Ok(true),
            Some(other) => bail!("--store {other:?}: expected user or shared"),
        }
    }
}
