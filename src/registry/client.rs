//! The HTTP side of one registry repository: endpoint and scheme (HTTPS, or HTTP for
//! loopback/insecure registries), TLS settings, authentication on 401, redirects followed
//! by hand (credentials never leave the registry's origin), status classification and
//! the retry loop.

use super::auth::{self, Scheme};
use super::credentials::{AuthFiles, Credential};
use super::retry::{self, Failure};
use super::{chain, read_capped};
use crate::config::{expand_tilde, Config};
use crate::reference::{ImageRef, DOCKER_HUB};
use anyhow::{anyhow, Context, Result};
use reqwest::blocking::{Client as Http, Response};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, LOCATION};
use reqwest::{Method, StatusCode, Url};
use std::fmt;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 10;
/// Error bodies read for their message, at most.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// Which schemes to use for the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemePolicy {
    /// TLS only (the default for every non-loopback registry).
    Https,
    /// Plain HTTP only (`http = true` in the registry's config).
    Http,
    /// Try HTTPS; on a connect or TLS failure use HTTP, and keep that choice for this
    /// client (loopback registries, and `insecure` ones, like Docker and podman).
    HttpsThenHttp,
}

/// Decide the policy: config first, then loopback/insecure.
pub fn scheme_policy(endpoint_host: &str, http: bool, insecure: bool) -> SchemePolicy {
    if http {
        SchemePolicy::Http
    } else if insecure || auth::is_loopback_host(endpoint_host) {
        SchemePolicy::HttpsThenHttp
    } else {
        SchemePolicy::Https
    }
}

/// `host` of `host[:port]` (IPv6 in brackets kept).
pub fn host_part(endpoint: &str) -> &str {
    if endpoint.starts_with('[') {
        return match endpoint.find(']') {
            Some(i) => &endpoint[..=i],
            None => endpoint,
        };
    }
    endpoint
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(endpoint)
}

/// `WARREN_TLS_VERIFY=false` (or 0/no, any case): skip certificate verification
/// everywhere, like `--tls-verify=false` in podman and skopeo. A value that is not a
/// boolean is an error rather than a silent "verify".
pub fn tls_verify_disabled_by_env() -> Result<bool> {
    tls_verify_disabled(std::env::var_os("WARREN_TLS_VERIFY").as_deref())
}

fn tls_verify_disabled(v: Option<&std::ffi::OsStr>) -> Result<bool> {
    let Some(v) = v else { return Ok(false) };
    match v.to_str().and_then(crate::config::parse_bool) {
        Some(verify) => Ok(!verify),
        None => anyhow::bail!(
            "WARREN_TLS_VERIFY={}: not a boolean ({})",
            v.to_string_lossy(),
            crate::config::BOOL_VALUES
        ),
    }
}

/// A request for the retry/auth machinery.
pub struct Req<'a> {
    /// GET or HEAD.
    pub method: Method,
    /// Path and query under the endpoint, starting with `/v2/`.
    pub path: String,
    /// Extra headers (Accept, Range); Authorization is added by the client.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Non-2xx statuses handed back to the caller instead of being errors (e.g. 416).
    pub pass: &'a [StatusCode],
}

/// One registry repository's client. Cheap to share between threads (`&Client`).
pub struct Client {
    registry: String,
    endpoint: String,
    repository: String,
    user: Option<String>,
    http: Http,
    policy: SchemePolicy,
    chosen: Mutex<Option<&'static str>>,
    auth_files: AuthFiles,
    credential: OnceLock<Result<Option<Credential>, String>>,
    auth: Mutex<Option<Scheme>>,
    attempts: u32,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Client({}/{})", self.endpoint, self.repository)
    }
}

impl Client {
    /// A client for `r` (fully qualified) with `cfg`'s per-registry settings.
    pub fn open(cfg: &Config, r: &ImageRef, auth_files: AuthFiles) -> Result<Client> {
        let registry = r.registry().to_string();
        let reg_cfg = cfg.registry(&registry);
        let endpoint = match reg_cfg.and_then(|c| c.mirror.clone()) {
            Some(m) => m,
            None if registry == DOCKER_HUB => "registry-1.docker.io".to_string(),
            None => registry.clone(),
        };
        // A mirror's own [[registry]] entry, if any, decides how to talk to it.
        let tls_cfg = cfg.registry(&endpoint).or(reg_cfg);
        let insecure = tls_cfg.is_some_and(|c| c.insecure) || tls_verify_disabled_by_env()?;
        let http_only = tls_cfg.is_some_and(|c| c.http);
        let timeout = Duration::from_secs(cfg.pull.timeout_secs.max(1));
        let mut b = Http::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("warren/", env!("CARGO_PKG_VERSION")));
        if insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(ca) = tls_cfg.and_then(|c| c.ca_file.as_ref()) {
            let path = expand_tilde(ca);
            let pem = std::fs::read(&path)
                .with_context(|| format!("registry {endpoint}: ca_file {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow!(
                    "registry {endpoint}: ca_file {}: not PEM certificates: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                anyhow::bail!(
                    "registry {endpoint}: ca_file {}: no certificates in it",
                    path.display()
                );
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| anyhow!("registry {endpoint}: HTTP client: {}", chain(&e)))?;
        Ok(Client {
            policy: scheme_policy(host_part(&endpoint), http_only, insecure),
            registry,
            endpoint,
            repository: r.repository.clone(),
            user: r.user.clone(),
            http,
            chosen: Mutex::new(None),
            auth_files,
            credential: OnceLock::new(),
            auth: Mutex::new(None),
            attempts: cfg.pull.retries.max(1),
        })
    }

