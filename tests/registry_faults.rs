//! The registry client against a fault-injecting proxy in front of the real plain
//! registry (127.0.0.1:5000): 500s, resets and truncation mid-body, wrong bytes, 429 with
//! Retry-After, servers that ignore Range, oversized bodies, odd media types, and blob
//! redirects to another host (which must never see the Authorization header).
//!
//! The proxy is plain std::net: one thread per connection, one request per connection
//! (`Connection: close`), upstream spoken as HTTP/1.0 so bodies are never chunked.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::registry::*;
use warren::platform::Platform;
use warren::source::Source;

#[derive(Clone, Debug)]
enum Fault {
    /// Answer this status with an empty JSON body.
    Status(u16),
    /// 429 with `Retry-After: N`.
    TooMany(u64),
    /// Half the body, then a TCP reset.
    Reset,
    /// Half the body (full Content-Length announced), then a clean close.
    Truncate,
    /// The full body with one byte flipped.
    WrongBytes,
    /// The body with extra bytes appended (Content-Length to match).
    ExtraBytes,
    /// Forward without the Range header (the upstream answers 200 with everything).
    IgnoreRange,
    /// Replace the Content-Type.
    ContentType(&'static str),
    /// 307 to the same path on the "other host" (127.0.0.2).
    RedirectOther,
    /// Drop the Docker-Content-Digest header.
    NoDigestHeader,
}

struct Rule {
    path_contains: String,
    fault: Fault,
    times: usize,
}

#[derive(Clone, Debug)]
struct Seen {
    other_host: bool,
    method: String,
    path: String,
    range: Option<String>,
    authorization: bool,
}

struct Shared {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    require_auth: Option<String>,
    other: SocketAddr,
    stop: AtomicBool,
}

struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Start the proxy on 127.0.0.1 and the "other host" on 127.0.0.2. With
    /// `require_auth`, the proxy demands that exact Authorization value (Basic challenge).
    fn start(require_auth: Option<String>) -> Proxy {
        let front = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let other = TcpListener::bind("127.0.0.2:0").expect("bind other host (127.0.0.2)");
        let shared = Arc::new(Shared {
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            require_auth,
            other: other.local_addr().unwrap(),
            stop: AtomicBool::new(false),
        });
        let addr = front.local_addr().unwrap();
        let threads = [(front, false), (other, true)]
            .into_iter()
            .map(|(l, is_other)| {
                let sh = shared.clone();
                std::thread::spawn(move || accept_loop(l, is_other, sh))
            })
            .collect();
        Proxy {
            addr,
            shared,
            threads,
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn add(&self, path_contains: &str, fault: Fault, times: usize) {
        self.shared.rules.lock().unwrap().push(Rule {
            path_contains: path_contains.to_string(),
            fault,
            times,
        });
    }

    fn seen(&self, path_contains: &str) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.contains(path_contains))
            .cloned()
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(l: TcpListener, other_host: bool, sh: Arc<Shared>) {
    l.set_nonblocking(true).unwrap();
    while !sh.stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((s, _)) => {
                let sh = sh.clone();
                std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = handle(s, other_host, &sh);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(s: &TcpStream) -> std::io::Result<Request> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(std::io::Error::other("bad request line"));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Request {
        method,
        path,
        headers,
    })
}

/// Ask the real registry (HTTP/1.0: no chunking, body until EOF).
fn upstream(req: &Request, forward_range: bool) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(PLAIN).expect("upstream registry");
    let mut head = format!("{} {} HTTP/1.0\r\nHost: {PLAIN}\r\n", req.method, req.path);
    for name in ["Accept", "Range"] {
        if name == "Range" && !forward_range {
            continue;
        }
        if let Some(v) = req.header(name) {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("upstream reply head");
    let text = String::from_utf8_lossy(&all[..split]).to_string();
    let body = all[split + 4..].to_vec();
    let mut lines = text.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("upstream status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| {
            ["content-type", "docker-content-digest", "content-range"]
                .contains(&k.to_ascii_lowercase().as_str())
        })
        .collect();
    (status, headers, body)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

fn write_head(
    s: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    len: usize,
) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str(&format!(
        "Content-Length: {len}\r\nConnection: close\r\n\r\n"
    ));
    s.write_all(h.as_bytes())
}

/// Close with RST instead of FIN (SO_LINGER 0).
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd owned by `s`, a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

fn handle(mut s: TcpStream, other_host: bool, sh: &Shared) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = match read_request(&s) {
        Ok(r) => r,
        Err(_) => {
            // e.g. a TLS ClientHello: not HTTP.
            write_head(&mut s, 400, &[], 0)?;
            return Ok(());
        }
    };
    let auth = req.header("Authorization").map(str::to_string);
    sh.seen.lock().unwrap().push(Seen {
        other_host,
        method: req.method.clone(),
        path: req.path.clone(),
        range: req.header("Range").map(str::to_string),
        authorization: auth.is_some(),
    });
    let head_only = req.method == "HEAD";
    if !other_host {
        if let Some(want) = &sh.require_auth {
            if auth.as_deref() != Some(want.as_str()) {
                let h = [(
                    "WWW-Authenticate".to_string(),
                    "Basic realm=\"fault-proxy\"".to_string(),
                )];
                return write_head(&mut s, 401, &h, 0);
            }
        }
    }
    let fault = if other_host {
        None
    } else {
        let mut rules = sh.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.times > 0 && req.path.contains(&r.path_contains))
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            })
    };
    match &fault {
        Some(Fault::Status(code)) => {
            let body = b"{}";
            let h = [("Content-Type".to_string(), "application/json".to_string())];
            write_head(&mut s, *code, &h, body.len())?;
            return s.write_all(body);
        }
        Some(Fault::TooMany(secs)) => {
            let h = [("Retry-After".to_string(), secs.to_string())];
            return write_head(&mut s, 429, &h, 0);
        }
        Some(Fault::RedirectOther) => {
            let h = [(
                "Location".to_string(),
                format!("http://{}{}", sh.other, req.path),
            )];
            return write_head(&mut s, 307, &h, 0);
        }
        _ => {}
    }
    let forward_range = !matches!(fault, Some(Fault::IgnoreRange));
    let (status, mut headers, mut body) = upstream(&req, forward_range);
    let ok = (200..300).contains(&status);
    match fault {
        Some(Fault::Reset) | Some(Fault::Truncate) if ok && !head_only => {
            write_head(&mut s, status, &headers, body.len())?;
            s.write_all(&body[..body.len() / 2])?;
            s.flush()?;
            if matches!(fault, Some(Fault::Reset)) {
                reset(s);
            } else {
                s.shutdown(Shutdown::Both)?;
            }
            return Ok(());
        }
        Some(Fault::WrongBytes) if ok && !body.is_empty() => {
            let mid = body.len() / 2;
            body[mid] ^= 0xff;
        }
        Some(Fault::ExtraBytes) if ok => body.extend_from_slice(b"surplus"),
        Some(Fault::NoDigestHeader) => {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("docker-content-digest"));
        }
        Some(Fault::ContentType(ct)) => {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
            headers.push(("Content-Type".to_string(), ct.to_string()));
        }
        _ => {}
    }
    write_head(&mut s, status, &headers, body.len())?;
    if !head_only {
        s.write_all(&body)?;
    }
    Ok(())
}

