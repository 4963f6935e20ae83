//! The parts of an OCI image config the runtime uses: env, entrypoint, cmd, workdir, user.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::Path;

/// `config` section of an OCI image config (missing fields are empty).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ImageConfig {
    #[serde(rename = "Env")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir")]
    pub working_dir: Option<String>,
    #[serde(rename = "User")]
    pub user: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Outer {
    config: Option<ImageConfig>,
}

impl ImageConfig {
    /// Parse the OCI image config JSON.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig> {
        let o: Outer = serde_json::from_slice(bytes).context("invalid image config JSON")?;
        Ok(o.config.unwrap_or_default())
    }

    /// Read and parse the file.
    pub fn read(path: &Path) -> Result<ImageConfig> {
        let b = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        ImageConfig::parse(&b).with_context(|| format!("image config {}", path.display()))
    }

    /// The command to run: `--entrypoint` replaces the image's (and drops its Cmd unless
    /// args are given), args replace Cmd; Podman's rules.
    pub fn argv(&self, entrypoint: Option<&str>, args: &[String]) -> Vec<String> {
        let ep: Vec<String> = match entrypoint {
            Some("") => vec![],
            Some(e) => vec![e.to_string()],
            None => self.entrypoint.clone().unwrap_or_default(),
        };
        let cmd: Vec<String> = if !args.is_empty() {
            args.to_vec()
        } else if entrypoint.is_some() {
            vec![]
        } else {
            self.cmd.clone().unwrap_or_default()
        };
        ep.into_iter().chain(cmd).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_argv() {
        let c = ImageConfig::parse(
            br#"{"architecture":"amd64","config":{"Env":["PATH=/bin"],"Entrypoint":["/ep"],"Cmd":["a","b"],"WorkingDir":"/w","User":"65534"}}"#,
        )
        .unwrap();
        assert_eq!(c.argv(None, &[]), ["/ep", "a", "b"]);
        assert_eq!(c.argv(None, &["x".into()]), ["/ep", "x"]);
        assert_eq!(c.argv(Some("/other"), &[]), ["/other"]);
        assert_eq!(c.argv(Some(""), &["sh".into()]), ["sh"]);
        assert_eq!(c.user.as_deref(), Some("65534"));
        assert_eq!(ImageConfig::parse(b"{}").unwrap(), ImageConfig::default());
        assert!(ImageConfig::parse(b"[").is_err());
    }
}
