//! The high-water mark: the highest uid and gid ever handed out, kept in a
//! small file beside the database and written durably (the file, then its
//! directory, fsynced) before a provisioning that used a new id is
//! acknowledged. Allocation raises the mark in memory, under the writer
//! lock, so the next allocation starts above it; [`HighWater::sync`]
//! makes it durable after the commit, and concurrent provisionings share
//! one write (group commit), so the mark costs little throughput. A crash
//! between the commit and the write leaves the database ahead of the
//! mark, which start-up notices and follows; an id that was committed but
//! never acknowledged may be lost with a lost WAL tail, and nobody holds
//! it.
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
/// id or its highest row, whichever is higher, whatever the configured
/// range is now. The shared group's row is left out (its gid may be
/// configured, not allocated; an allocated one is in the counter).
pub fn database_record(c: &Connection, kind: IdKind) -> Result<Option<u32>, store::DbError> {
    let counter = store::next_id(c, kind)?.and_then(|n| n.checked_sub(1));
    let highest = store::highest_id(c, kind)?;
    Ok(counter.max(highest))
}

/// Brings the database's counters up to the mark, so that it accounts for
/// every id the mark does: after an administrator accepted a database
/// behind it, or after a transaction that had raised the mark rolled
/// back (a refused group, a full disk).
pub fn settle(c: &Connection, marks: &Marks) -> Result<(), store::DbError> {
    for kind in [IdKind::Uid, IdKind::Gid] {
        if let Some(mark) = marks.get(kind) {
            let next = u64::from(mark) + 1;
            if store::next_id(c, kind)?.is_none_or(|n| u64::from(n) < next) {
                store::set_next_id(c, kind, next)?;
            }
        }
    }
    Ok(())
}

/// The live mark, shared by every allocation, and whether allocation is
/// held back because the database is behind it.
pub struct HighWater {
    dir: PathBuf,
    /// The mark as allocation sees it (raised before commit).
    marks: Mutex<Marks>,
    /// The mark as of the last commit: what may be made durable (an id
    /// raised by a transaction still open is not in the database yet).
    committed: Mutex<Marks>,
    /// The mark as the file holds it; its lock also makes writers wait for
    /// the write in progress, which then covers their ids too.
    durable: Mutex<Marks>,
    behind: Mutex<Option<(String, Marks)>>,
}

