//! The container's environment: image env, then the host variables allowed by
//! `run.env_allowlist`, then `--env-file`, then `-e`; later entries win. Pure, except
//! [`read_env_file`].
//!
//! Names from the image, `--env-file` and `-e` are checked: empty names and names with
//! `=`, NUL, whitespace or control characters are refused (podman accepts nearly any
//! name; these are the ones no shell or program can use and that hide mistakes such as
//! `-e 'A B=1'`). Values may hold anything but NUL, which `execve` cannot carry.

use std::io::Read;
use std::path::Path;

/// `--env-file` bounds: a file larger than this (or `/dev/zero`) is refused, not read
/// into memory.
pub const MAX_ENV_FILE_BYTES: u64 = 1 << 20;
/// `--env-file` bound on lines (comments and blanks included).
pub const MAX_ENV_FILE_LINES: usize = 65_536;

/// A bad environment entry or env file; one line, naming where it came from.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A variable name that [`check_name`] refuses.
    #[error("{origin}: invalid variable name {name:?}: {why}")]
    Name {
        origin: String,
        name: String,
        why: &'static str,
    },
    /// A value with a NUL byte.
    #[error("{origin}: variable {name}: value contains a NUL byte")]
    NulValue { origin: String, name: String },
    /// An env file that cannot be read (or is not UTF-8 text).
    #[error("--env-file {path}: {err}")]
    Read { path: String, err: std::io::Error },
    /// An env file over [`MAX_ENV_FILE_BYTES`] or [`MAX_ENV_FILE_LINES`].
    #[error("--env-file {path}: more than {limit}; an env file holds K=V lines")]
    TooLarge { path: String, limit: String },
}

/// Why `name` cannot be an environment variable name, if it cannot.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    for c in name.chars() {
        if c == '=' {
            return Err("contains '='");
        }
        if c == '\0' {
            return Err("contains a NUL byte");
        }
        if c.is_whitespace() {
            return Err("contains whitespace");
        }
        if c.is_control() {
            return Err("contains a control character");
        }
    }
    Ok(())
}

/// True when `name` matches an allowlist entry (exact, or `PREFIX*`).
pub fn allowed(name: &str, allowlist: &[String]) -> bool {
    allowlist.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == p,
    })
}

/// An ordered environment with unique names.
#[derive(Debug, Default, Clone)]
pub struct Env {
    vars: Vec<(String, String)>,
}

/// `K=V` (or `K`) split and checked; `origin` names the source in errors.
fn split_spec<'a>(spec: &'a str, origin: &str) -> Result<(&'a str, Option<&'a str>), EnvError> {
    // The name ends at the first '=': a name can never contain one.
    let (k, v) = match spec.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (spec, None),
    };
    check_name(k).map_err(|why| EnvError::Name {
        origin: origin.to_string(),
        name: k.to_string(),
        why,
    })?;
    if v.is_some_and(|v| v.contains('\0')) {
        return Err(EnvError::NulValue {
            origin: origin.to_string(),
            name: k.to_string(),
        });
    }
    Ok((k, v))
}

