//! What an administrator does with a state directory from outside the
//! daemon (as root, through `nameservicectl`): take a consistent backup,
//! see what a restored database is missing against the high-water mark,
//! and confirm going on with it.
//!
//! Imports `store` and `high_water`.

use std::ops::RangeInclusive;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use rusqlite::{Connection, OpenFlags, MAIN_DB};

use crate::high_water::{self, Marks, CONFIRM_FILE, MARK_FILE};
use crate::store::IdKind;

const DATABASE: &str = "nameservice.sqlite3";

fn open_read_only(db: &Path) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Copies the database with SQLite's backup API (a consistent snapshot,
/// while the daemon keeps running) and the high-water mark into `dest`, a
/// new private directory.
pub fn backup(state_dir: &Path, dest: &Path) -> Result<String, String> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dest)
        .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let source = open_read_only(&state_dir.join(DATABASE))?;
    let target = dest.join(DATABASE);
    source
        .backup(MAIN_DB, &target, None::<fn(rusqlite::backup::Progress)>)
        .map_err(|e| format!("cannot back up into {}: {e}", target.display()))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    // The mark as it was after the snapshot: at least as high as it.
    let marks = high_water::read(state_dir, MARK_FILE)?.unwrap_or_default();
    high_water::write(dest, MARK_FILE, &marks)?;
    Ok(format!(
        "backed up {} to {} (high-water mark: uid {}, gid {})",
        state_dir.join(DATABASE).display(),
        dest.display(),
        show(marks.uid),
        show(marks.gid)
    ))
}

fn show(id: Option<u32>) -> String {
    id.map(|i| i.to_string()).unwrap_or_else(|| "none".into())
}

/// What the database in `state_dir` accounts for against the mark: one
/// line per kind of id, and whether the daemon is holding back.
pub fn restore_report(
    state_dir: &Path,
    uid_range: &RangeInclusive<u32>,
    gid_range: &RangeInclusive<u32>,
) -> Result<(String, bool), String> {
    let conn = open_read_only(&state_dir.join(DATABASE))?;
    let marks = high_water::read(state_dir, MARK_FILE)?.ok_or_else(|| {
        format!(
            "{} has no high-water mark yet (nameserviced writes it at its next start)",
            state_dir.display()
        )
    })?;
    let mut report = String::new();
    let mut behind = false;
    for (kind, name, range) in [
        (IdKind::Uid, "uid", uid_range),
        (IdKind::Gid, "gid", gid_range),
    ] {
        let record = high_water::database_record(&conn, kind).map_err(|e| e.to_string())?;
        let mark = marks.get(kind);
        report.push_str(&format!(
            "{name}s: the database accounts for up to {}, the high-water mark is {}",
            show(record),
            show(mark)
        ));
        match mark {
            Some(mark) if record.is_none_or(|r| r < mark) => {
                behind = true;
                let from = record.map(|r| r + 1).unwrap_or(*range.start()).min(mark);
                report.push_str(&format!(
                    ": {name}s {from}-{mark} were handed out but are not in this database. \
                     Files owned by them (find <shared filesystem> -{name} N) belonged to \
                     accounts it lost; they are never given to anyone again\n"
                ));
            }
            _ => report.push_str(": nothing missing\n"),
        }
    }
    Ok((report, behind))
}

/// Records that an administrator accepts the database as it is; the
/// daemon then hands out new ids again, all above the mark.
pub fn confirm_restore(state_dir: &Path) -> Result<Marks, String> {
    let marks = high_water::read(state_dir, MARK_FILE)?
        .ok_or_else(|| format!("{} has no high-water mark", state_dir.display()))?;
    high_water::write(state_dir, CONFIRM_FILE, &marks)?;
    Ok(marks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;

    #[test]
    fn a_backup_is_consistent_and_a_restore_is_reported_and_confirmed() {
        let state = tempfile::tempdir().expect("tempdir");
        let db = state.path().join(DATABASE);
        let conn = store::open_writer(&db).expect("open");
        store::set_next_id(&conn, IdKind::Uid, 1005).expect("counter");
        high_water::write(
            state.path(),
            MARK_FILE,
            &Marks {
                uid: Some(1004),
                gid: None,
                initialised: 1,
            },
        )
        .expect("mark");
        let range = 1000..=60000;
        let (report, behind) = restore_report(state.path(), &range, &range).expect("report");
        assert!(!behind, "{report}");

        let copies = tempfile::tempdir().expect("tempdir");
        let dest = copies.path().join("b1");
        backup(state.path(), &dest).expect("backup");
        let copy = open_read_only(&dest.join(DATABASE)).expect("copy");
        assert_eq!(
            store::next_id(&copy, IdKind::Uid).expect("read"),
            Some(1005)
        );

        // More accounts after the backup, then the backup comes back.
        store::set_next_id(&conn, IdKind::Uid, 1011).expect("counter");
        let mut marks = high_water::read(state.path(), MARK_FILE)
            .expect("read")
            .expect("mark");
        marks.uid = Some(1010);
        high_water::write(state.path(), MARK_FILE, &marks).expect("mark");
        drop(conn);
        std::fs::copy(dest.join(DATABASE), &db).expect("restore");
        let (report, behind) = restore_report(state.path(), &range, &range).expect("report");
        assert!(behind, "{report}");
        assert!(report.contains("uids 1005-1010"), "{report}");
        let confirmed = confirm_restore(state.path()).expect("confirm");
        assert!(high_water::confirmed(state.path(), &confirmed));
    }
}
