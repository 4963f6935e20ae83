//! Write a flattened [`Tree`] as one squashfs file.
//!
//! Back end: `tar2sqfs` (squashfs-tools-ng), fed one flattened tar stream on a pipe.
//! It takes owners, modes, mtimes, xattrs and hard links from the tar metadata, so the
//! image keeps its own owners without root, a user namespace or files on disk, and it
//! compresses blocks on all cores. Chosen by measurement over mksquashfs 4.5.1 (which
//! needs an extracted tree and cannot set xattrs from a pseudo file): see
//! docs/performance.md, "squash back end".

use super::flatten::{InodeKind, Tree};
use super::spool::SpoolReader;
use super::tarwrite::{write_data_padding, write_end, write_header, TarHeader, TarType};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// Compression settings (`pull.compression`, `pull.compression_level`).
#[derive(Debug, Clone)]
pub struct SquashOptions {
    pub compression: String,
    /// 0 = the compressor's default.
    pub level: u32,
    /// Compressor threads.
    pub jobs: usize,
    /// The tar2sqfs program.
    pub program: String,
}

impl SquashOptions {
    /// Compression from `[pull]`, one compressor thread per core.
    pub fn from_config(p: &crate::config::PullConfig) -> SquashOptions {
        SquashOptions {
            compression: p.compression.clone(),
            level: p.compression_level,
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            program: "tar2sqfs".into(),
        }
    }

    fn args(&self) -> Result<Vec<String>> {
        let comp = self.compression.clone();
        if !crate::config::COMPRESSORS.contains(&comp.as_str()) {
            bail!(
                "pull.compression {comp:?} is not one of {}",
                crate::config::COMPRESSORS.join(", ")
            );
        }
        let mut a = vec![
            "--quiet".into(),
            "--no-skip".into(),
            "--force".into(),
            "--compressor".into(),
            comp.clone(),
            "--num-jobs".into(),
            self.jobs.max(1).to_string(),
            "--defaults".into(),
            "uid=0,gid=0,mode=0755,mtime=0".into(),
        ];
        if self.level > 0 && matches!(comp.as_str(), "zstd" | "gzip" | "xz") {
            a.push("--comp-extra".into());
            a.push(format!("level={}", self.level));
        }
        Ok(a)
    }
}

/// Squash `tree` (file bytes in `spools`) into `out` (overwritten).
pub fn squash(tree: &Tree, spools: &[SpoolReader], out: &Path, opts: &SquashOptions) -> Result<()> {
    let mut cmd = Command::new(&opts.program);
    cmd.args(opts.args()?)
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    die_with_this_thread(&mut cmd);
    // This thread spawns, feeds and waits for the child, so it outlives it: the parent
    // death signal (tied to the forking thread, not the process) fires only when the
    // process dies, e.g. by `kill -9`, and then nothing is left squashing.
    let mut child = cmd
        .spawn()
        .with_context(|| format!("run {} (install squashfs-tools-ng)", opts.program))?;
    let prog = &opts.program;
    let stdin = child
        .stdin
        .take()
        .with_context(|| format!("{prog} stdin"))?;
    let mut stderr = child
        .stderr
        .take()
        .with_context(|| format!("{prog} stderr"))?;
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let wrote = write_tar(tree, spools, stdin);
    let status = child.wait().with_context(|| format!("wait for {prog}"))?;
    let msg = errs.join().unwrap_or_default();
    let msg = msg.trim().lines().last().unwrap_or("").to_string();
    if !status.success() {
        bail!("{prog} failed ({status}): {msg}");
    }
    wrote.with_context(|| format!("stream the image to {prog}"))?;
    Ok(())
}

/// Make the child get SIGKILL when the thread that forks it exits (the whole process
/// dying included), so a killed pull leaves no squasher behind.
fn die_with_this_thread(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec; it only makes the
    // async-signal-safe prctl and getppid system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The parent died before the prctl took effect: nobody would signal us.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// The flattened image as one tar stream: root first as `./`, parents before children,
/// each inode's bytes once (later paths of the same inode are hard links).
pub fn write_tar(tree: &Tree, spools: &[SpoolReader], w: impl Write) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, w);
    let mut first_path: HashMap<usize, &[u8]> = HashMap::new();
    for (path, ino, inode) in tree.iter() {
        let name: &[u8] = if path.is_empty() { b"./" } else { path };
        let m = &inode.meta;
        let mut h = TarHeader {
            path: name,
            typ: TarType::Dir,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime,
            size: 0,
            link: b"",
            xattrs: &m.xattrs,
        };
        if inode.kind != InodeKind::Dir {
            if let Some(first) = first_path.get(&ino) {
                h.typ = TarType::Hardlink;
                h.link = first;
                h.xattrs = &[];
                write_header(&mut w, &h)?;
                continue;
            }
            first_path.insert(ino, path);
        }
        match &inode.kind {
            InodeKind::Dir => write_header(&mut w, &h)?,
            InodeKind::Symlink(t) => {
                h.typ = TarType::Symlink;
                h.link = t;
                write_header(&mut w, &h)?;
            }
            InodeKind::Fifo => {
                h.typ = TarType::Fifo;
                write_header(&mut w, &h)?;
            }
            InodeKind::File(d) => {
                h.typ = TarType::File;
                h.size = d.len;
                write_header(&mut w, &h)?;
                let sp = spools
                    .get(d.spool as usize)
                    .context("internal: spool index out of range")?;
                sp.copy_to(d.offset, d.len, &mut w)
                    .context("copy file contents from the spool")?;
                write_data_padding(&mut w, d.len)?;
            }
        }
    }
    write_end(&mut w)?;
    w.flush()?;
    Ok(())
}
