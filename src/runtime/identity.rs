//! Pure: the container process's UID, GID and home inside, from the identity mode, the
//! image's `User` and the image's /etc/passwd.

use super::idmap::Identity;
use super::passwd;
use super::setup::SetupError;
use super::spec::RunSpec;
use std::path::PathBuf;

/// The process's IDs inside and its home.
pub fn process_identity(
    spec: &RunSpec,
    image_passwd: &str,
) -> Result<(u32, u32, PathBuf), SetupError> {
    match spec.identity {
        Identity::KeepId => Ok((
            spec.map.inside_uid,
            spec.map.inside_gid,
            spec.user.home.clone(),
        )),
        Identity::RemapRoot => {
            let Some(u) = spec.image_user.as_deref().filter(|u| !u.is_empty()) else {
                return Ok((
                    0,
                    0,
                    passwd::lookup_user(image_passwd, "0").map_or("/root".into(), |u| u.2.into()),
                ));
            };
            let (user, group) = match u.split_once(':') {
                Some((a, b)) => (a, Some(b)),
                None => (u, None),
            };
            let (uid, mut gid, home) = match passwd::lookup_user(image_passwd, user) {
                Some(x) => x,
                None => match user.parse::<u32>() {
                    Ok(n) => (n, n, "/".to_string()),
                    Err(_) => {
                        return Err(SetupError::new(format!(
                            "image user {user:?} is not in the image's /etc/passwd"
                        )))
                    }
                },
            };
            if let Some(g) = group {
                gid = g
                    .parse()
                    .map_err(|_| SetupError::new(format!("image group {g:?}: use a number")))?;
            }
            Ok((uid, gid, home.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(identity: Identity, image_user: Option<&str>) -> RunSpec {
        RunSpec {
            image_user: image_user.map(String::from),
            ..crate::runtime::spec::sample(identity)
        }
    }

    #[test]
    fn ids_and_home() {
        let pw = "root:x:0:0:root:/root:/bin/sh\napache:x:48:48::/var/www:/bin/false\n";
        let id = |i, u| process_identity(&spec_with(i, u), pw).unwrap();
        assert_eq!(
            id(Identity::KeepId, Some("apache")),
            (1001, 1001, "/home/a".into())
        );
        assert_eq!(id(Identity::RemapRoot, None), (0, 0, "/root".into()));
        assert_eq!(
            id(Identity::RemapRoot, Some("apache")),
            (48, 48, "/var/www".into())
        );
        assert_eq!(
            id(Identity::RemapRoot, Some("apache:7")),
            (48, 7, "/var/www".into())
        );
        assert_eq!(
            id(Identity::RemapRoot, Some("4242")),
            (4242, 4242, "/".into())
        );
        assert!(process_identity(&spec_with(Identity::RemapRoot, Some("nosuch")), pw).is_err());
    }
}
