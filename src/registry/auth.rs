//! Registry authentication: `WWW-Authenticate` challenges (RFC 7235 syntax), Basic, and
//! Bearer tokens from the registry's token server (the Docker token protocol), cached
//! per (realm, service, scope, user) for the life of the process.

use super::credentials::Credential;
use super::retry::Failure;
use super::{read_capped, MAX_DOC};
use anyhow::anyhow;
use reqwest::Url;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longest `WWW-Authenticate` value we parse; real ones are a few hundred bytes.
const MAX_CHALLENGE: usize = 8 << 10;
/// Longest token accepted (JWTs with certificate chains are a few KiB).
const MAX_TOKEN: usize = 64 << 10;
/// A token is dropped this long before the server says it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// One challenge: the scheme (lowercase) and its parameters (keys lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic`, `bearer`, … (lowercase).
    pub scheme: String,
    /// Parameters such as `realm`, `service`, `scope` (names lowercase).
    pub params: BTreeMap<String, String>,
}

/// Parse a `WWW-Authenticate` value: one or more `Scheme k=v, k="quoted", …` challenges.
pub fn parse_challenges(v: &str) -> Result<Vec<Challenge>, String> {
    if v.len() > MAX_CHALLENGE {
        return Err(format!(
            "WWW-Authenticate longer than {MAX_CHALLENGE} bytes"
        ));
    }
    let b = v.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&c);
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        // A token: either a new scheme, or a parameter name of the current challenge.
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == start {
            return Err(format!("unexpected {:?} at byte {i}", b[i] as char));
        }
        let tok = &v[start..i];
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            // k=v of the current challenge (a token68 like `abc==` is not used by registries).
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut s = String::new();
                loop {
                    match b.get(i) {
                        None => return Err("unterminated quoted string".into()),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') if i + 1 < b.len() => {
                            // The escaped character may be multi-byte: copy it whole.
                            let ch = v[i + 1..].chars().next().ok_or("bad UTF-8")?;
                            s.push(ch);
                            i += 1 + ch.len_utf8();
                        }
                        Some(_) => {
                            // Copy one UTF-8 character.
                            let ch = v[i..].chars().next().ok_or("bad UTF-8")?;
                            s.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                s
            } else {
                // Unquoted: RFC 7235 wants a token; servers also send bare URLs.
                let s0 = i;
                while i < b.len() && !matches!(b[i], b',' | b' ' | b'\t' | b'"') {
                    i += 1;
                }
                v[s0..i].to_string()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(tok.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge {
                scheme: tok.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    Ok(out)
}

/// How this client authenticates, learnt from the registry's challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Basic` with the registry's credentials.
    Basic,
    /// A token from the token server at `realm`.
    Bearer {
        /// The token server's URL.
        realm: String,
        /// The `service` parameter to pass on, if the challenge named one.
        service: Option<String>,
        /// What access to ask for (`repository:NAME:pull`).
        scope: String,
    },
}

/// Choose Bearer over Basic when both are offered. `default_scope` is used when the
/// challenge names none (e.g. for `/v2/`).
pub fn choose_scheme(challenges: &[Challenge], default_scope: &str) -> Option<Scheme> {
    if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
        let realm = c.params.get("realm")?.clone();
        return Some(Scheme::Bearer {
            realm,
            service: c.params.get("service").cloned(),
            scope: c
                .params
                .get("scope")
                .cloned()
                .unwrap_or_else(|| default_scope.to_string()),
        });
    }
    challenges
        .iter()
        .any(|c| c.scheme == "basic")
        .then_some(Scheme::Basic)
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct TokenKey {
    realm: String,
    service: Option<String>,
    scope: String,
    /// The whole credential (user and password): a token got with one password must not
    /// be handed out for another.
    cred: Option<String>,
}

fn cache() -> &'static Mutex<HashMap<TokenKey, (String, Instant)>> {
    static TOKENS: OnceLock<Mutex<HashMap<TokenKey, (String, Instant)>>> = OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

fn key(realm: &str, service: &Option<String>, scope: &str, cred: Option<&Credential>) -> TokenKey {
    TokenKey {
        realm: realm.to_string(),
        service: service.clone(),
        scope: scope.to_string(),
        cred: cred.map(|c| c.basic_header()),
    }
}

/// A cached, unexpired token, if any.
pub fn cached_token(
    realm: &str,
    service: &Option<String>,
    scope: &str,
    cred: Option<&Credential>,
) -> Option<String> {
    let k = key(realm, service, scope, cred);
    let map = cache().lock().ok()?;
    map.get(&k)
        .filter(|(_, exp)| *exp > Instant::now())
        .map(|(t, _)| t.clone())
}

/// Forget a token the registry refused.
pub fn forget_token(realm: &str, service: &Option<String>, scope: &str, cred: Option<&Credential>) {
    if let Ok(mut map) = cache().lock() {
        map.remove(&key(realm, service, scope, cred));
    }
}

/// Is `host` (no port) a loopback name or address?
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(serde::Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Ask the token server for a token (with Basic credentials when we have them), cache it.
pub fn fetch_token(
    http: &reqwest::blocking::Client,
    realm: &str,
    service: &Option<String>,
    scope: &str,
    cred: Option<&Credential>,
) -> Result<String, Failure> {
    let mut url = Url::parse(realm)
        .map_err(|e| Failure::fatal(anyhow!("token realm {realm:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(Failure::fatal(anyhow!(
            "token realm {realm:?}: only http(s) is supported"
        )));
    }
    if cred.is_some() && url.scheme() == "http" && !url.host_str().is_some_and(is_loopback_host) {
        return Err(Failure::fatal(anyhow!(
            "token realm {realm}: refusing to send credentials over plain HTTP to a non-loopback host"
        )));
    }
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        q.append_pair("scope", scope);
    }
    let mut rb = http.get(url.clone());
    if let Some(c) = cred {
        rb = rb.header(reqwest::header::AUTHORIZATION, c.basic_header());
    }
    let resp = rb
        .send()
        .map_err(|e| Failure::retry(anyhow!("token server {realm}: {}", super::chain(&e))))?;
    let status = resp.status();
    if status.as_u16() == 401 || status.as_u16() == 403 {
        return Err(Failure::fatal(match cred {
            Some(c) => anyhow!(
                "token server {realm} rejected the credentials of user {:?} (HTTP {status}): wrong user name or password?",
                c.username
            ),
            None => anyhow!("token server {realm} refused an anonymous token (HTTP {status}): log in first"),
        }));
    }
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(Failure::retry(anyhow!(
            "token server {realm}: HTTP {status}"
        )));
    }
    if !status.is_success() {
        return Err(Failure::fatal(anyhow!(
            "token server {realm}: HTTP {status}"
        )));
    }
    let body = read_capped(resp, MAX_DOC)
        .map_err(|e| Failure::retry(e.context(format!("token server {realm}"))))?;
    let reply: TokenReply = serde_json::from_slice(&body)
        .map_err(|e| Failure::fatal(anyhow!("token server {realm}: invalid reply: {e}")))?;
    let token = reply
        .token
        .filter(|t| !t.is_empty())
        .or(reply.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| Failure::fatal(anyhow!("token server {realm}: reply has no token")))?;
    if token.len() > MAX_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Failure::fatal(anyhow!(
            "token server {realm}: token is too long or has characters not allowed in a header"
        )));
    }
    // The protocol's default lifetime is 60 s.
    let life = Duration::from_secs(reply.expires_in.unwrap_or(60).clamp(0, 86400));
    let expiry = Instant::now() + life.saturating_sub(EXPIRY_MARGIN);
    if let Ok(mut map) = cache().lock() {
        map.insert(key(realm, service, scope, cred), (token.clone(), expiry));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull");
        assert_eq!(
            choose_scheme(&c, "x"),
            Some(Scheme::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: "repository:library/busybox:pull".into()
            })
        );
    }

    #[test]
    fn several_challenges_tokens_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="a \"b\", c", Bearer realm=https://t/x , service=svc,error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].params["realm"], r#"a "b", c"#);
        assert_eq!(c[1].params["realm"], "https://t/x");
        assert_eq!(c[1].params["service"], "svc");
        // Bearer preferred; missing scope takes the default.
        assert_eq!(
            choose_scheme(&c, "repository:a:pull"),
            Some(Scheme::Bearer {
                realm: "https://t/x".into(),
                service: Some("svc".into()),
                scope: "repository:a:pull".into()
            })
        );
        assert_eq!(
            choose_scheme(&parse_challenges("basic").unwrap(), "s"),
            Some(Scheme::Basic)
        );
    }

    #[test]
    fn bad_challenges() {
        assert!(parse_challenges(r#"Bearer realm="open"#).is_err());
        assert!(parse_challenges(&"x".repeat(MAX_CHALLENGE + 1)).is_err());
        assert!(parse_challenges("Bearer realm=\"x\", =y").is_err());
        assert_eq!(
            choose_scheme(&parse_challenges("Negotiate").unwrap(), "s"),
            None
        );
        // Bearer without a realm cannot be used.
        assert_eq!(
            choose_scheme(&parse_challenges("Bearer service=x").unwrap(), "s"),
            None
        );
        assert!(parse_challenges("").unwrap().is_empty());
    }

    #[test]
    fn hostile_challenges_never_panic() {
        assert_eq!(
            parse_challenges("Bearer realm=\"\\é\"").unwrap()[0].params["realm"],
            "é"
        );
        // Every prefix of a tricky header, and byte soup built from its pieces.
        let tricky = "Bearer realm=\"h\\\"ü\\é\", service=ß,scope=\"a:b\" , Basic x=, =,\\\"";
        for (i, _) in tricky.char_indices() {
            let _ = parse_challenges(&tricky[..i]);
        }
        let pieces = ["Bearer", " ", "=", "\"", "\\", ",", "é", "realm", "x"];
        let mut seed = 12345u64;
        for _ in 0..5000 {
            let mut s = String::new();
            for _ in 0..12 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            let _ = parse_challenges(&s);
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "127.0.0.1", "127.8.9.10", "[::1]", "::1"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1", "[::2]", "localhost.example"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn challenge() -> impl Strategy<Value = Challenge> {
            (
                "[a-z][a-z0-9]{0,8}",
                proptest::collection::btree_map("[a-z][a-z0-9_-]{0,8}", "\\PC{0,24}", 0..5),
            )
                .prop_map(|(scheme, params)| Challenge { scheme, params })
        }

        /// A header value as a server would write it: every value quoted and escaped.
        fn header(cs: &[Challenge]) -> String {
            cs.iter()
                .map(|c| {
                    let params: Vec<String> = c
                        .params
                        .iter()
                        .map(|(k, v)| {
                            let v = v.replace('\\', "\\\\").replace('"', "\\\"");
                            format!("{k}=\"{v}\"")
                        })
                        .collect();
                    if params.is_empty() {
                        c.scheme.clone()
                    } else {
                        format!("{} {}", c.scheme, params.join(", "))
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        }

        proptest! {
            /// Written challenges parse back to themselves, whatever the quoted values hold.
            #[test]
            fn challenges_round_trip(cs in proptest::collection::vec(challenge(), 0..4)) {
                let h = header(&cs);
                prop_assert_eq!(parse_challenges(&h), Ok(cs), "{}", h);
            }

            /// Arbitrary headers: an error or challenges with lowercase names, never a
            /// panic; a scheme is chosen only from what was offered.
            #[test]
            fn arbitrary_headers_never_panic(
                v in prop_oneof!["\\PC{0,80}", "[A-Za-z =\",\\\\\t/:é]{0,60}"]
            ) {
                if let Ok(cs) = parse_challenges(&v) {
                    for c in &cs {
                        prop_assert!(!c.scheme.is_empty());
                        prop_assert_eq!(c.scheme.to_ascii_lowercase(), c.scheme.clone());
                        for k in c.params.keys() {
                            prop_assert_eq!(k.to_ascii_lowercase(), k.clone());
                        }
                    }
                    match choose_scheme(&cs, "s") {
                        Some(Scheme::Basic) => prop_assert!(cs.iter().any(|c| c.scheme == "basic")),
                        Some(Scheme::Bearer { realm, .. }) => prop_assert!(cs
                            .iter()
                            .any(|c| c.scheme == "bearer" && c.params.get("realm") == Some(&realm))),
                        None => {}
                    }
                }
            }
        }
    }
}