// ---- the tests ----

/// test/busybox through proxy `p`, with `retries` attempts per request.
fn open(p: &Proxy, retries: u32, auth: Vec<std::path::PathBuf>) -> Box<dyn Source> {
    let cfg = format!(
        "[pull]\nretries = {retries}\ntimeout_secs = 10\n[[registry]]\nhost = \"{}\"\nhttp = true\n",
        p.host()
    );
    support::registry::open(&cfg, &format!("{}/test/busybox:latest", p.host()), auth)
}

/// A proxy, a source through it, and the busybox layer fetched cleanly once.
struct Fetch {
    proxy: Proxy,
    src: Box<dyn Source>,
    _dir: tempfile::TempDir,
    layer: oci_spec::image::Descriptor,
    /// The layer's correct bytes.
    good: Vec<u8>,
    /// The layer's digest, which names its requests.
    hex: String,
    /// Where the tests fetch it to.
    dest: std::path::PathBuf,
}

impl Fetch {
    fn new(retries: u32) -> Fetch {
        let proxy = Proxy::start(None);
        let src = open(&proxy, retries, vec![]);
        let dir = tempfile::tempdir().unwrap();
        let (layer, good) = layer(&*src, dir.path());
        let hex = layer.digest().to_string();
        let dest = dir.path().join("blob");
        Fetch {
            proxy,
            src,
            _dir: dir,
            layer,
            good,
            hex,
            dest,
        }
    }