    /// The repository name in the registry.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `host[:port]` contacted (the mirror, or Docker Hub's API host).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Run `op` until it succeeds, fails for good, or the attempts (`pull.retries`) are
    /// used up, sleeping between attempts (server's Retry-After, else backoff + jitter).
    pub fn with_retries<T>(
        &self,
        what: &str,
        mut op: impl FnMut(u32) -> Result<T, Failure>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            match op(attempt) {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e.context(what.to_string())),
                Err(Failure::Retry(e, after)) => {
                    if attempt + 1 >= self.attempts {
                        return Err(
                            e.context(format!("{what}: gave up after {} attempts", self.attempts))
                        );
                    }
                    std::thread::sleep(
                        after.unwrap_or_else(|| retry::backoff(attempt, retry::jitter())),
                    );
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt of a request: scheme choice, authentication (answering 401 challenges
    /// once), redirects. Returns a 2xx response (or one of `req.pass`); anything else is
    /// classified into a retryable or final failure.
    pub fn send(&self, req: &Req) -> Result<Response, Failure> {
        // Round 0 sends what we know (nothing, Basic, or a cached token); a 401 teaches
        // the scheme and round 1 tries a cached token or fresh credentials; a cached token
        // refused gets one more round with a token fetched anew. A 401 to credentials or
        // a token obtained just now is final.
        let mut force_new_token = false;
        for _round in 0..3 {
            let (header, fresh) = self.auth_header(force_new_token)?;
            let (resp, same_origin) = self.send_probing(req, header.as_deref())?;
            if resp.status() == StatusCode::UNAUTHORIZED && same_origin {
                if fresh {
                    return Err(Failure::fatal(self.denied()));
                }
                self.learn_challenge(&resp, header.is_some())?;
                force_new_token = header.is_some();
                continue;
            }
            return self.classify(resp, req);
        }
        Err(Failure::fatal(self.denied()))
    }

    fn credential(&self) -> Result<Option<Credential>, Failure> {
        let c = self.credential.get_or_init(|| {
            self.auth_files
                .lookup(&self.auth_host(), &self.repository, self.user.as_deref())
                .map_err(|e| format!("{e:#}"))
        });
        c.clone().map_err(|e| Failure::fatal(anyhow!(e)))
    }

    /// Credentials are looked up under the name of the host we talk to (a mirror has
    /// its own), except that Docker Hub's API host is known as `docker.io`.
    fn auth_host(&self) -> String {
        if self.endpoint == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            self.endpoint.clone()
        }
    }

    fn default_scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    /// The Authorization value for the next request, and whether it is fresh (credentials,
    /// or a token fetched just now) rather than a token from the cache.
    fn auth_header(&self, force_new_token: bool) -> Result<(Option<String>, bool), Failure> {
        let scheme = match self.auth.lock() {
            Ok(g) => g.clone(),
            Err(_) => None,
        };
        match scheme {
            None => Ok((None, false)),
            Some(Scheme::Basic) => Ok((self.credential()?.map(|c| c.basic_header()), true)),
            Some(Scheme::Bearer {
                realm,
                service,
                scope,
            }) => {
                let cred = self.credential()?;
                if !force_new_token {
                    if let Some(t) = auth::cached_token(&realm, &service, &scope, cred.as_ref()) {
                        return Ok((Some(format!("Bearer {t}")), false));
                    }
                }
                let t = auth::fetch_token(&self.http, &realm, &service, &scope, cred.as_ref())?;
                Ok((Some(format!("Bearer {t}")), true))
            }
        }
    }

    /// Remember how the registry wants us to authenticate.
    fn learn_challenge(&self, resp: &Response, sent_something: bool) -> Result<(), Failure> {
        let values: Vec<&str> = resp
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let mut challenges = Vec::new();
        for v in &values {
            let mut c = auth::parse_challenges(v).map_err(|e| {
                Failure::fatal(anyhow!(
                    "{}: malformed WWW-Authenticate header: {e}",
                    self.endpoint
                ))
            })?;
            challenges.append(&mut c);
        }
        let scheme = auth::choose_scheme(&challenges, &self.default_scope()).ok_or_else(|| {
            Failure::fatal(anyhow!(
                "{} answered 401 Unauthorized without a Basic or Bearer challenge",
                self.endpoint
            ))
        })?;
        if scheme == Scheme::Basic && self.credential()?.is_none() {
            return Err(Failure::fatal(anyhow!(
                "{} requires a login and there are no credentials for it in {}",
                self.endpoint,
                self.auth_files.describe()
            )));
        }
        if let Scheme::Bearer {
            realm,
            service,
            scope,
        } = &scheme
        {
            if sent_something {
                auth::forget_token(realm, service, scope, self.credential()?.as_ref());
            }
        }
        if let Ok(mut g) = self.auth.lock() {
            *g = Some(scheme);
        }
        Ok(())
    }

    /// The message for a 401 that survived fresh credentials or a fresh token.
    fn denied(&self) -> anyhow::Error {
        let scheme = self.auth.lock().ok().and_then(|g| g.clone());
        let cred = self.credential().ok().flatten();
        match (scheme, cred) {
            (Some(Scheme::Basic), Some(c)) => anyhow!(
                "{} rejected the credentials of user {:?} (from {}): wrong user name or password?",
                self.endpoint,
                c.username,
                self.auth_files.describe()
            ),
            (_, Some(c)) => anyhow!(
                "access to {} at {} denied for user {:?}",
                self.repository,
                self.endpoint,
                c.username
            ),
            (_, None) => anyhow!(
                "access to {} at {} denied to anonymous users; log in (auth.json) if it is private, and check the name",
                self.repository,
                self.endpoint
            ),
        }
    }

    fn scheme(&self) -> Option<&'static str> {
        match self.policy {
            SchemePolicy::Https => Some("https"),
            SchemePolicy::Http => Some("http"),
            SchemePolicy::HttpsThenHttp => self.chosen.lock().ok().and_then(|g| *g),
        }
    }

    fn set_scheme(&self, s: &'static str) {
        if let Ok(mut g) = self.chosen.lock() {
            *g = Some(s);
        }
    }

    /// Send on the chosen scheme; the first time for a probing client, try HTTPS and fall
    /// back to HTTP when TLS or the connection fails.
    fn send_probing(&self, req: &Req, auth: Option<&str>) -> Result<(Response, bool), Failure> {
        if let Some(s) = self.scheme() {
            return self.send_following(s, req, auth);
        }
        match self.send_following("https", req, auth) {
            Ok(r) => {
                self.set_scheme("https");
                Ok(r)
            }
            Err(https_err) => {
                let https_msg = match &https_err {
                    Failure::Retry(e, _) | Failure::Fatal(e) => format!("{e:#}"),
                };
                match self.send_following("http", req, auth) {
                    // A TLS server's answer to plain HTTP: the HTTPS error is the real one.
                    Ok((r, _)) if r.status() == StatusCode::BAD_REQUEST => Err(Failure::fatal(
                        anyhow!("{https_msg} (and the server does not speak plain HTTP)"),
                    )),
                    Ok(r) => {
                        self.set_scheme("http");
                        Ok(r)
                    }
                    Err(Failure::Retry(e, a)) => Err(Failure::Retry(
                        anyhow!("HTTPS: {https_msg}; HTTP: {e:#}"),
                        a,
                    )),
                    Err(Failure::Fatal(e)) => {
                        Err(Failure::fatal(anyhow!("HTTPS: {https_msg}; HTTP: {e:#}")))
                    }
                }
            }
        }
    }

    /// Send and follow redirects by hand. Authorization goes only to the registry's own
    /// origin (scheme, host, port); blob storage backends get none. Returns the final
    /// response and whether it came from the registry's origin.
    fn send_following(
        &self,
        scheme: &str,
        req: &Req,
        auth: Option<&str>,
    ) -> Result<(Response, bool), Failure> {
        let start = format!("{scheme}://{}{}", self.endpoint, req.path);
        let mut url = Url::parse(&start)
            .map_err(|e| Failure::fatal(anyhow!("bad request URL {start:?}: {e}")))?;
        let origin = url.origin();
        let mut method = req.method.clone();
        for _ in 0..=MAX_REDIRECTS {
            let same = url.origin() == origin;
            let mut headers = HeaderMap::new();
            for (k, v) in &req.headers {
                headers.insert(k.clone(), v.clone());
            }
            if let (true, Some(a)) = (same, auth) {
                let v = HeaderValue::from_str(a)
                    .map_err(|_| Failure::fatal(anyhow!("credential not valid in a header")))?;
                headers.insert(AUTHORIZATION, v);
            }
            let resp = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers)
                .send()
                .map_err(|e| transport_failure(&method, &url, &e))?;
            let status = resp.status();
            if status.is_redirection() {
                if let Some(loc) = resp.headers().get(LOCATION) {
                    let loc = loc.to_str().map_err(|_| {
                        Failure::fatal(anyhow!("{method} {url}: redirect Location is not text"))
                    })?;
                    let next = url.join(loc).map_err(|e| {
                        Failure::fatal(anyhow!("{method} {url}: bad redirect {loc:?}: {e}"))
                    })?;
                    if !matches!(next.scheme(), "http" | "https") {
                        return Err(Failure::fatal(anyhow!(
                            "{method} {url}: redirect to unsupported URL {next}"
                        )));
                    }
                    // 303 turns anything into GET; 301/302/307/308 keep GET/HEAD as is.
                    if status == StatusCode::SEE_OTHER && method != Method::HEAD {
                        method = Method::GET;
                    }
                    url = next;
                    continue;
                }
            }
            return Ok((resp, same));
        }
        Err(Failure::fatal(anyhow!(
            "{} {start}: more than {MAX_REDIRECTS} redirects",
            req.method
        )))
    }

