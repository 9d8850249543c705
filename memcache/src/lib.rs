//! The account cache file nameserviced publishes and libnss_connect maps, so
//! that a lookup of a known account needs no round trip to the daemon.
//!
//! The model is SSSD's memcache, simplified by making every file immutable
//! except for one counter:
//!
//! - nameserviced writes a complete snapshot to a temporary file and renames
//!   it into place (readers never see half a file);
//! - the first page is the header, and in it the 64-bit sequence counter is
//!   the only word ever written after creation: even means valid, odd means
//!   retired. Any change to the accounts retires the current file *before*
//!   the change is acknowledged, so from then on readers fall back to asking
//!   the daemon, which knows the change; a fresh snapshot follows shortly;
//! - readers check the counter, copy the record out (never hand out pointers
//!   into the file), then check the counter again;
//! - every offset and length is bounds-checked against the size of the
//!   mapping; anything out of place is a *doubt*, and a doubt is answered by
//!   the daemon, never from the file;
//! - a miss is also answered by the daemon: the file holds no negative
//!   answers;
//! - the hash is keyed SipHash-1-3 with a random key per file, so names
//!   cannot be chosen to collide (hash flooding).
//!
//! Layout (little-endian; offsets are absolute file offsets):
//!
//! ```text
//! 0     header page (HEADER_SIZE bytes), see the H_* constants
//! 4096  four hash tables of u32 record offsets (0 = empty slot):
//!       users by name, users by uid, groups by name, groups by gid
//! ...   records, 4-byte aligned:
//!       user:  kind=1 u8, flags u8, 0 u16, total_len u32, uid u32, gid u32,
//!              name_len u16, gecos_len u16, home_len u16, shell_len u16,
//!              ngids u32, name, gecos, home, shell, pad to 4, gids u32 × ngids
//!       group: kind=2 u8, flags u8, 0 u16, total_len u32, gid u32,
//!              name_len u16, 0 u16, nmembers u32, name,
//!              (len u16, member) × nmembers, pad to 4
//!       each record ends with a u64 keyed SipHash of the bytes before it
//!       (total_len counts it)
//! ```

use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use siphasher::sip::SipHasher13;

pub const MAGIC: [u8; 8] = *b"CNSMCv01";
pub const VERSION: u32 = 1;
/// The header has a page to itself, so the data pages are never written
/// after creation and can be read as plain immutable bytes.
pub const HEADER_SIZE: usize = 4096;
/// Readers refuse anything bigger (a hostile size must not exhaust memory).
pub const MAX_FILE_SIZE: usize = 1 << 30;

const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_HEADER_SIZE: usize = 12;
const H_SEQ: usize = 16;
const H_FILE_SIZE: usize = 24;
const H_K0: usize = 32;
const H_K1: usize = 40;
const H_GENERATION: usize = 48;
const H_CREATED: usize = 56;
const H_TABLES: usize = 64; // 4 × (offset u32, buckets u32)
const H_RECORDS: usize = 96; // start u32, end u32
const H_COUNTS: usize = 104; // users u32, groups u32

const KIND_USER: u8 = 1;
const KIND_GROUP: u8 = 2;
const USER_FIXED: usize = 28;
const GROUP_FIXED: usize = 20;

const TAG_USER_NAME: u8 = b'n';
const TAG_UID: u8 = b'u';
const TAG_GROUP_NAME: u8 = b'N';
const TAG_GID: u8 = b'g';
const TAG_RECORD: u8 = b'r';
const CHECKSUM_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
    /// What initgroups adds: every group listing the user, primary excluded
    /// or not (the caller skips the primary gid).
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// What the file says about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Hit(T),
    /// Not in the file: ask the daemon (the file holds no negative answers).
    Miss,
    /// Retired, or something in the file is out of place: ask the daemon.
    Doubt,
}

fn hash(k0: u64, k1: u64, tag: u8, key: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(k0, k1);
    h.write_u8(tag);
    h.write(key);
    h.finish()
}

