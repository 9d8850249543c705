//! The high-water mark: the highest uid and gid ever handed out, kept in a
//! small file beside the database and written durably (the file, then its
//! directory, fsynced) before the transaction that uses a new id commits.
//!
//! The database alone cannot promise that a uid is never given twice: a
//! restored backup, a rolled-back snapshot or a WAL that lost its tail all
//! take it back in time without it knowing, and the next new identity would
//! get a uid that owns someone else's files. The mark does not go back with
//! it: allocation never goes at or below it, and a database that is behind
//! it is detected at start-up (see [`StateCheck`]).
//!
//! The file also marks the state directory as initialised: a directory
//! that has it and an empty database lost its database.
//!
//! Imports only `store` (to read the database's own record).

use std::io::Write;
use std::ops::RangeInclusive;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

use crate::store::{self, IdKind};

/// The mark's file in the state directory.
pub const MARK_FILE: &str = "high-water";
/// Written by `nameservicectl confirm-restore`: the marks an administrator
/// accepted a database behind.
pub const CONFIRM_FILE: &str = "restore-confirmed";

/// The highest ids handed out (`None`: none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Marks {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// When the state directory was initialised (seconds since the epoch).
    pub initialised: i64,
}

impl Marks {
    pub fn get(&self, kind: IdKind) -> Option<u32> {
        match kind {
            IdKind::Uid => self.uid,
            IdKind::Gid => self.gid,
        }
    }

    fn set(&mut self, kind: IdKind, id: u32) {
        match kind {
            IdKind::Uid => self.uid = Some(id),
            IdKind::Gid => self.gid = Some(id),
        }
    }

    fn text(&self) -> String {
        let id = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "none".into());
        format!(
            "# nameserviced: ids at or below these were handed out and are never given again.\n\
             # Never edit them down, and never restore this file from a backup over a newer one.\n\
             uid {}\ngid {}\ninitialised {}\n",
            id(self.uid),
            id(self.gid),
            self.initialised
        )
    }

    fn parse(text: &str) -> Option<Marks> {
        let mut marks = Marks::default();
        let (mut uid, mut gid, mut initialised) = (false, false, false);
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (key, value) = line.split_once(' ')?;
            let id = || match value {
                "none" => Some(None),
                v => v.parse::<u32>().ok().map(Some),
            };
            match key {
                "uid" => (marks.uid, uid) = (id()?, true),
                "gid" => (marks.gid, gid) = (id()?, true),
                "initialised" => (marks.initialised, initialised) = (value.parse().ok()?, true),
                _ => return None,
            }
        }
        (uid && gid && initialised).then_some(marks)
    }
}