    /// Fetch the layer to `dest` (after the faults added since `new`).
    fn fetch(&self) -> anyhow::Result<()> {
        self.src.fetch_blob(&self.layer, &self.dest, &|_| {})
    }
}

/// The busybox layer's descriptor and its correct bytes (fetched through a clean proxy).
fn layer(src: &dyn Source, dir: &Path) -> (oci_spec::image::Descriptor, Vec<u8>) {
    let img = src.resolve(&Platform::host()).expect("resolve via proxy");
    let l = img
        .manifest
        .layers()
        .iter()
        .max_by_key(|l| l.size())
        .unwrap()
        .clone();
    let p = dir.join("reference");
    src.fetch_blob(&l, &p, &|_| {}).expect("clean fetch");
    (l.clone(), std::fs::read(p).unwrap())
}

#[test]
fn blob_survives_500_reset_truncation_and_429() {
    need!(need_registry(&[PLAIN]));
    let f = Fetch::new(6);
    f.proxy.add(&f.hex, Fault::Status(500), 1);
    f.proxy.add(&f.hex, Fault::Reset, 1);
    f.proxy.add(&f.hex, Fault::Truncate, 1);
    f.proxy.add(&f.hex, Fault::TooMany(1), 1);
    let t = Instant::now();
    f.fetch().expect("retries succeed");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(std::fs::read(&f.dest).unwrap(), f.good);
    let seen = f.proxy.seen(&f.hex);
    // clean fetch + 500 + reset + truncated + 429 + final
    assert_eq!(seen.len(), 6, "{seen:#?}");
    assert!(
        seen.iter().skip(3).any(|s| s.range.is_some()),
        "a broken transfer is resumed with Range: {seen:#?}"
    );
}

#[test]
fn manifest_retries_then_succeeds_and_gives_up_when_told() {
    need!(need_registry(&[PLAIN]));
    let p = Proxy::start(None);
    p.add("/manifests/", Fault::Status(503), 2);
    let src = open(&p, 4, vec![]);
    src.resolve(&Platform::host()).expect("third attempt works");

    p.add("/manifests/", Fault::Status(500), 100);
    let e = open(&p, 3, vec![]).current_digest().unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("gave up after 3 attempts") && msg.contains("500"),
        "{msg}"
    );
}

#[test]
fn wrong_bytes_are_reported_and_discarded() {
    need!(need_registry(&[PLAIN]));
    let f = Fetch::new(5);
    f.proxy.add(&f.hex, Fault::WrongBytes, 1);
    let e = f.fetch().unwrap_err();
    let msg = format!("{e:#}");
    eprintln!("error as reported: {msg}");
    assert!(
        msg.contains(&format!("expected {}, got sha256:", f.hex)) && msg.contains("discarded"),
        "{msg}"
    );
    assert_eq!(
        std::fs::metadata(&f.dest).unwrap().len(),
        0,
        "the bad bytes are not left in the temp file"
    );
    assert_eq!(f.proxy.seen(&f.hex).len(), 2, "wrong bytes are not retried");
}

