//! Blob downloads: streamed through SHA-256 into the caller's temp file, size and digest
//! verified before returning, resumed with `Range` after a broken transfer.
//!
//! The temp file is never left looking valid: after wrong bytes it is truncated to zero;
//! after a broken transfer it holds a prefix of the right length at most, which the next
//! attempt (or the next pull) hashes and continues with `Range: bytes=N-`.

use super::client::{Client, Req};
use super::retry::Failure;
use crate::digest::{Digest, HashingWriter};
use anyhow::anyhow;
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::{Method, StatusCode};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Read buffer: big enough that a fast loopback transfer is a few syscalls per MiB.
const CHUNK: usize = 256 << 10;

/// What to do with the bytes already in the temp file.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// Download from the beginning (file emptied first if it had bytes).
    Fresh {
        /// The file had bytes that are not a usable prefix.
        truncate: bool,
    },
    /// Continue from this offset with a Range request.
    Resume(u64),
    /// The file already has `size` bytes: verify them, no request needed.
    Verify,
}

/// Decide from the file's current length and the blob size (pure).
pub fn plan(have: u64, size: u64) -> Start {
    match have {
        0 => Start::Fresh { truncate: false },
        n if n == size => Start::Verify,
        n if n > size => Start::Fresh { truncate: true },
        n => Start::Resume(n),
    }
}

/// Check a 206 reply's `Content-Range: bytes START-END/TOTAL` against what we asked.
pub fn content_range_ok(v: &str, start: u64, size: u64) -> bool {
    let Some(r) = v.trim().strip_prefix("bytes ") else {
        return false;
    };
    let Some((range, total)) = r.split_once('/') else {
        return false;
    };
    let Some((a, b)) = range.split_once('-') else {
        return false;
    };
    let (Ok(a), Ok(b)) = (a.trim().parse::<u64>(), b.trim().parse::<u64>()) else {
        return false;
    };
    let total_ok = total.trim() == "*" || total.trim().parse::<u64>() == Ok(size);
    a == start && b.checked_add(1) == Some(size) && total_ok
}

fn io_fatal(what: &str, dest: &Path, e: std::io::Error) -> Failure {
    // The io::Error stays in the chain: the store tells a full disk by its errno.
    Failure::fatal(anyhow::Error::new(e).context(format!("{what} {}", dest.display())))
}

/// Empty the file so nothing half-right survives.
fn discard(f: &File, dest: &Path) -> Result<(), Failure> {
    f.set_len(0).map_err(|e| io_fatal("truncate", dest, e))
}

