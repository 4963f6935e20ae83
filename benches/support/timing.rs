//! One timed command for the benches: wall time from spawn to exit; a non-zero exit is
//! an error naming the command and what it printed on stderr.

use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// Run `c` (stdin closed, stderr captured) and time it; `argv` names it in errors.
pub fn timed(mut c: Command, argv: &[String]) -> Result<(f64, Output), String> {
    let t = Instant::now();
    let o = c
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !o.status.success() {
        return Err(format!(
            "{} failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok((ms, o))
}
