//! Registry credentials from the files podman, skopeo and docker write
//! (`{"auths": {"HOST[/PATH]": {"auth": base64("user:pass")}}}`).
//!
//! Files, in order (the first that has an entry for the registry wins):
//! 1. `$REGISTRY_AUTH_FILE` if set, else `$XDG_RUNTIME_DIR/containers/auth.json`
//! 2. `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/containers/auth.json`)
//! 3. `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`
//!
//! Within a file the most specific key wins: `host/org/app` before `host/org` before
//! `host`. Docker Hub is also found under `index.docker.io` and
//! `https://index.docker.io/v1/`. Credential helpers (`credHelpers`, `credsStore`) and
//! `identitytoken` entries are not supported.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Auth files bigger than this are refused (they are a few KiB).
const MAX_AUTH_FILE: u64 = 1 << 20;

/// A user name and password (or token used as a password) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl fmt::Debug for Credential {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({:?}, <password>)", self.username)
    }
}

impl Credential {
    /// The value of an `Authorization: Basic …` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The auth files to search, in order.
#[derive(Debug, Clone, Default)]
pub struct AuthFiles {
    files: Vec<PathBuf>,
}

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl AuthFiles {
    /// Exactly these files, in this order (`--authfile`, tests).
    pub fn new(files: Vec<PathBuf>) -> AuthFiles {
        AuthFiles { files }
    }

    /// The standard locations, from the process environment.
    pub fn from_env() -> AuthFiles {
        AuthFiles::new(standard_paths(|k| std::env::var_os(k).map(PathBuf::from)))
    }

    /// The files searched, for messages.
    pub fn paths(&self) -> &[PathBuf] {
        &self.files
    }

    /// Credentials for `repository` at `host`. With `user` (enroot's `USER@`), only an
    /// entry for that user name is accepted. Missing files are skipped; an unreadable or
    /// malformed file is an error naming it.
    pub fn lookup(
        &self,
        host: &str,
        repository: &str,
        user: Option<&str>,
    ) -> Result<Option<Credential>> {
        for f in &self.files {
            let bytes = match read_capped(f) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => return Err(e),
            };
            if let Some(c) = find_in(&bytes, host, repository, user)
                .with_context(|| format!("auth file {}", f.display()))?
            {
                return Ok(Some(c));
            }
        }
        if let Some(u) = user {
            bail!(
                "no credentials for user {u:?} at {host} in {}",
                self.describe()
            );
        }
        Ok(None)
    }

    /// `a, b, c` (or "no auth files") for messages.
    pub fn describe(&self) -> String {
        if self.files.is_empty() {
            return "no auth files".into();
        }
        self.files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The standard search list given an environment lookup (pure, for tests).
pub fn standard_paths(env: impl Fn(&str) -> Option<PathBuf>) -> Vec<PathBuf> {
    let abs = |k: &str| env(k).filter(|p| p.is_absolute() && !p.as_os_str().is_empty());
    let home = abs("HOME");
    let mut v = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE").filter(|p| !p.as_os_str().is_empty()) {
        v.push(f);
    } else if let Some(d) = abs("XDG_RUNTIME_DIR") {
        v.push(d.join("containers/auth.json"));
    }
    match (abs("XDG_CONFIG_HOME"), &home) {
        (Some(d), _) => v.push(d.join("containers/auth.json")),
        (None, Some(h)) => v.push(h.join(".config/containers/auth.json")),
        _ => {}
    }
    match (abs("DOCKER_CONFIG"), &home) {
        (Some(d), _) => v.push(d.join("config.json")),
        (None, Some(h)) => v.push(h.join(".docker/config.json")),
        _ => {}
    }
    v
}

fn read_capped(f: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match std::fs::File::open(f) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("auth file {}", f.display())),
    };
    let mut buf = Vec::new();
    file.take(MAX_AUTH_FILE + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("auth file {}", f.display()))?;
    if buf.len() as u64 > MAX_AUTH_FILE {
        bail!(
            "auth file {}: larger than {MAX_AUTH_FILE} bytes",
            f.display()
        );
    }
    Ok(Some(buf))
}

/// `https://index.docker.io/v1/` → `docker.io`; `host/path/` → `host/path`.
fn normalize_key(k: &str) -> String {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let k = k.trim_end_matches('/');
    let k = k.strip_suffix("/v1").or(k.strip_suffix("/v2")).unwrap_or(k);
    let (host, rest) = match k.split_once('/') {
        Some((h, r)) => (h, Some(r)),
        None => (k, None),
    };
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    match rest {
        Some(r) => format!("{host}/{r}"),
        None => host.to_string(),
    }
}

