//! Site hooks in podman's `hooks.d` format (OCI hooks JSON, version 1.0.0): one JSON file
//! per hook, `{"version": "1.0.0", "hook": {"path", "args", "env", "timeout"},
//! "when": {"always", "annotations", "commands", "hasBindMounts"}, "stages": [...]}`.
//! Parsing and matching are pure; [`load`] reads the directories (through
//! `dropins::files`: later directories replace files of the same name, lexical order).
//! A hook applies when any of its `when` conditions holds: `always`; a `commands` regex
//! matching the container's first argument (the whole string); an `annotations` pair of
//! regexes matching one annotation; `hasBindMounts` and the container has bind mounts.

use super::bundle::{Hook, HookJson};
use super::cdi::Stage;
use super::dropins;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A hooks.d file that cannot be used: the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("hook file {}: {what}", file.display())]
pub struct SiteHookError {
    pub file: PathBuf,
    pub what: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    version: String,
    hook: HookJson,
    when: WhenJson,
    stages: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WhenJson {
    #[serde(default)]
    always: Option<bool>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    commands: Vec<String>,
    #[serde(default)]
    has_bind_mounts: Option<bool>,
}

/// One checked site hook.
#[derive(Debug, Clone)]
pub struct SiteHook {
    pub file: PathBuf,
    pub hook: Hook,
    pub stages: Vec<Stage>,
    always: bool,
    commands: Vec<regex::Regex>,
    annotations: Vec<(regex::Regex, regex::Regex)>,
    has_bind_mounts: bool,
}

/// What a hook's `when` is matched against.
#[derive(Debug, Clone, Default)]
pub struct Container<'a> {
    pub argv0: &'a str,
    pub annotations: &'a [(String, String)],
    pub has_bind_mounts: bool,
}

impl SiteHook {
    /// Does this hook apply to `c`?
    pub fn applies(&self, c: &Container) -> bool {
        self.always
            || (self.has_bind_mounts && c.has_bind_mounts)
            || self.commands.iter().any(|r| r.is_match(c.argv0))
            || self.annotations.iter().any(|(k, v)| {
                c.annotations
                    .iter()
                    .any(|(ak, av)| k.is_match(ak) && v.is_match(av))
            })
    }
}

/// Largest regex (compiled size) a hook file may use.
const REGEX_SIZE: usize = 1 << 20;

fn anchored(file: &Path, what: &str, re: &str) -> Result<regex::Regex, SiteHookError> {
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(REGEX_SIZE)
        .build()
        .map_err(|e| SiteHookError {
            file: file.to_path_buf(),
            what: format!(
                "{what} {re:?} is not a valid regular expression: {}",
                e.to_string().lines().last().unwrap_or_default()
            ),
        })
}