// ---------------------------------------------------------------------------
// Writing (nameserviced)
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub struct BuildError(pub String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

fn len16(what: &str, s: &str) -> Result<u16, BuildError> {
    u16::try_from(s.len())
        .map_err(|_| BuildError(format!("{what} {s:.40?}… is too long for the cache")))
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn buckets_for(n: usize) -> usize {
    (n.saturating_mul(2)).max(8).next_power_of_two()
}

/// Finishes the record that starts at `at`: sets its length and appends a
/// keyed checksum over it, so that a damaged byte anywhere in a record (a
/// home directory, a gid) makes the record a doubt instead of an answer.
fn seal(buf: &mut Vec<u8>, at: usize, k0: u64, k1: u64) {
    let total = (buf.len() - at + CHECKSUM_LEN) as u32;
    put_u32(buf, at + 4, total);
    let sum = hash(k0, k1, TAG_RECORD, &buf[at..]);
    buf.extend_from_slice(&sum.to_le_bytes());
}

struct Table {
    offset: usize,
    buckets: usize,
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn insert(buf: &mut [u8], table: &Table, h: u64, record: u32) {
    let mask = table.buckets - 1;
    let mut slot = (h as usize) & mask;
    // Load factor ≤ 0.5, so a free slot always exists.
    loop {
        let at = table.offset + slot * 4;
        if buf[at..at + 4] == [0, 0, 0, 0] {
            put_u32(buf, at, record);
            return;
        }
        slot = (slot + 1) & mask;
    }
}

/// Serialises a snapshot. `seed` keys the hash; use fresh random bytes for
/// every file.
pub fn build(
    users: &[User],
    groups: &[Group],
    seed: (u64, u64),
    generation: u64,
    created_unix: i64,
) -> Result<Vec<u8>, BuildError> {
    let (k0, k1) = seed;
    let tables: Vec<Table> = {
        let mut offset = HEADER_SIZE;
        [users.len(), users.len(), groups.len(), groups.len()]
            .iter()
            .map(|n| {
                let t = Table {
                    offset,
                    buckets: buckets_for(*n),
                };
                offset += t.buckets * 4;
                t
            })
            .collect()
    };
    let records_start = tables
        .last()
        .map(|t| t.offset + t.buckets * 4)
        .unwrap_or(HEADER_SIZE);
    let mut buf = vec![0u8; records_start];

    for user in users {
        let at = buf.len();
        let record =
            u32::try_from(at).map_err(|_| BuildError("the cache would exceed 4 GiB".into()))?;
        buf.extend_from_slice(&[KIND_USER, 0, 0, 0, 0, 0, 0, 0]);
        buf.extend_from_slice(&user.uid.to_le_bytes());
        buf.extend_from_slice(&user.gid.to_le_bytes());
        for (what, s) in [
            ("name", &user.name),
            ("gecos", &user.gecos),
            ("home", &user.home),
            ("shell", &user.shell),
        ] {
            buf.extend_from_slice(&len16(what, s)?.to_le_bytes());
        }
        let ngids =
            u32::try_from(user.groups.len()).map_err(|_| BuildError("too many groups".into()))?;
        buf.extend_from_slice(&ngids.to_le_bytes());
        for s in [&user.name, &user.gecos, &user.home, &user.shell] {
            buf.extend_from_slice(s.as_bytes());
        }
        pad4(&mut buf);
        for gid in &user.groups {
            buf.extend_from_slice(&gid.to_le_bytes());
        }
        seal(&mut buf, at, k0, k1);
        insert(
            &mut buf,
            &tables[0],
            hash(k0, k1, TAG_USER_NAME, user.name.as_bytes()),
            record,
        );
        insert(
            &mut buf,
            &tables[1],
            hash(k0, k1, TAG_UID, &user.uid.to_le_bytes()),
            record,
        );
    }
    for group in groups {
        let at = buf.len();
        let record =
            u32::try_from(at).map_err(|_| BuildError("the cache would exceed 4 GiB".into()))?;
        buf.extend_from_slice(&[KIND_GROUP, 0, 0, 0, 0, 0, 0, 0]);
        buf.extend_from_slice(&group.gid.to_le_bytes());
        buf.extend_from_slice(&len16("group name", &group.name)?.to_le_bytes());
        buf.extend_from_slice(&[0, 0]);
        let n = u32::try_from(group.members.len())
            .map_err(|_| BuildError("too many members".into()))?;
        buf.extend_from_slice(&n.to_le_bytes());
        buf.extend_from_slice(group.name.as_bytes());
        for m in &group.members {
            buf.extend_from_slice(&len16("member", m)?.to_le_bytes());
            buf.extend_from_slice(m.as_bytes());
        }
        pad4(&mut buf);
        seal(&mut buf, at, k0, k1);
        insert(
            &mut buf,
            &tables[2],
            hash(k0, k1, TAG_GROUP_NAME, group.name.as_bytes()),
            record,
        );
        insert(
            &mut buf,
            &tables[3],
            hash(k0, k1, TAG_GID, &group.gid.to_le_bytes()),
            record,
        );
    }
    if buf.len() > MAX_FILE_SIZE {
        return Err(BuildError(format!(
            "the cache would be {} bytes, over the {MAX_FILE_SIZE} limit",
            buf.len()
        )));
    }
    let end = buf.len();
    buf[H_MAGIC..H_MAGIC + 8].copy_from_slice(&MAGIC);
    put_u32(&mut buf, H_VERSION, VERSION);
    put_u32(&mut buf, H_HEADER_SIZE, HEADER_SIZE as u32);
    put_u64(&mut buf, H_SEQ, 2);
    put_u64(&mut buf, H_FILE_SIZE, end as u64);
    put_u64(&mut buf, H_K0, k0);
    put_u64(&mut buf, H_K1, k1);
    put_u64(&mut buf, H_GENERATION, generation);
    put_u64(&mut buf, H_CREATED, created_unix as u64);
    for (i, t) in tables.iter().enumerate() {
        put_u32(&mut buf, H_TABLES + i * 8, t.offset as u32);
        put_u32(&mut buf, H_TABLES + i * 8 + 4, t.buckets as u32);
    }
    put_u32(&mut buf, H_RECORDS, records_start as u32);
    put_u32(&mut buf, H_RECORDS + 4, end as u32);
    put_u32(&mut buf, H_COUNTS, users.len() as u32);
    put_u32(&mut buf, H_COUNTS + 4, groups.len() as u32);
    Ok(buf)
}

/// Writes `bytes` beside `path` and renames it into place, so a reader
/// opening `path` sees either the old file or the whole new one. Returns the
/// new file, kept open by the writer to retire it later.
pub fn publish(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)?;
    let result = (|| {
        file.write_all(bytes)?;
        // The mode is checked by readers; do not leave it to the umask.
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| file)
}

/// Marks a published file as retired: every reader that has it mapped
/// stops answering from it at its next lookup.
pub fn retire(file: &File) -> io::Result<()> {
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, H_SEQ as u64)?;
    let seq = u64::from_le_bytes(word);
    if seq % 2 == 0 {
        file.write_all_at(&(seq + 1).to_le_bytes(), H_SEQ as u64)?;
    }
    Ok(())
}

/// Retires whatever file is at `path` (left by an earlier daemon, perhaps
/// one that was killed), so long-lived readers stop trusting it.
pub fn retire_path(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) if file.metadata()?.len() >= HEADER_SIZE as u64 => retire(&file),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------
// Reading (libnss_connect)
// ---------------------------------------------------------------------------

/// Why a file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    TooSmall,
    TooBig,
    Misaligned,
    BadMagic,
    BadVersion,
    Retired,
    Inconsistent(&'static str),
}

#[derive(Clone, Copy)]
struct TableRef {
    offset: usize,
    buckets: usize,
}

/// A validated view of one cache file in memory.
///
/// The header page is read only through raw pointers (its counter is written
/// by the daemon while readers run); the data pages, immutable after
/// creation, are read as a byte slice.
pub struct Snapshot<'a> {
    seq: &'a AtomicU64,
    seq_at_open: u64,
    /// The whole file; indices below HEADER_SIZE are never read through it.
    data: &'a [u8],
    k0: u64,
    k1: u64,
    tables: [TableRef; 4],
    records: (usize, usize),
    /// Users and groups the header says the file holds.
    counts: (usize, usize),
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Copies a header word out through a raw pointer.
///
/// # Safety
/// `base + at + size_of::<T>()` must be within the mapping.
unsafe fn header_word<T: Copy>(base: *const u8, at: usize) -> T {
    std::ptr::read_unaligned(base.add(at) as *const T)
}

impl<'a> Snapshot<'a> {
    /// Validates a mapped file.
    ///
    /// # Safety
    /// `base` must point to `len` readable bytes that stay mapped for `'a`,
    /// and nothing may write to them except the 8-byte counter at offset 16
    /// (which is read atomically).
    pub unsafe fn from_raw(base: *const u8, len: usize) -> Result<Snapshot<'a>, Invalid> {
        if len < HEADER_SIZE {
            return Err(Invalid::TooSmall);
        }
        if len > MAX_FILE_SIZE {
            return Err(Invalid::TooBig);
        }
        if !(base as usize + H_SEQ).is_multiple_of(8) {
            return Err(Invalid::Misaligned);
        }
        if header_word::<[u8; 8]>(base, H_MAGIC) != MAGIC {
            return Err(Invalid::BadMagic);
        }
        if u32::from_le(header_word(base, H_VERSION)) != VERSION
            || u32::from_le(header_word(base, H_HEADER_SIZE)) as usize != HEADER_SIZE
        {
            return Err(Invalid::BadVersion);
        }
        // SAFETY: aligned (checked above), in bounds, and only ever accessed atomically.
        let seq = AtomicU64::from_ptr(base.add(H_SEQ) as *mut u64);
        let seq_at_open = u64::from_le(seq.load(Ordering::Acquire));
        if seq_at_open % 2 == 1 {
            return Err(Invalid::Retired);
        }
        let file_size = u64::from_le(header_word(base, H_FILE_SIZE));
        if file_size != len as u64 {
            return Err(Invalid::Inconsistent("file size differs from the header"));
        }
        let data = std::slice::from_raw_parts(base, len);
        let word = |at: usize| u32::from_le(header_word::<u32>(base, at)) as usize;
        let mut tables = [TableRef {
            offset: 0,
            buckets: 0,
        }; 4];
        for (i, t) in tables.iter_mut().enumerate() {
            let offset = word(H_TABLES + i * 8);
            let buckets = word(H_TABLES + i * 8 + 4);
            let end = buckets.checked_mul(4).and_then(|b| b.checked_add(offset));
            if offset < HEADER_SIZE
                || !offset.is_multiple_of(4)
                || !buckets.is_power_of_two()
                || end.is_none_or(|e| e > len)
            {
                return Err(Invalid::Inconsistent("hash table out of bounds"));
            }
            *t = TableRef { offset, buckets };
        }
        let records = (word(H_RECORDS), word(H_RECORDS + 4));
        let counts = (word(H_COUNTS), word(H_COUNTS + 4));
        if records.0 < HEADER_SIZE || records.0 > records.1 || records.1 > len {
            return Err(Invalid::Inconsistent("record area out of bounds"));
        }
        Ok(Snapshot {
            seq,
            seq_at_open,
            data,
            k0: u64::from_le(header_word(base, H_K0)),
            k1: u64::from_le(header_word(base, H_K1)),
            tables,
            records,
            counts,
        })
    }

    /// True once the daemon retired this file (or replaced its counter).
    pub fn is_retired(&self) -> bool {
        u64::from_le(self.seq.load(Ordering::Acquire)) != self.seq_at_open
    }

    fn probe<T>(
        &self,
        table: usize,
        tag: u8,
        key: &[u8],
        read: impl Fn(usize) -> Option<T>,
        matches: impl Fn(&T) -> bool,
    ) -> Answer<T> {
        if self.is_retired() {
            return Answer::Doubt;
        }
        let t = self.tables[table];
        let mask = t.buckets - 1;
        let mut slot = (hash(self.k0, self.k1, tag, key) as usize) & mask;
        for _ in 0..t.buckets {
            let Some(offset) = read_u32(self.data, t.offset + slot * 4) else {
                return Answer::Doubt;
            };
            if offset == 0 {
                return if self.is_retired() {
                    Answer::Doubt
                } else {
                    Answer::Miss
                };
            }
            let Some(record) = read(offset as usize) else {
                return Answer::Doubt;
            };
            if matches(&record) {
                // The record was copied out; it is good only if the file
                // was not retired meanwhile.
                return if self.is_retired() {
                    Answer::Doubt
                } else {
                    Answer::Hit(record)
                };
            }
            slot = (slot + 1) & mask;
        }
        // A table with no empty slot was not written by nameserviced.
        Answer::Doubt
    }

    /// The bytes of one record, checked against the record area.
    fn record(&self, offset: usize, kind: u8, fixed: usize) -> Option<&'a [u8]> {
        if offset < self.records.0 || !offset.is_multiple_of(4) || offset >= self.records.1 {
            return None;
        }
        let head = self.data.get(offset..offset.checked_add(8)?)?;
        if head[0] != kind {
            return None;
        }
        let total = read_u32(head, 4)? as usize;
        let end = offset.checked_add(total)?;
        if total < fixed + CHECKSUM_LEN || end > self.records.1 {
            return None;
        }
        let body = self.data.get(offset..end - CHECKSUM_LEN)?;
        let stored = u64::from_le_bytes(self.data.get(end - CHECKSUM_LEN..end)?.try_into().ok()?);
        (hash(self.k0, self.k1, TAG_RECORD, body) == stored).then_some(body)
    }

    fn user_at(&self, offset: usize) -> Option<User> {
        let r = self.record(offset, KIND_USER, USER_FIXED)?;
        let uid = read_u32(r, 8)?;
        let gid = read_u32(r, 12)?;
        // The nameservice never hands out uid 0; a file that says so is not ours.
        if uid == 0 {
            return None;
        }
        let lens = [
            read_u16(r, 16)?,
            read_u16(r, 18)?,
            read_u16(r, 20)?,
            read_u16(r, 22)?,
        ];
        let ngids = read_u32(r, 24)? as usize;
        let mut at = USER_FIXED;
        let mut fields = Vec::with_capacity(4);
        for len in lens {
            let bytes = r.get(at..at + len as usize)?;
            fields.push(clean_str(bytes)?);
            at += len as usize;
        }
        at = at.checked_add(3)? & !3;
        let gid_bytes = r.get(at..at.checked_add(ngids.checked_mul(4)?)?)?;
        let groups = gid_bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut fields = fields.into_iter();
        Some(User {
            name: fields.next()?,
            uid,
            gid,
            gecos: fields.next()?,
            home: fields.next()?,
            shell: fields.next()?,
            groups,
        })
    }

    fn group_at(&self, offset: usize) -> Option<Group> {
        let r = self.record(offset, KIND_GROUP, GROUP_FIXED)?;
        let gid = read_u32(r, 8)?;
        let name_len = read_u16(r, 12)? as usize;
        let n = read_u32(r, 16)? as usize;
        let name = clean_str(r.get(GROUP_FIXED..GROUP_FIXED + name_len)?)?;
        let mut at = GROUP_FIXED + name_len;
        // Each member takes at least two bytes: a hostile count cannot make
        // us reserve more than the record could hold.
        let mut members = Vec::with_capacity(n.min(r.len() / 2));
        for _ in 0..n {
            let len = read_u16(r, at)? as usize;
            at += 2;
            members.push(clean_str(r.get(at..at + len)?)?);
            at += len;
        }
        Some(Group { name, gid, members })
    }

    /// Every record a table points at, in bucket order; `Doubt` if any
    /// slot or record is out of place or the file was retired meanwhile.
    /// The header's count must match, so a damaged slot can never make an
    /// enumeration leave someone out.
    fn all<T>(
        &self,
        table: usize,
        expected: usize,
        read: impl Fn(usize) -> Option<T>,
    ) -> Answer<Vec<T>> {
        if self.is_retired() {
            return Answer::Doubt;
        }
        let t = self.tables[table];
        let mut out = Vec::new();
        for slot in 0..t.buckets {
            let Some(offset) = read_u32(self.data, t.offset + slot * 4) else {
                return Answer::Doubt;
            };
            if offset == 0 {
                continue;
            }
            match read(offset as usize) {
                Some(record) => out.push(record),
                None => return Answer::Doubt,
            }
        }
        if out.len() != expected || self.is_retired() {
            Answer::Doubt
        } else {
            Answer::Hit(out)
        }
    }

    /// Every user, by uid: what `getpwent` enumerates.
    pub fn all_users(&self) -> Answer<Vec<User>> {
        match self.all(1, self.counts.0, |o| self.user_at(o)) {
            Answer::Hit(mut users) => {
                users.sort_unstable_by_key(|u| u.uid);
                // A slot redirected to another record: one twice, one missing.
                if users.windows(2).any(|w| w[0].uid == w[1].uid) {
                    return Answer::Doubt;
                }
                Answer::Hit(users)
            }
            other => other,
        }
    }

    /// Every group, by gid: what `getgrent` enumerates.
    pub fn all_groups(&self) -> Answer<Vec<Group>> {
        match self.all(3, self.counts.1, |o| self.group_at(o)) {
            Answer::Hit(mut groups) => {
                groups.sort_unstable_by_key(|g| g.gid);
                if groups.windows(2).any(|w| w[0].gid == w[1].gid) {
                    return Answer::Doubt;
                }
                Answer::Hit(groups)
            }
            other => other,
        }
    }

    pub fn user_by_name(&self, name: &str) -> Answer<User> {
        self.probe(
            0,
            TAG_USER_NAME,
            name.as_bytes(),
            |o| self.user_at(o),
            |u| u.name == name,
        )
    }

    pub fn user_by_uid(&self, uid: u32) -> Answer<User> {
        self.probe(
            1,
            TAG_UID,
            &uid.to_le_bytes(),
            |o| self.user_at(o),
            |u| u.uid == uid,
        )
    }

    pub fn group_by_name(&self, name: &str) -> Answer<Group> {
        self.probe(
            2,
            TAG_GROUP_NAME,
            name.as_bytes(),
            |o| self.group_at(o),
            |g| g.name == name,
        )
    }

    pub fn group_by_gid(&self, gid: u32) -> Answer<Group> {
        self.probe(
            3,
            TAG_GID,
            &gid.to_le_bytes(),
            |o| self.group_at(o),
            |g| g.gid == gid,
        )
    }
}

