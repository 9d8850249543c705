//! Shared by the unit tests, the fuzz target and the corpus replay: a sample
//! snapshot and the properties every reader answer must have.
//!
//! Not part of the API; panics are how these checks fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use crate::{build, AlignedCopy, Answer, Group, Snapshot, User, HEADER_SIZE};

pub fn sample() -> (Vec<User>, Vec<Group>) {
    let users = (0..50u32)
        .map(|i| User {
            name: format!("user{i}"),
            uid: 2_000_000 + i,
            gid: 3_000_000,
            gecos: format!("User {i}"),
            home: format!("/home/user{i}"),
            shell: "/bin/bash".into(),
            groups: (0..(i % 5)).map(|g| 3_000_001 + g).collect(),
        })
        .collect();
    let groups = (0..5u32)
        .map(|g| Group {
            name: format!("team{g}"),
            gid: 3_000_001 + g,
            members: (0..50)
                .filter(|i| i % 5 > g)
                .map(|i| format!("user{i}"))
                .collect(),
        })
        .chain([Group {
            name: "connect-users".into(),
            gid: 3_000_000,
            members: (0..50).map(|i| format!("user{i}")).collect(),
        }])
        .collect();
    (users, groups)
}

/// A damaged file answers exactly what the intact one did, misses, or
/// doubts; it never hands out a different record.
pub fn check_invariants(snap: &Snapshot<'_>, users: &[User], groups: &[Group]) {
    for u in users {
        for answer in [snap.user_by_name(&u.name), snap.user_by_uid(u.uid)] {
            if let Answer::Hit(found) = answer {
                assert_eq!(&found, u, "a damaged file must not change an answer");
            }
        }
    }
    for g in groups {
        for answer in [snap.group_by_name(&g.name), snap.group_by_gid(g.gid)] {
            if let Answer::Hit(found) = answer {
                assert_eq!(&found, g, "a damaged file must not change an answer");
            }
        }
    }
    // An enumeration is complete and exact, or not given at all.
    if let Answer::Hit(found) = snap.all_users() {
        let mut expected = users.to_vec();
        expected.sort_by_key(|u| u.uid);
        assert_eq!(
            found, expected,
            "a damaged file must not change an enumeration"
        );
    }
    if let Answer::Hit(found) = snap.all_groups() {
        let mut expected = groups.to_vec();
        expected.sort_by_key(|g| g.gid);
        assert_eq!(
            found, expected,
            "a damaged file must not change an enumeration"
        );
    }
}

fn small_sample() -> &'static (Vec<User>, Vec<Group>, Vec<u8>) {
    static SAMPLE: OnceLock<(Vec<User>, Vec<Group>, Vec<u8>)> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let (mut users, mut groups) = sample();
        users.truncate(8);
        groups.truncate(3);
        let bytes = build(&users, &groups, (11, 13), 1, 0).expect("build");
        (users, groups, bytes)
    })
}

/// One fuzz input. The first byte picks the mode:
/// - even: the rest is a whole file; any hit must match the key asked for
///   and never be uid 0;
/// - odd: the rest is damage to a valid file, as (offset u16, xor u8)
///   triples; the file must then answer as the intact one did, or not at all.
pub fn exercise(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let mut copy = AlignedCopy::new(rest);
        let Ok(snap) = copy.snapshot() else { return };
        for name in ["user0", "user7", "team1", "connect-users", "", "x"] {
            if let Answer::Hit(u) = snap.user_by_name(name) {
                assert_eq!(u.name, name);
                assert_ne!(u.uid, 0);
            }
            if let Answer::Hit(g) = snap.group_by_name(name) {
                assert_eq!(g.name, name);
            }
        }
        for id in [0, 1, 2_000_000, 2_000_007, 3_000_000, 3_000_001, u32::MAX] {
            if let Answer::Hit(u) = snap.user_by_uid(id) {
                assert_eq!(u.uid, id);
                assert_ne!(u.uid, 0);
            }
            if let Answer::Hit(g) = snap.group_by_gid(id) {
                assert_eq!(g.gid, id);
            }
        }
    } else {
        let (users, groups, good) = small_sample();
        let mut bytes = good.clone();
        for chunk in rest.chunks_exact(3) {
            let at = u16::from_le_bytes([chunk[0], chunk[1]]) as usize;
            // Damage the data pages; the header is checked separately above.
            let at = HEADER_SIZE + at % (bytes.len() - HEADER_SIZE);
            bytes[at] ^= chunk[2];
        }
        let mut copy = AlignedCopy::new(&bytes);
        if let Ok(snap) = copy.snapshot() {
            check_invariants(&snap, users, groups);
        }
    }
}