/// Parse one hooks.d file's text.
pub fn parse(file: &Path, text: &str) -> Result<SiteHook, SiteHookError> {
    let fail = |what: String| SiteHookError {
        file: file.to_path_buf(),
        what,
    };
    let raw: FileJson = serde_json::from_str(text).map_err(|e| fail(e.to_string()))?;
    if raw.version != "1.0.0" {
        return Err(fail(format!(
            "version {:?} is not supported (1.0.0)",
            raw.version
        )));
    }
    let hook = raw
        .hook
        .check()
        .map_err(|why| fail(format!("hook: {why}")))?;
    if raw.stages.is_empty() {
        return Err(fail("stages is empty".into()));
    }
    let stages = raw
        .stages
        .iter()
        .map(|s| {
            Stage::parse(s).ok_or_else(|| {
                fail(format!(
                    "stage {s:?} is not one of prestart, createRuntime, createContainer, startContainer, poststart, poststop"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let w = raw.when;
    if w.always.is_none()
        && w.annotations.is_empty()
        && w.commands.is_empty()
        && w.has_bind_mounts.is_none()
    {
        return Err(fail(
            "when has no condition (always, annotations, commands, hasBindMounts)".into(),
        ));
    }
    let commands = w
        .commands
        .iter()
        .map(|c| anchored(file, "when.commands", c))
        .collect::<Result<Vec<_>, _>>()?;
    let annotations = w
        .annotations
        .iter()
        .map(|(k, v)| {
            Ok((
                anchored(file, "when.annotations key", k)?,
                anchored(file, "when.annotations value", v)?,
            ))
        })
        .collect::<Result<Vec<_>, SiteHookError>>()?;
    Ok(SiteHook {
        file: file.to_path_buf(),
        hook,
        stages,
        always: w.always.unwrap_or(false),
        commands,
        annotations,
        has_bind_mounts: w.has_bind_mounts.unwrap_or(false),
    })
}

/// The site hooks of `dirs` (`*.json`), in lexical order of their file names.
pub fn load(dirs: &[PathBuf]) -> Result<Vec<SiteHook>, SiteHookError> {
    dropins::files(dirs, "json")
        .into_iter()
        .map(|f| {
            let text = dropins::read(&f).map_err(|e| SiteHookError {
                file: f.clone(),
                what: e.to_string(),
            })?;
            parse(&f, &text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(t: &str) -> Result<SiteHook, SiteHookError> {
        parse(Path::new("/etc/warren/hooks.d/10-x.json"), t)
    }

    #[test]
    fn podman_format_and_when() {
        let h = p(r#"{"version":"1.0.0","hook":{"path":"/usr/libexec/h","args":["h","prestart"],"env":["A=1"],"timeout":3},
                     "when":{"commands":[".*/python3?", "sh"],"annotations":{"^com\\.x$":"yes"}},"stages":["prestart","poststop"]}"#).unwrap();
        assert_eq!(h.stages, vec![Stage::Prestart, Stage::Poststop]);
        assert_eq!(h.hook.timeout, Some(3));
        fn c<'a>(argv0: &'a str, ann: &'a [(String, String)], b: bool) -> Container<'a> {
            Container {
                argv0,
                annotations: ann,
                has_bind_mounts: b,
            }
        }
        assert!(h.applies(&c("/usr/bin/python3", &[], false)));
        assert!(h.applies(&c("sh", &[], false)));
        assert!(
            !h.applies(&c("bash", &[], false)),
            "commands match whole strings"
        );
        assert!(h.applies(&c("x", &[("com.x".into(), "yes".into())], false)));
        assert!(!h.applies(&c("x", &[("com.x".into(), "no".into())], true)));
        let b = p(r#"{"version":"1.0.0","hook":{"path":"/h"},"when":{"hasBindMounts":true},"stages":["poststart"]}"#).unwrap();
        assert!(b.applies(&c("x", &[], true)) && !b.applies(&c("x", &[], false)));
    }

    #[test]
    fn bad_files_say_what() {
        for (t, want) in [
            (
                r#"{"version":"2.0.0","hook":{"path":"/h"},"when":{"always":true},"stages":["prestart"]}"#,
                "version",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"h"},"when":{"always":true},"stages":["prestart"]}"#,
                "absolute",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/h"},"when":{},"stages":["prestart"]}"#,
                "no condition",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/h"},"when":{"always":true},"stages":["later"]}"#,
                "stage \"later\"",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/h"},"when":{"always":true},"stages":[]}"#,
                "stages is empty",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/h","timeout":0},"when":{"always":true},"stages":["prestart"]}"#,
                "greater than zero",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/h"},"when":{"commands":["("]},"stages":["prestart"]}"#,
                "regular expression",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/h"},"when":{"always":true},"stages":["prestart"],"x":1}"#,
                "unknown field",
            ),
        ] {
            let e = p(t).unwrap_err().to_string();
            assert!(
                e.starts_with("hook file /etc/warren/hooks.d/10-x.json: "),
                "{e}"
            );
            assert!(e.contains(want), "{want} not in {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_fails_on_one_line(t in ".{0,300}") {
            if let Err(e) = p(&t) {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }

        #[test]
        fn any_command_regex_is_handled(re in ".{0,40}", argv0 in ".{0,20}") {
            let t = serde_json::json!({"version":"1.0.0","hook":{"path":"/h"},"when":{"commands":[re]},"stages":["prestart"]});
            if let Ok(h) = p(&t.to_string()) {
                let _ = h.applies(&Container { argv0: &argv0, annotations: &[], has_bind_mounts: false });
            }
        }
    }
}