    /// 2xx (and `req.pass`) are answers; 429/408/5xx are worth retrying; the rest is final.
    fn classify(&self, resp: Response, req: &Req) -> Result<Response, Failure> {
        let status = resp.status();
        if status.is_success() || req.pass.contains(&status) {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        let url = resp.url().clone();
        let detail = error_detail(resp);
        let e = anyhow!("{} {url}: HTTP {status}{detail}", req.method);
        match status.as_u16() {
            429 | 408 | 500 | 502 | 503 | 504 => Err(Failure::Retry(e, retry_after)),
            _ => Err(Failure::Fatal(e)),
        }
    }

    /// For messages: `registry/repository` as the user wrote it.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// Transport errors: certificate problems are final (retrying cannot fix them); the rest
/// (connect, timeout, reset) are retried.
fn transport_failure(method: &Method, url: &Url, e: &reqwest::Error) -> Failure {
    let msg = chain(e);
    let err = anyhow!("{method} {url}: {msg}");
    let lower = msg.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        return Failure::fatal(err.context(
            "TLS certificate not trusted (set ca_file, or insecure = true, in the [[registry]] entry)",
        ));
    }
    if e.is_builder() {
        return Failure::fatal(err);
    }
    Failure::retry(err)
}

/// `: CODE message` from a registry error body (`{"errors":[{"code","message"}]}`).
fn error_detail(resp: Response) -> String {
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<Err1>,
    }
    #[derive(serde::Deserialize)]
    struct Err1 {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(body) = read_capped(resp, MAX_ERROR_BODY) else {
        return String::new();
    };
    match serde_json::from_slice::<Errs>(&body) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .take(3)
                .map(|x| sanitize(&format!("{} {}", x.code, x.message)))
                .collect();
            format!(": {}", parts.join("; "))
        }
        _ => String::new(),
    }
}