/// Find the most specific entry for `host/repository` in one auth file's text.
pub fn find_in(
    json: &[u8],
    host: &str,
    repository: &str,
    user: Option<&str>,
) -> Result<Option<Credential>> {
    let file: AuthFile =
        serde_json::from_slice(json).map_err(|e| anyhow::anyhow!("invalid JSON: {e}"))?;
    let host = normalize_key(host);
    let full = format!("{host}/{repository}");
    // Candidates that are `host` or a path prefix of `host/repository` at a '/' boundary.
    let mut matches: Vec<(usize, &String, &AuthEntry)> = file
        .auths
        .iter()
        .filter_map(|(k, e)| {
            let nk = normalize_key(k);
            let hit = nk == host
                || (full.starts_with(&nk) && full.as_bytes().get(nk.len()) == Some(&b'/'))
                || nk == full;
            hit.then_some((nk.len(), k, e))
        })
        .collect();
    matches.sort_by_key(|m| std::cmp::Reverse(m.0));
    for (_, key, entry) in matches {
        let Some(cred) = decode_entry(entry).with_context(|| format!("entry {key:?}"))? else {
            continue;
        };
        if user.is_some_and(|u| u != cred.username) {
            continue;
        }
        return Ok(Some(cred));
    }
    Ok(None)
}

