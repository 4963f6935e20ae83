//! `open_source` finds credentials through the environment (REGISTRY_AUTH_FILE, then
//! DOCKER_CONFIG's config.json). One test in its own binary: it changes the process
//! environment, which must not race other tests.

mod support;

use support::registry::*;
use warren::platform::Platform;
use warren::reference::ImageRef;
use warren::registry::open_source;

#[test]
fn credentials_from_registry_auth_file_and_docker_config() {
    need!(need_registry(&[BASIC, TOKEN, TOKEN_SERVER]));
    let home = tempfile::tempdir().unwrap();
    let podman = tempfile::tempdir().unwrap();
    let docker = tempfile::tempdir().unwrap();
    // podman's file knows the TLS registry; docker's knows the token registry.
    let podman_file = auth_file(podman.path(), &[(BASIC, BASIC_USER.0, BASIC_USER.1)]);
    auth_file(docker.path(), &[(TOKEN, TOKEN_USER.0, TOKEN_USER.1)]);
    std::fs::rename(
        docker.path().join("auth.json"),
        docker.path().join("config.json"),
    )
    .unwrap();
    // Process-global: this binary has only this test, so nothing reads it concurrently.
    std::env::set_var("HOME", home.path());
    std::env::remove_var("XDG_CONFIG_HOME");
    std::env::set_var("REGISTRY_AUTH_FILE", &podman_file);
    std::env::set_var("DOCKER_CONFIG", docker.path());

    let cfg = config(&basic_tls_config());
    let src = open_source(
        &cfg,
        &ImageRef::parse("127.0.0.1:5001/test/busybox:latest").unwrap(),
    )
    .unwrap();
    src.resolve(&Platform::host())
        .expect("basic auth with REGISTRY_AUTH_FILE");

    let src = open_source(
        &cfg,
        &ImageRef::parse("127.0.0.1:5002/private/busybox:latest").unwrap(),
    )
    .unwrap();
    src.resolve(&Platform::host())
        .expect("bearer with credentials from $DOCKER_CONFIG/config.json");

    // WARREN_TLS_VERIFY=false: the TLS registry without its CA, like --tls-verify=false.
    let no_ca = config("");
    let r = ImageRef::parse("127.0.0.1:5001/test/busybox:latest").unwrap();
    let e = open_source(&no_ca, &r)
        .unwrap()
        .resolve(&Platform::host())
        .unwrap_err();
    assert!(format!("{e:#}").contains("certificate"), "{e:#}");
    std::env::set_var("WARREN_TLS_VERIFY", "false");
    open_source(&no_ca, &r)
        .unwrap()
        .resolve(&Platform::host())
        .expect("WARREN_TLS_VERIFY=false skips verification");
    std::env::remove_var("WARREN_TLS_VERIFY");
}
