//! A unified diff of two texts, enough for an admin to review a change to `/etc/subuid`:
//! the common head and tail are trimmed and the middle shown as one hunk with context.
//! Linear time, so a 100,000-line file diffs instantly. Pure.

/// Lines of context around the change.
const CONTEXT: usize = 3;

/// `None` when the texts are equal, else a unified diff with `---`/`+++` headers.
pub fn unified(old_name: &str, new_name: &str, old: &str, new: &str) -> Option<String> {
    if old == new {
        return None;
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut head = 0;
    while head < a.len() && head < b.len() && a[head] == b[head] {
        head += 1;
    }
    let mut tail = 0;
    while tail < a.len() - head
        && tail < b.len() - head
        && a[a.len() - 1 - tail] == b[b.len() - 1 - tail]
    {
        tail += 1;
    }
    let start = head.saturating_sub(CONTEXT);
    let a_end = (a.len() - tail + CONTEXT).min(a.len());
    let b_end = (b.len() - tail + CONTEXT).min(b.len());
    let mut s = format!("--- {old_name}\n+++ {new_name}\n");
    let range = |from: usize, to: usize| {
        let n = to - from;
        let first = if n == 0 { from } else { from + 1 };
        format!("{first},{n}")
    };
    s.push_str(&format!(
        "@@ -{} +{} @@\n",
        range(start, a_end),
        range(start, b_end)
    ));
    for l in &a[start..head] {
        s.push_str(&format!(" {l}\n"));
    }
    for l in &a[head..a.len() - tail] {
        s.push_str(&format!("-{l}\n"));
    }
    for l in &b[head..b.len() - tail] {
        s.push_str(&format!("+{l}\n"));
    }
    for l in &a[a.len() - tail..a_end] {
        s.push_str(&format!(" {l}\n"));
    }
    if old.is_empty() || new.is_empty() || old.ends_with('\n') == new.ends_with('\n') {
        return Some(s);
    }
    s.push_str("\\ newline at end of file changed\n");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_lines() {
        let d = unified("a", "b", "1\n2\n3\n4\n5\n", "1\n2\n3\n4\n5\nx\ny\n").unwrap();
        assert_eq!(d, "--- a\n+++ b\n@@ -3,3 +3,5 @@\n 3\n 4\n 5\n+x\n+y\n");
        assert!(unified("a", "b", "same\n", "same\n").is_none());
    }

    #[test]
    fn change_in_middle_and_from_empty() {
        let d = unified("a", "b", "1\n2\n3\n", "1\nX\n3\n").unwrap();
        assert_eq!(d, "--- a\n+++ b\n@@ -1,3 +1,3 @@\n 1\n-2\n+X\n 3\n");
        let d = unified("a", "b", "", "n\n").unwrap();
        assert_eq!(d, "--- a\n+++ b\n@@ -0,0 +1,1 @@\n+n\n");
    }
}