fn decode_entry(e: &AuthEntry) -> Result<Option<Credential>> {
    if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|_| anyhow::anyhow!("\"auth\" is not base64"))?;
        let s = String::from_utf8(raw).map_err(|_| anyhow::anyhow!("\"auth\" is not UTF-8"))?;
        let Some((u, p)) = s.split_once(':') else {
            bail!("\"auth\" is not base64 of user:password");
        };
        return Ok(Some(Credential {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credential {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn most_specific_key_wins() {
        let j = format!(
            r#"{{"auths": {{
                "ghcr.io": {{"auth": "{}"}},
                "ghcr.io/org": {{"auth": "{}"}},
                "ghcr.io/org/app": {{"auth": "{}"}},
                "ghcr.io/orgx": {{"auth": "{}"}}
            }}}}"#,
            b64("host:1"),
            b64("org:2"),
            b64("app:3"),
            b64("orgx:4")
        );
        let f = |repo| {
            find_in(j.as_bytes(), "ghcr.io", repo, None)
                .unwrap()
                .unwrap()
        };
        assert_eq!(f("org/app").username, "app");
        assert_eq!(f("org/other").username, "org");
        assert_eq!(f("org2/app").username, "host");
        assert_eq!(f("orgx/y").username, "orgx");
        assert_eq!(f("org/app").password, "3");
    }

    #[test]
    fn docker_hub_aliases_and_plain_fields() {
        let j = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}},
                "127.0.0.1:5001": {{"username": "u", "password": "p:with:colons"}}}}}}"#,
            b64("hub:pw:x")
        );
        let c = find_in(j.as_bytes(), "docker.io", "library/busybox", None)
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("hub", "pw:x"));
        let c = find_in(j.as_bytes(), "127.0.0.1:5001", "a", None)
            .unwrap()
            .unwrap();
        assert_eq!(c.password, "p:with:colons");
        assert!(find_in(j.as_bytes(), "quay.io", "a", None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn user_selects_entry() {
        let j = format!(
            r#"{{"auths": {{"r.io": {{"auth": "{}"}}, "r.io/lab": {{"auth": "{}"}}}}}}"#,
            b64("alice:a"),
            b64("bob:b")
        );
        let c = find_in(j.as_bytes(), "r.io", "lab/app", Some("alice"))
            .unwrap()
            .unwrap();
        assert_eq!(c.password, "a");
        assert!(find_in(j.as_bytes(), "r.io", "lab/app", Some("carol"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn malformed_is_an_error() {
        assert!(find_in(b"{", "r.io", "a", None).is_err());
        let e = find_in(br#"{"auths":{"r.io":{"auth":"!!"}}}"#, "r.io", "a", None).unwrap_err();
        assert!(format!("{e:#}").contains("base64"), "{e:#}");
        let bad = format!(r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#, b64("nocolon"));
        assert!(find_in(bad.as_bytes(), "r.io", "a", None).is_err());
        // Empty or token-only entries are skipped, not errors.
        assert!(
            find_in(br#"{"auths":{"r.io":{"auth":""}}}"#, "r.io", "a", None)
                .unwrap()
                .is_none()
        );
        assert!(find_in(br#"{}"#, "r.io", "a", None).unwrap().is_none());
    }

    #[test]
    fn search_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| PathBuf::from(v))
            }
        };
        assert_eq!(
            standard_paths(env(&[("HOME", "/h"), ("XDG_RUNTIME_DIR", "/run/user/1")])),
            vec![
                PathBuf::from("/run/user/1/containers/auth.json"),
                "/h/.config/containers/auth.json".into(),
                "/h/.docker/config.json".into()
            ]
        );
        assert_eq!(
            standard_paths(env(&[
                ("HOME", "/h"),
                ("REGISTRY_AUTH_FILE", "/a.json"),
                ("XDG_RUNTIME_DIR", "/run/user/1"),
                ("DOCKER_CONFIG", "/d")
            ])),
            vec![
                PathBuf::from("/a.json"),
                "/h/.config/containers/auth.json".into(),
                "/d/config.json".into()
            ]
        );
        assert!(standard_paths(env(&[])).is_empty());
    }

    #[test]
    fn files_skip_missing_and_name_bad_ones() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("good.json");
        let bad = d.path().join("bad.json");
        std::fs::write(
            &good,
            format!(r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#, b64("u:p")),
        )
        .unwrap();
        std::fs::write(&bad, "not json").unwrap();
        let files = AuthFiles::new(vec![d.path().join("missing.json"), good.clone()]);
        assert_eq!(
            files.lookup("r.io", "x", None).unwrap().unwrap().username,
            "u"
        );
        let files = AuthFiles::new(vec![bad.clone(), good]);
        let e = files.lookup("r.io", "x", None).unwrap_err();
        assert!(format!("{e:#}").contains("bad.json"), "{e:#}");
        let e = AuthFiles::new(vec![])
            .lookup("r.io", "x", Some("bob"))
            .unwrap_err();
        assert!(format!("{e:#}").contains("bob"), "{e:#}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Any JSON document, nested a few levels.
        fn json() -> impl Strategy<Value = serde_json::Value> {
            use serde_json::Value;
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                "\\PC{0,20}".prop_map(Value::String),
                // base64-looking text, so that "auth" decoding is reached.
                "[A-Za-z0-9+/]{0,24}={0,2}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 64, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    proptest::collection::btree_map(
                        prop_oneof![
                            Just("auths".to_string()),
                            Just("auth".to_string()),
                            Just("username".to_string()),
                            Just("password".to_string()),
                            Just("r.example".to_string()),
                            "\\PC{0,12}"
                        ],
                        inner,
                        0..6
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// Arbitrary bytes: an error or an answer, never a panic.
            #[test]
            fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = find_in(&b, "r.example", "a/b", None);
            }

            /// Arbitrary JSON (also under "auths" and a registry's key): never a panic.
            #[test]
            fn arbitrary_json_never_panics(v in json(), host in prop_oneof![Just("r.example"), Just("docker.io")]) {
                let doc = serde_json::json!({ "auths": { "r.example": v.clone(), "https://index.docker.io/v1/": v.clone() } });
                for d in [v, doc] {
                    let text = serde_json::to_vec(&d).unwrap();
                    let _ = find_in(&text, host, "org/app", None);
                    let _ = find_in(&text, host, "org/app", Some("u"));
                }
            }

            /// A credential written as podman writes it (base64 of `user:password`, or
            /// separate fields) is found again, under the host or a path prefix.
            #[test]
            fn written_credentials_are_found(
                user in "[^:\\x00]{1,16}",
                password in "\\PC{0,24}",
                host in "[a-z0-9]{1,8}\\.[a-z]{2,4}(:[1-9][0-9]{0,3})?",
                repo in "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}",
                prefix_len in 0usize..3,
                split_fields in any::<bool>(),
            ) {
                let parts: Vec<&str> = repo.split('/').collect();
                let key = std::iter::once(host.as_str())
                    .chain(parts.iter().take(prefix_len.min(parts.len())).copied())
                    .collect::<Vec<_>>()
                    .join("/");
                let entry = if split_fields {
                    serde_json::json!({ "username": user, "password": password })
                } else {
                    let raw = format!("{user}:{password}");
                    serde_json::json!({ "auth": base64::engine::general_purpose::STANDARD.encode(raw) })
                };
                let doc = serde_json::json!({ "auths": { key: entry } });
                let text = serde_json::to_vec(&doc).unwrap();
                let want = Credential { username: user.clone(), password };
                prop_assert_eq!(find_in(&text, &host, &repo, None).unwrap(), Some(want.clone()));
                prop_assert_eq!(find_in(&text, &host, &repo, Some(&user)).unwrap(), Some(want));
                let other = format!("{user}x");
                prop_assert_eq!(find_in(&text, &host, &repo, Some(&other)).unwrap(), None);
            }
        }
    }
}