/// Printable, bounded text from a hostile server.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_verify_env_takes_every_boolean_spelling() {
        let v = |s: &str| tls_verify_disabled(Some(std::ffi::OsStr::new(s)));
        assert!(!tls_verify_disabled(None).unwrap());
        for off in ["false", "0", "no", "NO", "False"] {
            assert!(v(off).unwrap(), "{off}");
        }
        for on in ["true", "1", "yes", "YES"] {
            assert!(!v(on).unwrap(), "{on}");
        }
        let e = v("nope").unwrap_err().to_string();
        assert!(e.contains("WARREN_TLS_VERIFY=nope"), "{e}");
    }

    #[test]
    fn policy() {
        assert_eq!(scheme_policy("ghcr.io", false, false), SchemePolicy::Https);
        assert_eq!(scheme_policy("ghcr.io", true, false), SchemePolicy::Http);
        assert_eq!(
            scheme_policy("ghcr.io", false, true),
            SchemePolicy::HttpsThenHttp
        );
        assert_eq!(
            scheme_policy("127.0.0.1", false, false),
            SchemePolicy::HttpsThenHttp
        );
        assert_eq!(
            scheme_policy("[::1]", false, false),
            SchemePolicy::HttpsThenHttp
        );
    }

    #[test]
    fn host_parts() {
        assert_eq!(host_part("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(host_part("[::1]:5000"), "[::1]");
        assert_eq!(host_part("[::1]"), "[::1]");
        assert_eq!(host_part("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn sanitize_strips_controls() {
        assert_eq!(sanitize("a\x1b[31mb\n"), "a[31mb");
        assert_eq!(sanitize(&"x".repeat(1000)).len(), 200);
    }
}