#[test]
fn wrong_bytes_after_resume_restart_cleanly() {
    need!(need_registry(&[PLAIN]));
    let f = Fetch::new(5);
    f.proxy.add(&f.hex, Fault::Truncate, 1);
    f.proxy.add(&f.hex, Fault::WrongBytes, 1);
    f.fetch().expect("restart from zero");
    assert_eq!(std::fs::read(&f.dest).unwrap(), f.good);
    let seen = f.proxy.seen(&f.hex);
    assert_eq!(seen.len(), 4, "{seen:#?}");
    assert!(
        seen[2].range.is_some() && seen[3].range.is_none(),
        "{seen:#?}"
    );
}

#[test]
fn server_ignoring_range_restarts_the_download() {
    need!(need_registry(&[PLAIN]));
    let f = Fetch::new(5);
    f.proxy.add(&f.hex, Fault::Truncate, 1);
    f.proxy.add(&f.hex, Fault::IgnoreRange, 1);
    f.fetch().unwrap();
    assert_eq!(std::fs::read(&f.dest).unwrap(), f.good);
    let seen = f.proxy.seen(&f.hex);
    assert_eq!(
        seen.len(),
        3,
        "the full 200 reply is used, no extra request: {seen:#?}"
    );
    assert!(seen[2].range.is_some(), "{seen:#?}");
}

#[test]
fn oversized_blob_is_refused() {
    need!(need_registry(&[PLAIN]));
    let f = Fetch::new(5);
    f.proxy.add(f.hex.as_str(), Fault::ExtraBytes, 1);
    let e = f.fetch().unwrap_err();
    assert!(format!("{e:#}").contains("refusing the blob"), "{e:#}");
    assert_eq!(std::fs::metadata(&f.dest).unwrap().len(), 0);
}

#[test]
fn bad_manifests_are_refused() {
    need!(need_registry(&[PLAIN]));
    let p = Proxy::start(None);
    p.add(
        "/manifests/",
        Fault::ContentType("application/vnd.docker.distribution.manifest.v1+prettyjws"),
        1,
    );
    let e = open(&p, 3, vec![]).resolve(&Platform::host()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("unsupported manifest media type") && msg.contains("schema 1"),
        "{msg}"
    );
    p.add("/manifests/", Fault::WrongBytes, 1);
    let e = open(&p, 3, vec![]).resolve(&Platform::host()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("wrong content: Docker-Content-Digest says"),
        "{msg}"
    );
}

#[test]
fn redirect_to_other_host_gets_no_credentials() {
    need!(need_registry(&[PLAIN]));
    let user = ("proxyuser", "proxypass");
    let p = Proxy::start(Some(format!("Basic {}", basic_auth(user.0, user.1))));
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path(), &[(&p.host(), user.0, user.1)]);
    p.add("/blobs/", Fault::RedirectOther, 1000);
    let src = open(&p, 3, vec![auth]);
    // resolve fetches the config blob, layer() a layer: both via the redirect.
    let (l, _) = layer(&*src, dir.path());
    let dest = dir.path().join("blob");
    src.fetch_blob(&l, &dest, &|_| {}).unwrap();
    assert_eq!(file_digest(&dest).0.to_string(), l.digest().to_string());
    let seen = p.seen("/blobs/");
    let front: Vec<_> = seen.iter().filter(|s| !s.other_host).collect();
    let other: Vec<_> = seen.iter().filter(|s| s.other_host).collect();
    assert!(
        !other.is_empty(),
        "blobs came from the other host: {seen:#?}"
    );
    assert!(
        front.iter().any(|s| s.authorization),
        "the registry itself got credentials: {seen:#?}"
    );
    assert!(
        other.iter().all(|s| !s.authorization),
        "credentials leaked to the redirect target: {seen:#?}"
    );
    assert!(other.iter().all(|s| s.method == "GET"));
}

#[test]
fn missing_digest_header_falls_back_to_get_and_hash() {
    need!(need_registry(&[PLAIN]));
    let p = Proxy::start(None);
    let want = open(&p, 3, vec![]).current_digest().unwrap();
    p.add("/manifests/", Fault::NoDigestHeader, 2);
    let src = open(&p, 3, vec![]);
    assert_eq!(src.current_digest().unwrap(), want);
    let seen = p.seen("/manifests/");
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["HEAD", "HEAD", "GET"], "{seen:#?}");
}