/// Reads the marks in `dir`; `Ok(None)` when the file does not exist.
pub fn read(dir: &Path, file: &str) -> Result<Option<Marks>, String> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Marks::parse(&text).map(Some).ok_or_else(|| {
            format!(
                "{} is damaged (it should hold uid, gid and initialised lines); it guards \
                 against giving a uid twice, so nameserviced will not guess: restore it from \
                 a backup taken after the newest account, or write the highest uid and gid \
                 ever handed out into it",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `marks` to `dir/file` so that it survives a crash or power loss:
/// a temporary file, fsynced, renamed over the old one, then the directory
/// fsynced (the rename is only durable once the directory is).
pub fn write(dir: &Path, file: &str, marks: &Marks) -> Result<(), String> {
    let path = dir.join(file);
    let temporary = dir.join(format!(".{file}.new"));
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| fail("write", e))?;
    out.write_all(marks.text().as_bytes())
        .map_err(|e| fail("write", e))?;
    out.sync_all().map_err(|e| fail("sync", e))?;
    drop(out);
    std::fs::rename(&temporary, &path).map_err(|e| fail("replace", e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail("sync the directory of", e))
}

/// The highest id the database itself accounts for: its counter's last
/// id or its highest row, whichever is higher. Ids outside `range` (a
/// configured `SharedGroupGid`) were never allocated and do not count.
pub fn database_record(
    c: &Connection,
    kind: IdKind,
    range: &RangeInclusive<u32>,
) -> Result<Option<u32>, store::DbError> {
    let counter = store::next_id(c, kind)?
        .and_then(|n| n.checked_sub(1))
        .filter(|n| range.contains(n));
    let highest = store::highest_id(c, kind, range)?;
    Ok(counter.max(highest))
}

/// The live mark, shared by every allocation, and whether allocation is
/// held back because the database is behind it.
pub struct HighWater {
    dir: PathBuf,
    marks: Mutex<Marks>,
    behind: Mutex<Option<(String, Marks)>>,
}

impl HighWater {
    pub fn new(dir: &Path, marks: Marks) -> Self {
        Self {
            dir: dir.to_owned(),
            marks: Mutex::new(marks),
            behind: Mutex::new(None),
        }
    }

    fn held_back(dir: &Path, marks: Marks, message: String) -> Self {
        let hw = Self::new(dir, marks);
        *hw.behind.lock().unwrap_or_else(|p| p.into_inner()) = Some((message, marks));
        hw
    }

    /// `Err` with the reason while new ids are held back; an
    /// administrator's confirmation (`nameservicectl confirm-restore`) is
    /// picked up here, without a restart.
    pub fn check_allowed(&self) -> Result<(), String> {
        let mut behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        let Some((message, marks)) = behind.as_ref() else {
            return Ok(());
        };
        if confirmed(&self.dir, marks) {
            tracing::warn!(
                "an administrator confirmed going on with a database behind the high-water \
                 mark; new ids start above it"
            );
            *behind = None;
            return Ok(());
        }
        Err(message.clone())
    }

    /// The reason new ids are held back, for health.
    pub fn held_back_because(&self) -> Option<String> {
        self.check_allowed().err()
    }

    pub fn marks(&self) -> Marks {
        *self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lowest id allocation may give: one above the mark.
    pub fn floor(&self, kind: IdKind) -> Option<u32> {
        match self.marks().get(kind) {
            Some(mark) => mark.checked_add(1),
            None => Some(0),
        }
    }

    /// Records that `id` is handed out, durably, before its transaction
    /// commits. An error means the id must not be used.
    pub fn raise(&self, kind: IdKind, id: u32) -> Result<(), String> {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if marks.get(kind).is_some_and(|mark| mark >= id) {
            return Ok(());
        }
        let mut raised = *marks;
        raised.set(kind, id);
        write(&self.dir, MARK_FILE, &raised)?;
        *marks = raised;
        Ok(())
    }
}

/// What start-up found when it compared the database with the mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateCheck {
    /// The database accounts for every id ever handed out.
    Consistent,
    /// The database is behind the mark (a restored backup, a lost WAL
    /// tail): lookups go on, new identities are refused until an
    /// administrator confirms with `nameservicectl confirm-restore`.
    Behind { message: String, marks: Marks },
}

/// Compares the database's record with `marks`, for both kinds of id.
pub fn compare(
    c: &Connection,
    marks: &Marks,
    db: &Path,
    uid_range: &RangeInclusive<u32>,
    gid_range: &RangeInclusive<u32>,
) -> Result<StateCheck, store::DbError> {
    let mut missing = Vec::new();
    for (kind, name, range) in [
        (IdKind::Uid, "uid", uid_range),
        (IdKind::Gid, "gid", gid_range),
    ] {
        let record = database_record(c, kind, range)?;
        if let Some(mark) = marks.get(kind) {
            if record.is_none_or(|r| r < mark) {
                let from = record.map(|r| r + 1).unwrap_or(0);
                missing.push(format!("{name}s {from}-{mark}"));
            }
        }
    }
    if missing.is_empty() {
        return Ok(StateCheck::Consistent);
    }
    Ok(StateCheck::Behind {
        message: format!(
            "the database {} is older than the high-water mark: {} were handed out but \
             are not in it (a restored backup, a rolled-back snapshot, or a lost write). \
             Lookups of the accounts it has go on; new identities are refused until an \
             administrator runs `nameservicectl check-restore` to see what is missing and \
             `nameservicectl confirm-restore` to go on. Ids up to the mark are never given \
             again either way",
            db.display(),
            missing.join(" and ")
        ),
        marks: *marks,
    })
}

/// Opens the database in `dir` and holds it against the mark: refuses a
/// directory that was initialised but lost its database (unless
/// `start_over`), and a database that fails its integrity check; sets up
/// (or follows) the mark; and notes a database that is behind it.
/// `had_data`: whether the database file held anything before start-up
/// touched it.
pub fn open_checked(
    dir: &Path,
    db: &Path,
    had_data: bool,
    start_over: bool,
    uid_range: &RangeInclusive<u32>,
    gid_range: &RangeInclusive<u32>,
) -> Result<(Connection, HighWater), String> {
    let marks = read(dir, MARK_FILE)?;
    if let (Some(marks), false, false) = (&marks, had_data, start_over) {
        return Err(format!(
            "the state directory {dir} was initialised (its high-water mark says uids up to {} \
             were handed out) but the database {db} is empty or missing. Restore the database \
             from a backup (stop nameserviced, copy the backup to {db}, start it; keep the \
             high-water file as it is), or, to start over with no accounts on purpose, run \
             `nameserviced --start-over` once: ids up to the mark are still never given again",
            marks
                .uid
                .map(|u| u.to_string())
                .unwrap_or_else(|| "none".into()),
            dir = dir.display(),
            db = db.display(),
        ));
    }
    let damaged = |why: String| {
        format!(
            "the database {} is damaged: {why}. nameserviced will not serve from it (answers \
             could be wrong and uids could be given twice). Stop here: restore the newest \
             backup (`nameservicectl backup` makes one; README, \"Backup and restore\") and \
             keep the high-water file in {}, which stops uids from being given twice after \
             the restore",
            db.display(),
            dir.display()
        )
    };
    let conn = store::open_writer(db).map_err(|e| damaged(e.to_string()))?;
    let problems = store::integrity_problems(&conn).map_err(|e| damaged(e.to_string()))?;
    if !problems.is_empty() {
        return Err(damaged(problems.join("; ")));
    }
    let record =
        |kind, range| database_record(&conn, kind, range).map_err(|e| damaged(e.to_string()));
    let (uid_record, gid_record) = (
        record(IdKind::Uid, uid_range)?,
        record(IdKind::Gid, gid_range)?,
    );
    let Some(mut marks) = marks else {
        // A new state directory, or one from before the mark existed: the
        // database is all there is to go on.
        let marks = Marks {
            uid: uid_record,
            gid: gid_record,
            initialised: now(),
        };
        write(dir, MARK_FILE, &marks)?;
        return Ok((conn, HighWater::new(dir, marks)));
    };
    // A database ahead of the mark: the mark file is older (restored on
    // its own); it follows the database up, never down.
    if uid_record > marks.uid || gid_record > marks.gid {
        marks.uid = marks.uid.max(uid_record);
        marks.gid = marks.gid.max(gid_record);
        write(dir, MARK_FILE, &marks)?;
    }
    match compare(&conn, &marks, db, uid_range, gid_range).map_err(|e| damaged(e.to_string()))? {
        StateCheck::Consistent => {
            let _ = std::fs::remove_file(dir.join(CONFIRM_FILE));
            Ok((conn, HighWater::new(dir, marks)))
        }
        StateCheck::Behind { .. } if start_over => {
            tracing::warn!(
                "starting over with an empty database, as --start-over asked; ids up to the \
                 high-water mark (uid {:?}, gid {:?}) are never given again",
                marks.uid,
                marks.gid
            );
            write(dir, CONFIRM_FILE, &marks)?;
            Ok((conn, HighWater::new(dir, marks)))
        }
        StateCheck::Behind { message, marks } if confirmed(dir, &marks) => {
            tracing::warn!("{message} (confirmed by an administrator; going on)");
            Ok((conn, HighWater::new(dir, marks)))
        }
        StateCheck::Behind { message, marks } => {
            tracing::error!("{message}");
            Ok((conn, HighWater::held_back(dir, marks, message)))
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether an administrator confirmed going on with a database behind
/// `marks` (the confirmation names the marks it accepted).
pub fn confirmed(dir: &Path, marks: &Marks) -> bool {
    matches!(read(dir, CONFIRM_FILE), Ok(Some(c)) if c.uid == marks.uid && c.gid == marks.gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path(), MARK_FILE).expect("read"), None);
        let marks = Marks {
            uid: Some(1_000_042),
            gid: None,
            initialised: 1_700_000_000,
        };
        write(dir.path(), MARK_FILE, &marks).expect("write");
        assert_eq!(read(dir.path(), MARK_FILE).expect("read"), Some(marks));
        for damaged in ["", "uid 5\n", "uid five\ngid 1\ninitialised 1\n", "\0\0\0"] {
            std::fs::write(dir.path().join(MARK_FILE), damaged).expect("damage");
            let e = read(dir.path(), MARK_FILE).expect_err(damaged);
            assert!(e.contains("is damaged"), "{e}");
        }
    }

    #[test]
    fn the_mark_only_goes_up_and_sets_the_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hw = HighWater::new(dir.path(), Marks::default());
        assert_eq!(hw.floor(IdKind::Uid), Some(0));
        hw.raise(IdKind::Uid, 2000).expect("raise");
        hw.raise(IdKind::Uid, 1500).expect("lower is a no-op");
        assert_eq!(hw.marks().uid, Some(2000));
        assert_eq!(hw.floor(IdKind::Uid), Some(2001));
        assert_eq!(hw.floor(IdKind::Gid), Some(0));
        let on_disk = read(dir.path(), MARK_FILE).expect("read").expect("file");
        assert_eq!(on_disk.uid, Some(2000));
        hw.raise(IdKind::Uid, u32::MAX).expect("raise");
        assert_eq!(
            hw.floor(IdKind::Uid),
            None,
            "nothing is left above the mark"
        );
    }

    #[test]
    fn a_database_behind_the_mark_is_named_with_the_missing_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        let conn = store::open_writer(&db).expect("open");
        store::set_next_id(&conn, IdKind::Uid, 1010).expect("counter");
        let marks = Marks {
            uid: Some(1009),
            gid: None,
            initialised: 0,
        };
        let range = 1000..=60000;
        let cmp = |m: &Marks| compare(&conn, m, &db, &range, &range).expect("compare");
        assert_eq!(cmp(&marks), StateCheck::Consistent);
        let ahead = Marks {
            uid: Some(1020),
            ..marks
        };
        let StateCheck::Behind { message, .. } = cmp(&ahead) else {
            panic!("a database behind the mark must be noticed");
        };
        assert!(message.contains("uids 1010-1020"), "{message}");
        assert!(!confirmed(dir.path(), &ahead));
        write(dir.path(), CONFIRM_FILE, &ahead).expect("confirm");
        assert!(confirmed(dir.path(), &ahead));
        assert!(
            !confirmed(dir.path(), &marks),
            "a confirmation names its marks"
        );
    }
}