/// One attempt at downloading blob `digest` of `size` bytes into `dest`.
/// `restarted` is set once a resumed download proved wrong, so the next attempt starts
/// from zero and a second mismatch is final.
pub fn attempt(
    client: &Client,
    digest: &Digest,
    size: u64,
    dest: &Path,
    progress: &dyn Fn(u64),
    restarted: &mut bool,
) -> Result<(), Failure> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dest)
        .map_err(|e| io_fatal("open", dest, e))?;
    let have = f.metadata().map_err(|e| io_fatal("stat", dest, e))?.len();
    let start = plan(have, size);
    let (offset, prefix) = match start {
        Start::Resume(n) => (n, n),
        Start::Verify => (0, size),
        Start::Fresh { truncate } => {
            if truncate {
                discard(&f, dest)?;
            }
            (0, 0)
        }
    };
    // Hash what is already there (a whole blob to verify, or a prefix to continue); the
    // file position ends up after it, where the body continues.
    let mut fh = &f;
    fh.seek(SeekFrom::Start(0))
        .map_err(|e| io_fatal("seek", dest, e))?;
    let mut w =
        HashingWriter::with_prefix(&f, (&f).take(prefix)).map_err(|e| io_fatal("read", dest, e))?;
    if start == Start::Verify {
        let (_, got, _) = w.finish();
        if got == *digest {
            progress(size);
            return Ok(());
        }
        // A full-length file with the wrong content: start over.
        discard(&f, dest)?;
        fh.seek(SeekFrom::Start(0))
            .map_err(|e| io_fatal("seek", dest, e))?;
        w = HashingWriter::new(&f);
    }
    let resumed = offset > 0;

    let mut headers = vec![];
    if resumed {
        let v = HeaderValue::from_str(&format!("bytes={offset}-"))
            .map_err(|e| Failure::fatal(anyhow!("range header: {e}")))?;
        headers.push((RANGE, v));
    }
    let path = format!("/v2/{}/blobs/{digest}", client.repository());
    let mut resp = client.send(&Req {
        method: Method::GET,
        path,
        headers,
        pass: &[StatusCode::RANGE_NOT_SATISFIABLE],
    })?;
    let status = resp.status();
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        discard(&f, dest)?;
        return Err(Failure::Retry(
            anyhow!("server refused to resume at byte {offset}; starting over"),
            Some(std::time::Duration::ZERO),
        ));
    }
    let expect_len = if status == StatusCode::PARTIAL_CONTENT {
        let cr = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !resumed || !content_range_ok(cr, offset, size) {
            discard(&f, dest)?;
            return Err(Failure::retry(anyhow!(
                "server sent range {cr:?} for a request from byte {offset} of {size}; starting over"
            )));
        }
        size - offset
    } else {
        if resumed {
            // The server ignored Range and sends the whole blob: start over.
            discard(&f, dest)?;
            fh.seek(SeekFrom::Start(0))
                .map_err(|e| io_fatal("seek", dest, e))?;
            w = HashingWriter::new(&f);
        }
        size
    };
    let base = if status == StatusCode::PARTIAL_CONTENT {
        offset
    } else {
        0
    };
    if let Some(len) = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len != expect_len {
            discard(&f, dest)?;
            return Err(Failure::fatal(anyhow!(
                "registry sends {len} bytes where the descriptor says {expect_len}: refusing the blob"
            )));
        }
    }

    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Keep the prefix: the next attempt resumes after it.
                let _ = w.flush();
                return Err(Failure::retry(anyhow!(
                    "connection broken after {} of {size} bytes: {e}",
                    w.written()
                )));
            }
        };
        if w.written() + n as u64 > size {
            discard(&f, dest)?;
            return Err(Failure::fatal(anyhow!(
                "registry sent more than the descriptor's {size} bytes: refusing the blob"
            )));
        }
        w.write_all(&buf[..n])
            .map_err(|e| io_fatal("write", dest, e))?;
        progress(w.written());
    }
    let got_len = w.written();
    if got_len < size {
        return Err(Failure::retry(anyhow!(
            "transfer ended after {got_len} of {size} bytes (from byte {base})"
        )));
    }
    let (_, got, _) = w.finish();
    if got != *digest {
        discard(&f, dest)?;
        if resumed && !*restarted {
            // The kept prefix may have been the bad part: one clean try from zero.
            *restarted = true;
            return Err(Failure::Retry(
                anyhow!("wrong content after resuming (got {got}); starting over"),
                Some(std::time::Duration::ZERO),
            ));
        }
        return Err(Failure::fatal(anyhow!(
            "wrong content: expected {digest}, got {got} ({size} bytes); the download was discarded"
        )));
    }
    Ok(())
}

/// Fetch a small blob (an image config) into memory, verified.
pub fn fetch_small(
    client: &Client,
    digest: &Digest,
    size: u64,
    cap: u64,
) -> anyhow::Result<Vec<u8>> {
    if size > cap {
        anyhow::bail!("blob {digest}: {size} bytes is more than the {cap} allowed for it");
    }
    client.with_retries(&format!("blob {digest} from {}", client.describe()), |_| {
        let resp = client.send(&Req {
            method: Method::GET,
            path: format!("/v2/{}/blobs/{digest}", client.repository()),
            headers: vec![],
            pass: &[],
        })?;
        let body = super::read_capped(resp, size).map_err(Failure::retry)?;
        if (body.len() as u64) < size {
            return Err(Failure::retry(anyhow!(
                "transfer ended after {} of {size} bytes",
                body.len()
            )));
        }
        let got = Digest::of(&body);
        if got != *digest {
            return Err(Failure::fatal(anyhow!(
                "wrong content: expected {digest}, got {got}"
            )));
        }
        Ok(body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_plan() {
        assert_eq!(plan(0, 10), Start::Fresh { truncate: false });
        assert_eq!(plan(4, 10), Start::Resume(4));
        assert_eq!(plan(10, 10), Start::Verify);
        assert_eq!(plan(11, 10), Start::Fresh { truncate: true });
        assert_eq!(plan(0, 0), Start::Fresh { truncate: false });
    }

    #[test]
    fn content_range() {
        assert!(content_range_ok("bytes 4-9/10", 4, 10));
        assert!(content_range_ok("bytes 4-9/*", 4, 10));
        assert!(!content_range_ok("bytes 0-9/10", 4, 10));
        assert!(!content_range_ok("bytes 4-8/10", 4, 10));
        assert!(!content_range_ok("bytes 4-9/11", 4, 10));
        assert!(!content_range_ok("4-9/10", 4, 10));
        assert!(!content_range_ok("bytes x-9/10", 4, 10));
        assert!(!content_range_ok("", 4, 10));
        assert!(!content_range_ok("bytes 4-18446744073709551615/10", 4, 10));
    }
}
