//! `warren inspect`.

use super::Ctx;
use crate::store::Stores;
use anyhow::{Context, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A stored image: tag, short name, digest or digest prefix.
    pub image: String,
}

/// Print the selected fields of the image config as JSON.
pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let stores = Stores::open(&ctx.config)?;
    let e = stores.find(&a.image)?.with_context(|| {
        format!(
            "{}: no such image in the store (warren pull it first)",
            a.image
        )
    })?;
    let bytes = std::fs::read(&e.config).with_context(|| format!("read {}", e.config.display()))?;
    let cfg: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: invalid image config", e.config.display()))?;
    let c = cfg
        .get("config")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let field = |k: &str| c.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let out = serde_json::json!({
        "digest": e.digest.to_string(),
        "squashfs": e.squashfs,
        "os": cfg.get("os"),
        "architecture": cfg.get("architecture"),
        "variant": cfg.get("variant"),
        "created": cfg.get("created"),
        "env": field("Env"),
        "entrypoint": field("Entrypoint"),
        "cmd": field("Cmd"),
        "workdir": field("WorkingDir"),
        "user": field("User"),
        "labels": field("Labels"),
        "exposed_ports": field("ExposedPorts"),
        "volumes": field("Volumes"),
        "stop_signal": field("StopSignal"),
    });
    super::print_json(&out)?;
    Ok(0)
}