/// UTF-8 without NUL: what can be handed to glibc as a C string.
fn clean_str(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?;
    if s.contains('\0') {
        return None;
    }
    Some(s.to_owned())
}

/// An 8-byte aligned copy of some bytes, for reading a file that is not
/// mapped (tests, fuzzing).
pub struct AlignedCopy(Vec<u64>, usize);

impl AlignedCopy {
    pub fn new(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: words has at least bytes.len() bytes of storage.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                words.as_mut_ptr() as *mut u8,
                bytes.len(),
            )
        };
        Self(words, bytes.len())
    }

    pub fn snapshot(&mut self) -> Result<Snapshot<'_>, Invalid> {
        // SAFETY: the buffer is owned, 8-aligned, `self.1` bytes long, and
        // borrowed mutably for the snapshot's lifetime, so nothing else writes it.
        unsafe { Snapshot::from_raw(self.0.as_mut_ptr() as *const u8, self.1) }
    }

    /// Writes the counter, as the daemon does when it retires a file.
    pub fn set_seq(&mut self, seq: u64) {
        if let Some(word) = self.0.get_mut(H_SEQ / 8) {
            *word = seq.to_le();
        }
    }
}

pub mod mapped;
#[doc(hidden)]
pub mod testing;

#[cfg(test)]
mod tests;
