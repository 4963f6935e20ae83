//! The AppArmor profile that lets warren create user namespaces on Ubuntu 23.10+
//! (`kernel.apparmor_restrict_unprivileged_userns = 1`). Installed by the admin.

use std::path::Path;

/// Where the admin installs the profile.
pub const PROFILE_PATH: &str = "/etc/apparmor.d/warren";

/// Profile text for `binary` (unconfined, plus the `userns` permission), in the form
/// Ubuntu ships for other container tools.
pub fn profile(binary: &Path) -> String {
    format!(
        "# AppArmor profile for warren: allow unprivileged user namespaces.\n\
         # Install: save as {PROFILE_PATH}, then run: apparmor_parser -r {PROFILE_PATH}\n\
         abi <abi/4.0>,\n\
         include <tunables/global>\n\
         \n\
         profile warren {} flags=(unconfined) {{\n\
         \x20 userns,\n\
         \n\
         \x20 # Site-specific additions.\n\
         \x20 include if exists <local/warren>\n\
         }}\n",
        binary.display()
    )
}

/// The fix text for the AppArmor restriction.
pub fn fix(binary: &Path) -> String {
    format!(
        "as root, install this profile and load it (or run `warren doctor --apparmor-profile > {PROFILE_PATH}`):\n{}\
         then: apparmor_parser -r {PROFILE_PATH}",
        profile(binary)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_allows_userns_for_the_binary() {
        let p = profile(Path::new("/usr/bin/warren"));
        assert!(p.contains("profile warren /usr/bin/warren flags=(unconfined) {"));
        assert!(p.contains("\n  userns,\n"));
        assert!(p.ends_with("}\n"));
    }
}
