//! `/etc/login.defs`: the keys that decide who is a regular user and where subordinate IDs
//! go. Parsing is pure; a missing file means shadow's built-in defaults.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// Limits for one kind of subordinate ID (`SUB_UID_*` or `SUB_GID_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SubLimits {
    /// `SUB_?ID_MIN`: first ID handed out.
    pub min: u64,
    /// `SUB_?ID_MAX`: last ID that may be handed out (inclusive).
    pub max: u64,
    /// `SUB_?ID_COUNT`: IDs per user.
    pub count: u64,
}

/// The values warren uses, after defaults.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoginDefs {
    /// `UID_MIN`: first regular user.
    pub uid_min: u64,
    /// `UID_MAX`: last regular user.
    pub uid_max: u64,
    /// `GID_MIN`.
    pub gid_min: u64,
    /// `GID_MAX`.
    pub gid_max: u64,
    /// Subordinate UIDs.
    pub sub_uid: SubLimits,
    /// Subordinate GIDs.
    pub sub_gid: SubLimits,
    /// `SUB_UID_DETERMINISTIC yes`: this node's useradd uses the deterministic formula.
    pub deterministic: bool,
    /// Whether each `SUB_*` key was written in the file (else shadow's default was used).
    pub sub_keys_set: bool,
}

impl LoginDefs {
    /// Defaults for a given strategy when a key is absent: shadow 4.20 uses
    /// 65536..=2^32-1 for the deterministic formula and 100000..=600100000 for linear
    /// search.
    fn from_map(m: &HashMap<String, String>, deterministic_defaults: bool) -> Result<LoginDefs> {
        let get = |k: &str, d: u64| -> Result<u64> {
            match m.get(k) {
                Some(v) => {
                    parse_ulong(v).with_context(|| format!("login.defs {k}: {v:?} is not a number"))
                }
                None => Ok(d),
            }
        };
        let (smin, smax) = if deterministic_defaults {
            (65536, u32::MAX as u64)
        } else {
            (100_000, 600_100_000)
        };
        let sub = |p: &str| -> Result<SubLimits> {
            Ok(SubLimits {
                min: get(&format!("SUB_{p}ID_MIN"), smin)?,
                max: get(&format!("SUB_{p}ID_MAX"), smax)?,
                count: get(&format!("SUB_{p}ID_COUNT"), 65536)?,
            })
        };
        Ok(LoginDefs {
            uid_min: get("UID_MIN", 1000)?,
            uid_max: get("UID_MAX", 60000)?,
            gid_min: get("GID_MIN", 1000)?,
            gid_max: get("GID_MAX", 60000)?,
            sub_uid: sub("U")?,
            sub_gid: sub("G")?,
            deterministic: m
                .get("SUB_UID_DETERMINISTIC")
                .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            sub_keys_set: m.contains_key("SUB_UID_MIN"),
        })
    }
}

/// Parse login.defs text. `deterministic_defaults` picks shadow's defaults for absent
/// `SUB_*` keys (they differ between the deterministic and the linear allocator).
pub fn parse(text: &str, deterministic_defaults: bool) -> Result<LoginDefs> {
    let mut m = HashMap::new();
    for raw in text.lines() {
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut it = t.splitn(2, |c: char| c.is_ascii_whitespace());
        let (Some(k), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        // shadow strips optional double quotes around values.
        let v = v.trim().trim_matches('"');
        m.insert(k.to_string(), v.to_string());
    }
    LoginDefs::from_map(&m, deterministic_defaults)
}

/// Read login.defs; a missing file gives the defaults.
pub fn read(path: &Path, deterministic_defaults: bool) -> Result<LoginDefs> {
    // Bytes, not text: a Latin-1 comment must not make the whole file unreadable.
    let text = match std::fs::read(path) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    parse(&text, deterministic_defaults).with_context(|| format!("{}", path.display()))
}

/// `strtoul(…, 0)` as shadow's getdef does: decimal, `0x` hex, leading-`0` octal.
fn parse_ulong(s: &str) -> Option<u64> {
    crate::subid::c_ulong(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_file() {
        let d = parse(
            "# c\nUID_MIN\t\t\t 1000\nUID_MAX 60000\nSUB_UID_MIN\t\t   100000\nSUB_UID_COUNT 0x10000\nSUB_GID_MAX \"600100000\"\nUMASK 022\n",
            true,
        )
        .unwrap();
        assert_eq!(d.uid_min, 1000);
        assert_eq!(d.sub_uid.min, 100000);
        assert_eq!(d.sub_uid.count, 65536);
        assert_eq!(d.sub_uid.max, u32::MAX as u64);
        assert_eq!(d.sub_gid.max, 600100000);
        assert_eq!(d.sub_gid.min, 65536);
        assert!(!d.deterministic);
    }

    #[test]
    fn linear_defaults_and_bad_value() {
        let d = parse("SUB_UID_DETERMINISTIC yes\n", false).unwrap();
        assert_eq!(d.sub_uid.min, 100000);
        assert_eq!(d.sub_uid.max, 600100000);
        assert!(d.deterministic);
        let e = parse("UID_MIN lots\n", true).unwrap_err();
        assert!(format!("{e:#}").contains("UID_MIN"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(t in "(?s).{0,300}", kv in "([A-Z_]{1,14}[ \t]+[0-9xX\"a-f]{0,12}\n){0,8}") {
            for det in [true, false] {
                let _ = parse(&t, det);
                let _ = parse(&kv, det);
            }
        }

        #[test]
        fn numbers_read_as_shadow_does(n in proptest::prelude::any::<u32>()) {
            for (text, base) in [(format!("{n}"), 10), (format!("0x{n:x}"), 16), (format!("0{n:o}"), 8)] {
                let d = parse(&format!("UID_MIN {text}\n"), true).unwrap();
                proptest::prop_assert_eq!(d.uid_min, n as u64, "base {}", base);
            }
        }
    }
}