impl HighWater {
    /// `marks` as read from (or just written to) the file.
    pub fn new(dir: &Path, marks: Marks) -> Self {
        Self {
            dir: dir.to_owned(),
            marks: Mutex::new(marks),
            committed: Mutex::new(marks),
            durable: Mutex::new(marks),
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
    /// picked up here, without a restart: then `Ok(true)`, and the caller
    /// must [`settle`] the database in its transaction.
    pub fn check_allowed(&self) -> Result<bool, String> {
        let mut behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        let Some((message, marks)) = behind.as_ref() else {
            return Ok(false);
        };
        if confirmed(&self.dir, marks) {
            tracing::warn!(
                "an administrator confirmed going on with a database behind the high-water \
                 mark; new ids start above it"
            );
            let _ = std::fs::remove_file(self.dir.join(CONFIRM_FILE));
            *behind = None;
            return Ok(true);
        }
        Err(message.clone())
    }

    /// Whether new ids are held back now (without taking a confirmation:
    /// [`HighWater::check_allowed`] does that).
    pub fn is_held_back(&self) -> bool {
        let behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        behind
            .as_ref()
            .is_some_and(|(_, marks)| !confirmed(&self.dir, marks))
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

    /// Records that `id` is handed out: no allocation goes at or below it
    /// from now on. Durable only after [`HighWater::sync`].
    pub fn raise(&self, kind: IdKind, id: u32) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if marks.get(kind).is_none_or(|mark| mark < id) {
            marks.set(kind, id);
        }
    }

    /// After a commit (or a [`settle`]), still under the writer lock:
    /// every id raised so far is in the database.
    pub fn publish(&self) {
        let marks = self.marks();
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = marks;
    }

    /// Makes the mark durable up to every committed id; called before any
    /// provisioning is acknowledged. An error means the answer must not be
    /// given (the id is still never reused: it stays raised).
    pub fn sync(&self) -> Result<(), String> {
        let mut durable = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = *self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if *durable == wanted {
            return Ok(());
        }
        write(&self.dir, MARK_FILE, &wanted)?;
        *durable = wanted;
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
        let record = database_record(c, kind)?;
        if let Some(mark) = marks.get(kind) {
            if record.is_none_or(|r| r < mark) {
                let from = record.map(|r| r + 1).unwrap_or(*range.start()).min(mark);
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
    if start_over && had_data {
        return Err(format!(
            "--start-over is only for a state directory whose database is empty or missing, \
             and {} holds data: start without it (a database behind the high-water mark is \
             served, and `nameservicectl confirm-restore` accepts it)",
            db.display()
        ));
    }
    if let (Some(marks), false, false) = (&marks, had_data, start_over) {
        return Err(format!(
            "the state directory {dir} was initialised (its high-water mark says uids up to {} \
             were handed out) but the database {db} is empty or missing. Restore the database \
             from a backup (stop nameserviced, remove {db}-wal and {db}-shm, copy the backup \
             to {db}, start it; keep the high-water file as it is), or, to start over with no accounts on purpose, run \
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
    // Checked read-only first: migrations must not write into a damaged file.
    if had_data {
        let reader = store::open_reader(db).map_err(|e| damaged(e.to_string()))?;
        let problems = store::integrity_problems(&reader).map_err(|e| damaged(e.to_string()))?;
        if !problems.is_empty() {
            return Err(damaged(problems.join("; ")));
        }
    }
    let conn = store::open_writer(db).map_err(|e| damaged(e.to_string()))?;
    let record = |kind| database_record(&conn, kind).map_err(|e| damaged(e.to_string()));
    let (uid_record, gid_record) = (record(IdKind::Uid)?, record(IdKind::Gid)?);
    let Some(mut marks) = marks else {
        // A new state directory, or one from before the mark existed: the
        // database is all there is to go on.
        let marks = Marks {
            uid: uid_record,
            gid: gid_record,
            initialised: store::unix_now(),
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
            settle(&conn, &marks).map_err(|e| damaged(e.to_string()))?;
            Ok((conn, HighWater::new(dir, marks)))
        }
        StateCheck::Behind { message, marks } if confirmed(dir, &marks) => {
            tracing::warn!("{message} (confirmed by an administrator; going on)");
            settle(&conn, &marks).map_err(|e| damaged(e.to_string()))?;
            let _ = std::fs::remove_file(dir.join(CONFIRM_FILE));
            Ok((conn, HighWater::new(dir, marks)))
        }
        StateCheck::Behind { message, marks } => {
            tracing::error!("{message}");
            Ok((conn, HighWater::held_back(dir, marks, message)))
        }
    }
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
        hw.raise(IdKind::Uid, 2000);
        hw.raise(IdKind::Uid, 1500);
        assert_eq!(hw.marks().uid, Some(2000), "lowering is a no-op");
        assert_eq!(hw.floor(IdKind::Uid), Some(2001));
        assert_eq!(hw.floor(IdKind::Gid), Some(0));
        assert_eq!(
            read(dir.path(), MARK_FILE).expect("read"),
            None,
            "not durable yet"
        );
        hw.sync().expect("nothing committed yet");
        assert_eq!(
            read(dir.path(), MARK_FILE).expect("read"),
            None,
            "uncommitted ids wait"
        );
        hw.publish();
        hw.sync().expect("sync");
        let on_disk = read(dir.path(), MARK_FILE).expect("read").expect("file");
        assert_eq!(on_disk.uid, Some(2000));
        hw.raise(IdKind::Uid, u32::MAX);
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

    #[test]
    fn settling_brings_the_counters_to_the_mark_and_the_shared_group_does_not_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        let conn = store::open_writer(&db).expect("open");
        store::insert_group(
            &conn,
            &store::GroupRow {
                gid: 9_000_000,
                name: "shared".into(),
                provider: store::SYSTEM_PROVIDER.into(),
                unique_id: "shared:shared".into(),
                idp_name: "shared".into(),
            },
            0,
        )
        .expect("shared group");
        assert_eq!(database_record(&conn, IdKind::Gid).expect("record"), None);
        let marks = Marks {
            uid: Some(2041),
            gid: Some(3007),
            initialised: 0,
        };
        settle(&conn, &marks).expect("settle");
        assert_eq!(
            database_record(&conn, IdKind::Uid).expect("uid"),
            Some(2041)
        );
        assert_eq!(
            database_record(&conn, IdKind::Gid).expect("gid"),
            Some(3007)
        );
        let range = 1..=5000;
        assert_eq!(
            compare(&conn, &marks, &db, &range, &range).expect("compare"),
            StateCheck::Consistent
        );
        settle(
            &conn,
            &Marks {
                uid: Some(10),
                ..marks
            },
        )
        .expect("lower");
        assert_eq!(
            database_record(&conn, IdKind::Uid).expect("uid"),
            Some(2041),
            "settling never lowers a counter"
        );
    }
}
