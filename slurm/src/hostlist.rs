//! Slurm host lists (`n[1-3,7],login01`), expanded to names. slurmstepd has no SPANK item
//! for its own node name before tasks exist, but it has the step's node list and the
//! node's index in it (`S_JOB_NODEID`); several slurmd on one machine share a host name,
//! so the name must come from Slurm. Pure; bounded (a hostile or huge list is refused).

/// Most names one list may expand to.
pub const MAX_HOSTS: usize = 65536;

/// Expand `list`, or `None` if it is malformed or too long.
pub fn expand(list: &str) -> Option<Vec<String>> {
    if list.is_empty() || list.len() > 1 << 20 {
        return None;
    }
    let mut out = Vec::new();
    // Split on commas outside brackets.
    let mut depth = 0usize;
    let mut start = 0;
    let bytes = list.as_bytes();
    for i in 0..=bytes.len() {
        let c = bytes.get(i).copied();
        match c {
            Some(b'[') => depth += 1,
            Some(b']') => depth = depth.checked_sub(1)?,
            Some(b',') | None if depth == 0 => {
                expand_one(&list[start..i], &mut out)?;
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0).then_some(out)
}

fn expand_one(item: &str, out: &mut Vec<String>) -> Option<()> {
    if item.is_empty() {
        return None;
    }
    let Some(open) = item.find('[') else {
        if item.contains(']') {
            return None;
        }
        out.push(item.to_string());
        return (out.len() <= MAX_HOSTS).then_some(());
    };
    let close = open + item[open..].find(']')?;
    let (prefix, ranges, suffix) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
    if suffix.contains('[') || suffix.contains(']') {
        // Multi-dimensional lists exist only on some machines: not supported.
        return None;
    }
    for r in ranges.split(',') {
        let (lo, hi) = r.split_once('-').unwrap_or((r, r));
        if lo.is_empty()
            || hi.is_empty()
            || lo.len() > 9
            || hi.len() > 9
            || !lo.bytes().chain(hi.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let (a, b): (u32, u32) = (lo.parse().ok()?, hi.parse().ok()?);
        if a > b || (b - a) as usize >= MAX_HOSTS {
            return None;
        }
        let width = lo.len();
        for n in a..=b {
            out.push(format!("{prefix}{n:0width$}{suffix}"));
            if out.len() > MAX_HOSTS {
                return None;
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        assert_eq!(expand("n1").unwrap(), ["n1"]);
        assert_eq!(expand("n[1-3]").unwrap(), ["n1", "n2", "n3"]);
        assert_eq!(
            expand("n[1,3-4],login").unwrap(),
            ["n1", "n3", "n4", "login"]
        );
        assert_eq!(
            expand("gpu[08-10]-ib").unwrap(),
            ["gpu08", "gpu09", "gpu10"].map(|s| s.to_string() + "-ib")
        );
        for bad in [
            "",
            "n[",
            "n]",
            "n[3-1]",
            "n[a]",
            "n1,,n2",
            "n[1-2][3]",
            "n[0-99999999]",
        ] {
            assert_eq!(expand(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = expand(&s);
        }

        #[test]
        fn ranges_round_trip(prefix in "[a-z]{1,5}", a in 0u32..500, n in 0u32..50) {
            let list = format!("{prefix}[{a}-{}]", a + n);
            let v = expand(&list).unwrap();
            prop_assert_eq!(v.len() as u32, n + 1);
            prop_assert_eq!(&v[0], &format!("{prefix}{a}"));
        }
    }
}
