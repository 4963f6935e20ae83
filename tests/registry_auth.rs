//! Authentication and TLS against real registries (scripts/registry.sh start):
//! 127.0.0.1:5001 (HTTPS with the test CA, basic auth) and 127.0.0.1:5002 (bearer tokens
//! from the test token server on :5003).

mod support;

use support::registry::*;
use warren::platform::Platform;
use warren::source::Source;

/// Resolve and fetch the first layer: the whole read path works.
fn pull_ok(src: &dyn Source) {
    let img = src.resolve(&Platform::host()).expect("resolve");
    let dir = tempfile::tempdir().unwrap();
    let l = &img.manifest.layers()[0];
    let dest = dir.path().join("l");
    src.fetch_blob(l, &dest, &|_| {}).expect("fetch blob");
    assert_eq!(file_digest(&dest).0.to_string(), l.digest().to_string());
    assert_eq!(src.current_digest().unwrap(), img.top_digest);
}

fn err(src: &dyn Source) -> String {
    let e = format!("{:#}", src.resolve(&Platform::host()).unwrap_err());
    eprintln!("error as reported: {e}");
    e
}

#[test]
fn tls_basic_with_ca_file_and_auth_json() {
    need!(need_registry(&[BASIC]));
    let d = tempfile::tempdir().unwrap();
    let auth = auth_file(d.path(), &[(BASIC, BASIC_USER.0, BASIC_USER.1)]);
    pull_ok(&*open(
        &basic_tls_config(),
        "127.0.0.1:5001/test/busybox:latest",
        vec![auth.clone()],
    ));
    // enroot's USER@ picks the entry for that user.
    pull_ok(&*open(
        &basic_tls_config(),
        "warren@127.0.0.1:5001#test/busybox:latest",
        vec![auth.clone()],
    ));
    let e = err(&*open(
        &basic_tls_config(),
        "bob@127.0.0.1:5001#test/busybox:latest",
        vec![auth],
    ));
    assert!(e.contains("no credentials for user \"bob\""), "{e}");
}

#[test]
fn tls_insecure_skips_verification() {
    need!(need_registry(&[BASIC]));
    let d = tempfile::tempdir().unwrap();
    let auth = auth_file(d.path(), &[(BASIC, BASIC_USER.0, BASIC_USER.1)]);
    pull_ok(&*open(
        &format!("[[registry]]\nhost = \"{BASIC}\"\ninsecure = true\n"),
        "127.0.0.1:5001/test/busybox:latest",
        vec![auth],
    ));
}

#[test]
fn tls_untrusted_certificate_is_a_clear_error() {
    need!(need_registry(&[BASIC]));
    let d = tempfile::tempdir().unwrap();
    let auth = auth_file(d.path(), &[(BASIC, BASIC_USER.0, BASIC_USER.1)]);
    let e = err(&*open("", "127.0.0.1:5001/test/busybox:latest", vec![auth]));
    assert!(
        e.contains("certificate") && e.contains("ca_file"),
        "should say the certificate is not trusted and how to fix it: {e}"
    );
}

#[test]
fn basic_wrong_password_and_no_credentials() {
    need!(need_registry(&[BASIC]));
    let d = tempfile::tempdir().unwrap();
    let auth = auth_file(d.path(), &[(BASIC, BASIC_USER.0, "not-the-password")]);
    let e = err(&*open(
        &basic_tls_config(),
        "127.0.0.1:5001/test/busybox:latest",
        vec![auth],
    ));
    assert!(
        e.contains("rejected the credentials of user \"warren\"") && e.contains("auth.json"),
        "{e}"
    );
    let e = err(&*open(
        &basic_tls_config(),
        "127.0.0.1:5001/test/busybox:latest",
        vec![d.path().join("missing.json")],
    ));
    assert!(
        e.contains("requires a login") && e.contains("missing.json"),
        "{e}"
    );
}

#[test]
fn bearer_anonymous_pull() {
    need!(need_registry(&[TOKEN, TOKEN_SERVER]));
    pull_ok(&*open("", "127.0.0.1:5002/test/busybox:latest", vec![]));
}

#[test]
fn bearer_private_needs_credentials() {
    need!(need_registry(&[TOKEN, TOKEN_SERVER]));
    let e = err(&*open("", "127.0.0.1:5002/private/busybox:latest", vec![]));
    assert!(e.contains("denied to anonymous users"), "{e}");

    let d = tempfile::tempdir().unwrap();
    let auth = auth_file(d.path(), &[(TOKEN, TOKEN_USER.0, TOKEN_USER.1)]);
    pull_ok(&*open(
        "",
        "127.0.0.1:5002/private/busybox:latest",
        vec![auth],
    ));

    let bad = tempfile::tempdir().unwrap();
    let auth = auth_file(bad.path(), &[(TOKEN, TOKEN_USER.0, "wrong")]);
    let e = err(&*open(
        "",
        "127.0.0.1:5002/private/busybox:latest",
        vec![auth],
    ));
    assert!(
        e.contains("token server") && e.contains("rejected the credentials of user \"tokenuser\""),
        "{e}"
    );
}

#[test]
fn bearer_token_is_cached_per_scope() {
    need!(need_registry(&[TOKEN, TOKEN_SERVER]));
    let log = state_dir().join("registry/token-requests.log");
    let count = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("test%2Fbusybox") && l.ends_with("auth=yes"))
            .count()
    };
    let d = tempfile::tempdir().unwrap();
    // A user of its own so no other test in this process shares the cache entry.
    let auth = auth_file(d.path(), &[(TOKEN, TOKEN_USER.0, TOKEN_USER.1)]);
    let src = open("", "127.0.0.1:5002/test/busybox:latest", vec![auth.clone()]);
    let before = count();
    pull_ok(&*src);
    let after_first = count();
    assert!(after_first > before, "a token was requested");
    // A second source in the same process reuses the cached token.
    pull_ok(&*open("", "127.0.0.1:5002/test/busybox:latest", vec![auth]));
    assert_eq!(count(), after_first, "no new token request");
}