impl Env {
    /// Set (replacing an earlier value, keeping its position).
    pub fn set(&mut self, k: &str, v: &str) {
        match self.vars.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = v.to_string(),
            None => self.vars.push((k.to_string(), v.to_string())),
        }
    }

    /// Value of a variable.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// Set from `K=V` (a `K` alone takes the host's value, as `podman -e K` does; unset
    /// on the host, nothing is set). `origin` names the source in errors.
    pub fn set_spec(
        &mut self,
        spec: &str,
        origin: &str,
        host: impl Fn(&str) -> Option<String>,
    ) -> Result<(), EnvError> {
        let (k, v) = split_spec(spec, origin)?;
        let v = match v {
            Some(v) => Some(v.to_string()),
            None => host(k),
        };
        if let Some(v) = v {
            if v.contains('\0') {
                return Err(EnvError::NulValue {
                    origin: origin.to_string(),
                    name: k.to_string(),
                });
            }
            self.set(k, &v);
        }
        Ok(())
    }

    /// `K=V` strings, in order.
    pub fn to_strings(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// The entries of an env file's text: (1-based line number, entry) for each line that
/// is not blank or a `#` comment, surrounding blanks trimmed.
pub fn env_file_entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Compose the environment. `host` is the host's environment; `env_files` are the
/// texts of the `--env-file`s (see [`read_env_file`]).
pub fn compose(
    image_env: &[String],
    host: &[(String, String)],
    allowlist: &[String],
    env_files: &[String],
    cli: &[String],
) -> Result<Env, EnvError> {
    let mut e = Env::default();
    for s in image_env {
        // An image entry without '=' sets nothing (Docker ignores it too); its name is
        // still checked.
        if let (k, Some(v)) = split_spec(s, "image config Env")? {
            e.set(k, v);
        }
    }
    for (k, v) in host {
        if allowed(k, allowlist) {
            e.set(k, v);
        }
    }
    let lookup = |k: &str| host.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    for text in env_files {
        for (n, l) in env_file_entries(text) {
            e.set_spec(l, &format!("--env-file line {n}"), lookup)?;
        }
    }
    for s in cli {
        e.set_spec(s, "-e", lookup)?;
    }
    Ok(e)
}

/// Read an `--env-file` (one `K=V` or `K` per line, `#` comments), refusing files over
/// [`MAX_ENV_FILE_BYTES`] or [`MAX_ENV_FILE_LINES`] without reading past the bound, and
/// checking every entry so that errors name the file and line. (anyhow: what the run
/// path collects; the error inside is an [`EnvError`].)
pub fn read_env_file(path: &Path) -> anyhow::Result<String> {
    Ok(read_env_file_checked(path)?)
}

fn read_env_file_checked(path: &Path) -> Result<String, EnvError> {
    let name = path.display().to_string();
    let read_err = |err| EnvError::Read {
        path: name.clone(),
        err,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    f.take(MAX_ENV_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    check_env_file(&name, &text)?;
    Ok(text)
}

/// The checks of [`read_env_file`] on a text already read (at most one byte past the cap).
fn check_env_file(name: &str, text: &str) -> Result<(), EnvError> {
    if text.len() as u64 > MAX_ENV_FILE_BYTES {
        return Err(EnvError::TooLarge {
            path: name.to_string(),
            limit: format!("{} KiB", MAX_ENV_FILE_BYTES >> 10),
        });
    }
    if text.lines().nth(MAX_ENV_FILE_LINES).is_some() {
        return Err(EnvError::TooLarge {
            path: name.to_string(),
            limit: format!("{MAX_ENV_FILE_LINES} lines"),
        });
    }
    for (n, l) in env_file_entries(text) {
        split_spec(l, &format!("--env-file {name} line {n}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_allowlist() {
        let host = vec![
            ("SLURM_JOB_ID".to_string(), "7".to_string()),
            ("SECRET".to_string(), "x".to_string()),
            ("PATH".to_string(), "/host/bin".to_string()),
            ("FROMHOST".to_string(), "h".to_string()),
        ];
        let allow = vec!["SLURM_*".to_string(), "TERM".to_string()];
        let e = compose(
            &["PATH=/bin".into(), "A=1".into()],
            &host,
            &allow,
            &["# c\nB=2\nA=3\n".into()],
            &["A=4".into(), "FROMHOST".into(), "MISSING".into()],
        )
        .unwrap();
        assert_eq!(
            e.to_strings(),
            ["PATH=/bin", "A=4", "SLURM_JOB_ID=7", "B=2", "FROMHOST=h"]
        );
        assert!(compose(&[], &[], &[], &[], &["=x".into()]).is_err());
    }

    #[test]
    fn bad_names_are_refused_from_every_source() {
        for bad in [
            "A B=1",
            "=x",
            "A\nB=1",
            "A\tB",
            "A\u{7f}=1",
            "A\u{85}B=2",
            "\0=1",
            " =1",
        ] {
            let e = compose(&[], &[], &[], &[], &[bad.into()]).unwrap_err();
            assert!(matches!(e, EnvError::Name { .. }), "{bad:?}: {e}");
            assert!(
                e.to_string().starts_with("-e: invalid variable name"),
                "{e}"
            );
            let e = compose(&[bad.into()], &[], &[], &[], &[]).unwrap_err();
            assert!(e.to_string().starts_with("image config Env: "), "{e}");
        }
        // In a file, a name cannot hold a newline (it ends the line); the rest is
        // refused with the line number.
        let e = compose(&[], &[], &[], &["OK=1\n\nA B=1\n".into()], &[]).unwrap_err();
        assert!(e.to_string().starts_with("--env-file line 3: "), "{e}");
        let e = compose(&[], &[], &[], &[], &["A=x\0y".into()]).unwrap_err();
        assert!(matches!(e, EnvError::NulValue { .. }), "{e}");
        // Values may hold '=', spaces and newlines; names may hold non-ASCII letters.
        let e = compose(&[], &[], &[], &[], &["A=b=c d\ne".into(), "É=1".into()]).unwrap();
        assert_eq!(e.get("A"), Some("b=c d\ne"));
        assert_eq!(e.get("É"), Some("1"));
    }

    #[test]
    fn env_files_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'A'; MAX_ENV_FILE_BYTES as usize + 1]).unwrap();
        let e = read_env_file(&big).unwrap_err().to_string();
        assert!(e.contains("more than 1024 KiB"), "{e}");
        let exact = d.path().join("exact");
        let mut t = "A=1\n".repeat(1000);
        t.push_str(&"#".repeat(MAX_ENV_FILE_BYTES as usize - t.len()));
        std::fs::write(&exact, &t).unwrap();
        assert_eq!(read_env_file(&exact).unwrap(), t);
        let lines = d.path().join("lines");
        std::fs::write(&lines, "\n".repeat(MAX_ENV_FILE_LINES + 1)).unwrap();
        let e = read_env_file(&lines).unwrap_err().to_string();
        assert!(e.contains("more than 65536 lines"), "{e}");
        // An endless device is cut at the bound instead of filling memory.
        let e = read_env_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/zero: more than 1024 KiB"), "{e}");
        let e = read_env_file(&d.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--env-file ") && e.contains("missing"), "{e}");
        let bad = d.path().join("bad");
        std::fs::write(&bad, "# c\nGOOD=1\nBAD NAME=2\n").unwrap();
        let e = read_env_file(&bad).unwrap_err().to_string();
        assert!(
            e.contains("bad line 3: invalid variable name \"BAD NAME\""),
            "{e}"
        );
    }

    proptest::proptest! {
        /// Any text as an env file: checked or refused, never a panic; what passes the
        /// check composes, and every name it sets is a valid one.
        #[test]
        fn any_env_file_text_is_checked_or_refused(text in "(\\PC|[\t\r\n\0=# ]){0,200}") {
            if check_env_file("f", &text).is_ok() {
                let e = compose(&[], &[], &[], std::slice::from_ref(&text), &[]).unwrap();
                for s in e.to_strings() {
                    let (k, _) = s.split_once('=').unwrap();
                    proptest::prop_assert!(check_name(k).is_ok(), "{:?}", k);
                }
            }
        }

        /// Valid `K=V` lines written out and read back give the same variables.
        #[test]
        fn env_file_round_trip(
            vars in proptest::collection::vec(("[A-Za-z_][A-Za-z0-9_.-]{0,12}", "[^\n\r\0]{0,20}"), 0..20)
        ) {
            let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            proptest::prop_assert!(check_env_file("f", &text).is_ok());
            let e = compose(&[], &[], &[], &[text], &[]).unwrap();
            for (k, _) in &vars {
                // The last assignment wins; values are trimmed like the whole line.
                let (_, want) = vars.iter().rev().find(|(n, _)| n == k).unwrap();
                let line = format!("{k}={want}");
                let want = line.trim().split_once('=').unwrap().1;
                proptest::prop_assert_eq!(e.get(k), Some(want));
            }
        }

        /// check_name accepts exactly the names without '=', whitespace or controls.
        #[test]
        fn check_name_matches_its_rule(name in "\\PC{0,8}|.{0,8}") {
            let want = !name.is_empty()
                && !name.chars().any(|c| c == '=' || c.is_whitespace() || c.is_control());
            proptest::prop_assert_eq!(check_name(&name).is_ok(), want);
        }
    }
}
