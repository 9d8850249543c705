// Tests may panic: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

use crate::testing::{check_invariants, sample};

fn built() -> Vec<u8> {
    let (users, groups) = sample();
    build(
        &users,
        &groups,
        (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
        7,
        1_700_000_000,
    )
    .expect("build")
}

#[test]
fn every_record_is_found_by_name_and_by_id() {
    let (users, groups) = sample();
    let mut copy = AlignedCopy::new(&built());
    let snap = copy.snapshot().expect("valid");
    for u in &users {
        assert_eq!(snap.user_by_name(&u.name), Answer::Hit(u.clone()));
        assert_eq!(snap.user_by_uid(u.uid), Answer::Hit(u.clone()));
    }
    for g in &groups {
        assert_eq!(snap.group_by_name(&g.name), Answer::Hit(g.clone()));
        assert_eq!(snap.group_by_gid(g.gid), Answer::Hit(g.clone()));
    }
    assert_eq!(snap.user_by_name("nobody-here"), Answer::Miss);
    assert_eq!(snap.user_by_uid(1), Answer::Miss);
    assert_eq!(snap.group_by_name("team9"), Answer::Miss);
    assert_eq!(snap.group_by_gid(42), Answer::Miss);
}

#[test]
fn enumeration_gives_every_record_once_in_id_order() {
    let (mut users, mut groups) = sample();
    let mut copy = AlignedCopy::new(&built());
    let snap = copy.snapshot().expect("valid");
    users.sort_by_key(|u| u.uid);
    groups.sort_by_key(|g| g.gid);
    assert_eq!(snap.all_users(), Answer::Hit(users));
    assert_eq!(snap.all_groups(), Answer::Hit(groups));
    let empty = build(&[], &[], (1, 2), 1, 0).expect("build");
    let mut copy = AlignedCopy::new(&empty);
    assert_eq!(
        copy.snapshot().expect("valid").all_users(),
        Answer::Hit(Vec::new())
    );
}

#[test]
fn an_empty_snapshot_misses_everything() {
    let bytes = build(&[], &[], (1, 2), 1, 0).expect("build");
    let mut copy = AlignedCopy::new(&bytes);
    let snap = copy.snapshot().expect("valid");
    assert_eq!(snap.user_by_name("alice"), Answer::Miss);
    assert_eq!(snap.group_by_gid(5), Answer::Miss);
}

#[test]
fn a_retired_file_is_refused_and_retirement_is_seen_by_open_snapshots() {
    let bytes = built();
    let mut copy = AlignedCopy::new(&bytes);
    copy.set_seq(3);
    assert_eq!(copy.snapshot().err(), Some(Invalid::Retired));

    // A snapshot already open notices the counter change at its next lookup.
    let mut words = AlignedCopy::new(&bytes);
    let base = words.0.as_mut_ptr() as *mut u8;
    // SAFETY: the buffer outlives the snapshot; the counter is written
    // atomically below, as the daemon does, and nothing else changes.
    let snap = unsafe { Snapshot::from_raw(base as *const u8, bytes.len()) }.expect("valid");
    assert!(matches!(snap.user_by_name("user1"), Answer::Hit(_)));
    // SAFETY: aligned, in bounds; the reader reads it atomically too.
    unsafe { AtomicU64::from_ptr(base.add(H_SEQ) as *mut u64) }
        .store(3u64.to_le(), Ordering::Release);
    assert!(snap.is_retired());
    assert_eq!(snap.user_by_name("user1"), Answer::Doubt);
    assert_eq!(snap.user_by_name("not-there"), Answer::Doubt);
}

#[test]
fn different_seeds_give_different_tables() {
    let (users, groups) = sample();
    let a = build(&users, &groups, (1, 2), 1, 0).expect("a");
    let b = build(&users, &groups, (3, 4), 1, 0).expect("b");
    assert_eq!(a.len(), b.len());
    assert_ne!(
        a[HEADER_SIZE..],
        b[HEADER_SIZE..],
        "the key changes where records land"
    );
}

#[test]
fn malformed_headers_are_rejected() {
    let good = built();
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(Damage, Invalid)> = vec![
        (Box::new(|b| b.truncate(100)), Invalid::TooSmall),
        (Box::new(|b| b[0] = b'X'), Invalid::BadMagic),
        (Box::new(|b| b[H_VERSION] = 9), Invalid::BadVersion),
        (
            Box::new(|b| b.truncate(b.len() - 4)),
            Invalid::Inconsistent("file size differs from the header"),
        ),
        (
            Box::new(|b| put_u32(b, H_TABLES + 4, 3)),
            Invalid::Inconsistent("hash table out of bounds"),
        ),
        (
            Box::new(|b| put_u32(b, H_TABLES, 10)),
            Invalid::Inconsistent("hash table out of bounds"),
        ),
        (
            Box::new(|b| put_u32(b, H_RECORDS + 4, u32::MAX)),
            Invalid::Inconsistent("record area out of bounds"),
        ),
    ];
    for (mutate, expected) in cases {
        let mut bytes = good.clone();
        mutate(&mut bytes);
        let mut copy = AlignedCopy::new(&bytes);
        assert_eq!(copy.snapshot().err(), Some(expected));
    }
}

/// The property the fuzzer checks, run here over every single-byte change
/// of a small file so it holds in every CI run: no panic, and no answer
/// that misleads: a damaged file answers exactly what the intact one did,
/// or misses, or doubts (the per-record checksum catches damaged fields).
#[test]
fn no_single_byte_corruption_panics_or_misleads() {
    let (users, groups) = {
        let (mut u, mut g) = sample();
        u.truncate(6);
        g.truncate(2);
        (u, g)
    };
    let good = build(&users, &groups, (5, 6), 1, 0).expect("build");
    for at in HEADER_SIZE..good.len() {
        for value in [0u8, 1, 0x7f, 0xff, good[at] ^ 0x10] {
            let mut bytes = good.clone();
            bytes[at] = value;
            let mut copy = AlignedCopy::new(&bytes);
            let Ok(snap) = copy.snapshot() else { continue };
            check_invariants(&snap, &users, &groups);
        }
    }
}

#[test]
fn publish_is_atomic_and_retire_marks_the_file() {
    let dir = std::env::temp_dir().join(format!("memcache-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("cache");
    let bytes = built();
    let file = publish(&path, &bytes).expect("publish");
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    retire(&file).expect("retire");
    let mut copy = AlignedCopy::new(&std::fs::read(&path).expect("read"));
    assert_eq!(copy.snapshot().err(), Some(Invalid::Retired));
    // Retiring twice keeps it retired (odd stays odd).
    retire(&file).expect("retire again");
    retire_path(&path).expect("retire by path");
    let mut copy = AlignedCopy::new(&std::fs::read(&path).expect("read"));
    assert_eq!(copy.snapshot().err(), Some(Invalid::Retired));
    retire_path(&dir.join("absent")).expect("absent is fine");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn mapped_files_must_be_root_owned_and_not_writable_by_others() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return; // ownership by root cannot be arranged without root
    }
    let dir = std::env::temp_dir().join(format!("memcache-map-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("cache");
    publish(&path, &built()).expect("publish");
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("cstr");
    let mapped = mapped::Mapped::open(&cpath).expect("trusted file maps");
    assert!(matches!(
        mapped.snapshot().expect("valid").user_by_name("user3"),
        Answer::Hit(_)
    ));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    assert_eq!(
        mapped::Mapped::open(&cpath).err(),
        Some(mapped::OpenError::Untrusted)
    );
    std::os::unix::fs::chown(&path, Some(65534), None).expect("chown");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(
        mapped::Mapped::open(&cpath).err(),
        Some(mapped::OpenError::Untrusted)
    );
    let absent =
        std::ffi::CString::new(dir.join("nope").as_os_str().as_encoded_bytes()).expect("cstr");
    assert_eq!(
        mapped::Mapped::open(&absent).err(),
        Some(mapped::OpenError::Absent)
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// Every input in the fuzzing corpus (memcache/fuzz/corpus/reader), replayed
/// on every test run: what the fuzzer once found stays fixed.
#[test]
fn the_fuzzing_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/reader");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus is in the repository") {
        let path = entry.expect("entry").path();
        crate::testing::exercise(&std::fs::read(&path).expect("read"));
        count += 1;
    }
    assert!(count >= 10, "the corpus has only {count} inputs");
}
