//! A plain-HTTP proxy in front of the plain test registry that counts requests: how
//! many times a blob was fetched (store_concurrent, slurm_cluster).

use super::registry::PLAIN;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A plain-HTTP proxy in front of the test registry that records `METHOD PATH` of each
/// request (one request per connection: upstream is asked with HTTP/1.0, so the
/// response ends at EOF and the client reconnects).
pub struct CountingProxy {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CountingProxy {
    pub fn start() -> CountingProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sn, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        let sn = sn.clone();
                        std::thread::spawn(move || {
                            let _ = relay(c, &sn);
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        CountingProxy {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Requests whose `METHOD PATH` contains `s`.
    pub fn count(&self, s: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains(s))
            .count()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay(c: TcpStream, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    c.set_nonblocking(false)?;
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    seen.lock().unwrap().push(format!("{method} {path}"));
    let mut up = TcpStream::connect(PLAIN)?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {PLAIN}\r\n");
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let name = h
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if ["accept", "range", "authorization"].contains(&name.as_str()) {
            head.push_str(&h);
        }
    }
    head.push_str("\r\n");
    up.write_all(head.as_bytes())?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let mut c = c;
    c.write_all(&resp)
}
