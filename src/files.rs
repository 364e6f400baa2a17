//! Files only the gateway's own user may read. The store holds password hashes and session
//! records, the outbox holds mailed codes: directories 0700, files 0600. The binary sets its
//! umask to 077 as well, so what sled and the mailer create later is private from the start;
//! this mends what older builds (or another umask) left readable.

use std::path::Path;

/// Makes `dir` 0700 and everything under it 0700 (directories) or 0600 (files).
pub fn make_private(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(dir)?;
        if meta.is_dir() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            for entry in std::fs::read_dir(dir)? {
                make_private(&entry?.path())?;
            }
        } else if meta.is_file() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Files this process creates from now on are its user's alone (umask 077).
pub fn private_umask() {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_tree_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("db/blobs");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(dir.path().join("db/conf"), "x").unwrap();
        std::fs::write(sub.join("1"), "x").unwrap();
        for p in [dir.path().join("db/conf"), sub.join("1")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        make_private(&dir.path().join("db")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("db")), 0o700);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&dir.path().join("db/conf")), 0o600);
        assert_eq!(mode(&sub.join("1")), 0o600);
    }
}
