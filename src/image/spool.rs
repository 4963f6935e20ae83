//! Spool files: the decompressed bytes of a layer's regular files, kept until the
//! squashfs is written. Each spool is created and unlinked at once, so nothing is left
//! behind whatever happens to the process.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// An append-only, anonymous file.
pub struct Spool {
    file: BufWriter<File>,
    len: u64,
    dir: PathBuf,
}

/// Context of a failed spool write: the directory it was in (a full `$TMPDIR` is told
/// apart from a full store by it).
#[derive(Debug, thiserror::Error)]
#[error("write a spool file in {}", .0.display())]
pub struct SpoolWrite(pub PathBuf);

impl Spool {
    /// A new spool in `dir` (a local temp directory, ideally: it carries the image's
    /// unpacked size for a moment).
    pub fn create(dir: &Path) -> Result<Spool> {
        let file = tempfile::tempfile_in(dir)
            .with_context(|| format!("create a spool file in {}", dir.display()))?;
        Ok(Spool {
            file: BufWriter::with_capacity(1 << 20, file),
            len: 0,
            dir: dir.to_path_buf(),
        })
    }

    /// Append everything `r` yields; returns (offset, length).
    pub fn append(&mut self, r: &mut dyn Read) -> io::Result<(u64, u64)> {
        let off = self.len;
        let n = io::copy(r, &mut self.file)?;
        self.len += n;
        Ok((off, n))
    }

    /// The directory the spool is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Finish writing; the result reads at offsets.
    pub fn finish(self) -> Result<SpoolReader> {
        let dir = self.dir;
        let file = self
            .file
            .into_inner()
            .map_err(|e| anyhow::Error::new(e.into_error()).context(SpoolWrite(dir)))?;
        Ok(SpoolReader { file })
    }
}

/// A finished spool.
pub struct SpoolReader {
    file: File,
}

impl SpoolReader {
    /// Bytes in the spool.
    pub fn len(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    /// True when the spool holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copy `len` bytes at `offset` to `w`.
    pub fn copy_to(&self, offset: u64, len: u64, w: &mut dyn Write) -> io::Result<()> {
        let mut buf = vec![0u8; (len as usize).min(1 << 20)];
        let mut done = 0u64;
        while done < len {
            let want = ((len - done) as usize).min(buf.len());
            let n = self.file.read_at(&mut buf[..want], offset + done)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "spool file shorter than recorded",
                ));
            }
            w.write_all(&buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}
