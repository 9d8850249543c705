//! The state directory: created and kept private (0700, its files 0600)
//! however the daemon is started, and locked against a second daemon.
//!
//! The database holds every identity's provider, unique id and IdP
//! username; under systemd `StateDirectoryMode` covers the directory, but
//! started by hand (or by an init without it) the umask would leave the
//! directory 0755 and SQLite's files 0644 for any local user to read.
//! SQLite gives its `-wal` and `-shm` files the database file's mode, so
//! the database is created 0600 before SQLite opens it.

use std::fs::Permissions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// Creates `dir` (0700) and the database file `db` (0600) if missing, and
/// takes group and other access away from both, and from every file
/// already in `dir`, if an earlier start left any.
pub fn prepare_state_dir(dir: &Path, db: &Path) -> Result<(), String> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        format!("cannot {what} {}: {e}", path.display())
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(|e| fail("create the state directory", dir, e))?;
    std::fs::set_permissions(dir, Permissions::from_mode(PRIVATE_DIR))
        .map_err(|e| fail("make private (0700) the state directory", dir, e))?;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_FILE)
        .open(db)
        .map_err(|e| fail("create the database", db, e))?;
    let entries = std::fs::read_dir(dir).map_err(|e| fail("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| fail("list", dir, e))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| fail("inspect", &path, e))?;
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            let private = meta.permissions().mode() & 0o700;
            std::fs::set_permissions(&path, Permissions::from_mode(private))
                .map_err(|e| fail("make private", &path, e))?;
        }
    }
    Ok(())
}

/// Takes an exclusive lock on the state directory, so a second daemon
/// pointed at the same database refuses to start instead of writing beside
/// the first (uids would then be given twice).
pub fn lock_state_dir(dir: &Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("nameserviced.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_FILE)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own; the lock lives as long as `file`.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "another nameserviced is using the state directory {}; stop it first",
            dir.display()
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_state_directory_left_open_is_made_private() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("state");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
        let wal = dir.join("nameservice.sqlite3-wal");
        std::fs::write(&wal, b"").expect("wal");
        std::fs::set_permissions(&wal, Permissions::from_mode(0o644)).expect("chmod");
        let db = dir.join("nameservice.sqlite3");

        prepare_state_dir(&dir, &db).expect("prepare");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&wal), 0o600);
        let lock = lock_state_dir(&dir).expect("lock");
        assert_eq!(mode(&dir.join("nameserviced.lock")), 0o600);
        drop(lock);
    }

    #[test]
    fn a_new_state_directory_is_private_whatever_the_umask() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b/state");
        let db = dir.join("nameservice.sqlite3");
        prepare_state_dir(&dir, &db).expect("prepare");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        // SQLite gives its WAL the database's mode.
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.pragma_update(None, "journal_mode", "wal")
            .expect("wal");
        conn.execute_batch("create table t (x); insert into t values (1);")
            .expect("write");
        assert_eq!(mode(&dir.join("nameservice.sqlite3-wal")), 0o600);
        assert_eq!(mode(&dir.join("nameservice.sqlite3-shm")), 0o600);
    }
}
