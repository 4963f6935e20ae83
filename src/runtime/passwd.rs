//! The user's entries in the container's /etc/passwd and /etc/group, so `id`, `whoami`
//! and `$HOME` work. Pure text transformation of the image's files.

/// The entry to add for the user (keep-id: the host identity).
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub gecos: &'a str,
    pub home: &'a str,
    pub shell: &'a str,
}

/// The image's passwd with any line for the same name or UID replaced by ours.
pub fn passwd(image: &str, e: &Entry) -> String {
    let mut out = String::new();
    for line in image.lines() {
        let mut f = line.split(':');
        let name = f.next().unwrap_or("");
        let uid = f.nth(1).and_then(|u| u.parse::<u32>().ok());
        if name == e.name || uid == Some(e.uid) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let gecos = e.gecos.replace([':', '\n'], " ");
    out.push_str(&format!(
        "{}:x:{}:{}:{}:{}:{}\n",
        e.name, e.uid, e.gid, gecos, e.home, e.shell
    ));
    out
}

/// The image's group plus a group for the user's GID when the image has none.
pub fn group(image: &str, name: &str, gid: u32) -> String {
    let mut out = String::new();
    let mut have = false;
    for line in image.lines() {
        if line.split(':').nth(2).and_then(|g| g.parse::<u32>().ok()) == Some(gid) {
            have = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !have {
        out.push_str(&format!("{name}:x:{gid}:\n"));
    }
    out
}

/// Look a user up in an image passwd: by name or numeric; returns (uid, gid, home).
pub fn lookup_user(passwd: &str, user: &str) -> Option<(u32, u32, String)> {
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        if f[0] == user || f[2] == user {
            return Some((f[2].parse().ok()?, f[3].parse().ok()?, f[5].to_string()));
        }
    }
    None
}

/// A group's GID by name or number.
pub fn lookup_group(group: &str, g: &str) -> Option<u32> {
    if let Ok(n) = g.parse() {
        return Some(n);
    }
    group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == g)
        .and_then(|f| f[2].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_adds() {
        let e = Entry {
            name: "alice",
            uid: 1001,
            gid: 1001,
            gecos: "A:x",
            home: "/home/alice",
            shell: "/bin/sh",
        };
        let p = passwd("root:x:0:0:root:/root:/bin/sh\nold:x:1001:1:o:/:/x\n", &e);
        assert_eq!(
            p,
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1001:1001:A x:/home/alice:/bin/sh\n"
        );
        assert_eq!(
            group("root:x:0:\n", "alice", 1001),
            "root:x:0:\nalice:x:1001:\n"
        );
        assert_eq!(group("users:x:1001:\n", "alice", 1001), "users:x:1001:\n");
        assert_eq!(
            lookup_user(&p, "alice"),
            Some((1001, 1001, "/home/alice".into()))
        );
        assert_eq!(lookup_user(&p, "0"), Some((0, 0, "/root".into())));
        assert_eq!(lookup_group("wheel:x:10:\n", "wheel"), Some(10));
    }
}
