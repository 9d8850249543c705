//! Unpacking, with real archives: what a good bundle becomes, and every
//! malformed or hostile archive refused with the entry named.

use std::cell::Cell;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use super::*;
use std::io::Cursor;
use tar::{EntryType, Header};

// ----- archives -----------------------------------------------------

/// A header with the name and link written as raw bytes: tar::Builder's
/// own setters refuse the malicious names these tests need.
fn header(name: &[u8], kind: EntryType, size: u64, mode: u32, link: &[u8]) -> Header {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

pub(super) enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Link(&'a str, &'a str),
    Other(&'a str, EntryType, &'a str),
}

pub(super) fn tar_bytes(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let result = match e {
            E::File(name, data, mode) => b.append(
                &header(
                    name.as_bytes(),
                    EntryType::Regular,
                    data.len() as u64,
                    *mode,
                    b"",
                ),
                *data,
            ),
            E::Dir(name, mode) => b.append(
                &header(name.as_bytes(), EntryType::Directory, 0, *mode, b""),
                io::empty(),
            ),
            E::Link(name, target) => b.append(
                &header(
                    name.as_bytes(),
                    EntryType::Symlink,
                    0,
                    0o777,
                    target.as_bytes(),
                ),
                io::empty(),
            ),
            E::Other(name, kind, link) => b.append(
                &header(name.as_bytes(), *kind, 0, 0o644, link.as_bytes()),
                io::empty(),
            ),
        };
        result.unwrap();
    }
    b.into_inner().unwrap()
}

pub(super) fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn unpack_new(archive: &[u8], limits: &Limits) -> (tempfile::TempDir, Result<(), BundleError>) {
    let dir = tempfile::tempdir().unwrap();
    let result = unpack(archive, dir.path(), limits);
    (dir, result)
}

fn refused(entries: &[E<'_>], expect_entry: &str, expect_words: &str) {
    let (_dir, result) = unpack_new(&gz(&tar_bytes(entries)), &Limits::default());
    match result {
        Err(BundleError::Entry { entry, problem }) => {
            assert_eq!(entry, expect_entry);
            assert!(problem.contains(expect_words), "{problem}");
        }
        other => panic!("expected a refusal of {expect_entry:?}, got {other:?}"),
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

// ----- unpack ---------------------------------------------------------

#[test]
fn unpacks_a_good_bundle_and_sanitizes_modes() {
    let archive = gz(&tar_bytes(&[
        E::Dir("./", 0o755),
        E::File("./manifest.json", b"{}", 0o644),
        E::Dir("./static/", 0o777),
        E::File("./static/style.css", b"body{}", 0o666),
        E::File("run.sh", b"#!/bin/sh\n", 0o4775),
        E::File("secret.txt", b"s", 0o600),
        E::File("deep/er/file.txt", b"implied parents", 0o644),
        E::Dir("sticky", 0o1777),
        E::Link("style.css", "static/style.css"),
        E::Link("static/up", "../run.sh"),
        E::Link("static/self", "."),
    ]));
    let (dir, result) = unpack_new(&archive, &Limits::default());
    result.unwrap();
    let d = dir.path();
    assert_eq!(fs::read(d.join("manifest.json")).unwrap(), b"{}");
    assert_eq!(fs::read(d.join("static/style.css")).unwrap(), b"body{}");
    assert_eq!(fs::read(d.join("style.css")).unwrap(), b"body{}");
    assert_eq!(fs::read(d.join("static/up")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(mode_of(&d.join("static")), 0o755);
    assert_eq!(mode_of(&d.join("static/style.css")), 0o644);
    assert_eq!(
        mode_of(&d.join("run.sh")),
        0o755,
        "setuid and group write dropped"
    );
    assert_eq!(
        mode_of(&d.join("secret.txt")),
        0o644,
        "readable by the app's user"
    );
    assert_eq!(mode_of(&d.join("deep")), 0o755);
    assert_eq!(mode_of(&d.join("deep/er")), 0o755);
    assert_eq!(mode_of(&d.join("sticky")), 0o755);
    assert!(fs::symlink_metadata(d.join("style.css"))
        .unwrap()
        .file_type()
        .is_symlink());
    let mtime = fs::metadata(d.join("run.sh")).unwrap().modified().unwrap();
    assert_eq!(
        mtime,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    );
}

#[test]
fn plain_tar_is_accepted_too() {
    let (dir, result) = unpack_new(
        &tar_bytes(&[E::File("a.txt", b"x", 0o644)]),
        &Limits::default(),
    );
    result.unwrap();
    assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"x");
}

#[test]
fn refuses_absolute_paths() {
    refused(
        &[E::File("/etc/evil", b"x", 0o644)],
        "/etc/evil",
        "absolute",
    );
}

#[test]
fn refuses_parent_components() {
    refused(
        &[E::File("a/../../evil", b"x", 0o644)],
        "a/../../evil",
        "\"..\"",
    );
    refused(&[E::Dir("../up", 0o755)], "../up", "\"..\"");
}

#[test]
fn refuses_symlinks_out_of_the_bundle() {
    refused(
        &[E::Link("passwd", "/etc/passwd")],
        "passwd",
        "outside the bundle",
    );
    refused(&[E::Link("a/up", "../../x")], "a/up", "outside the bundle");
    // Lexically inside, but through another link it climbs out: only the
    // final, resolved check can see it.
    refused(
        &[
            E::Dir("c", 0o755),
            E::Link("a/b", "../c"),
            E::Link("x", "a/b/../.."),
        ],
        "x",
        "does not resolve",
    );
    refused(
        &[E::Link("dangling", "nothing")],
        "dangling",
        "does not resolve",
    );
}

#[test]
fn refuses_writing_through_a_symlink() {
    refused(
        &[
            E::Dir("sub", 0o755),
            E::Link("l", "sub"),
            E::File("l/file", b"x", 0o644),
        ],
        "l/file",
        "goes through the symbolic link",
    );
}

#[test]
fn refuses_hard_links_devices_and_fifos() {
    refused(
        &[
            E::File("a", b"x", 0o644),
            E::Other("b", EntryType::Link, "a"),
        ],
        "b",
        "hard links",
    );
    refused(&[E::Other("null", EntryType::Char, "")], "null", "device");
    refused(&[E::Other("sda", EntryType::Block, "")], "sda", "device");
    refused(&[E::Other("pipe", EntryType::Fifo, "")], "pipe", "FIFO");
}

#[test]
fn refuses_duplicates() {
    refused(
        &[E::File("a", b"1", 0o644), E::File("a", b"2", 0o644)],
        "a",
        "twice",
    );
    refused(
        &[E::File("a", b"1", 0o644), E::File("a/b", b"2", 0o644)],
        "a/b",
        "both a file and a directory",
    );
}

#[test]
fn refuses_too_many_files() {
    let limits = Limits {
        max_files: 3,
        ..Limits::default()
    };
    let archive = gz(&tar_bytes(&[
        E::File("1", b"", 0o644),
        E::File("2", b"", 0o644),
        E::File("3", b"", 0o644),
    ]));
    unpack_new(&archive, &limits).1.unwrap();
    // Implied parent directories count too.
    let archive = gz(&tar_bytes(&[E::File("a/b/c/d", b"", 0o644)]));
    match unpack_new(&archive, &limits).1 {
        Err(BundleError::TooManyFiles { limit: 3 }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn refuses_a_file_over_the_per_file_limit_naming_it() {
    let limits = Limits {
        max_file_bytes: 8,
        ..Limits::default()
    };
    let archive = gz(&tar_bytes(&[
        E::File("small", b"12345678", 0o644),
        E::File("data/big.csv", b"123456789", 0o644),
    ]));
    match unpack_new(&archive, &limits).1 {
        Err(e @ BundleError::FileTooLarge { .. }) => {
            let text = e.to_string();
            assert!(text.contains("\"data/big.csv\""), "{text}");
            assert!(text.contains("8 bytes"), "{text}");
            assert!(text.contains("MaxBundleFileSize"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // The same files within the limit unpack.
    let limits = Limits {
        max_file_bytes: 9,
        ..limits
    };
    let archive = gz(&tar_bytes(&[E::File("data/big.csv", b"123456789", 0o644)]));
    unpack_new(&archive, &limits).1.unwrap();
}

/// An endless tar stream of files of `size` zero bytes each, counting
/// what is read from it.
struct EndlessTar {
    size: u64,
    next: u64,
    header: Vec<u8>,
    zeros_left: u64,
    produced: Rc<Cell<u64>>,
}

impl Read for EndlessTar {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.header.is_empty() && self.zeros_left == 0 {
            let name = format!("f{}", self.next);
            self.next += 1;
            let h = header(name.as_bytes(), EntryType::Regular, self.size, 0o644, b"");
            self.header = h.as_bytes().to_vec();
            self.zeros_left = self.size.div_ceil(512) * 512;
        }
        let n = if !self.header.is_empty() {
            let n = out.len().min(self.header.len());
            out[..n].copy_from_slice(&self.header[..n]);
            self.header.drain(..n);
            n
        } else {
            let n = out
                .len()
                .min(usize::try_from(self.zeros_left).unwrap_or(usize::MAX));
            out[..n].fill(0);
            self.zeros_left -= n as u64;
            n
        };
        self.produced.set(self.produced.get() + n as u64);
        Ok(n)
    }
}

fn endless(size: u64) -> (EndlessTar, Rc<Cell<u64>>) {
    let produced = Rc::new(Cell::new(0));
    let tar = EndlessTar {
        size,
        next: 0,
        header: Vec::new(),
        zeros_left: 0,
        produced: Rc::clone(&produced),
    };
    (tar, produced)
}

#[test]
fn gzip_bomb_stops_at_the_limit() {
    let limits = Limits {
        max_bytes: 4 << 20,
        ..Limits::default()
    };
    // Files of 512 KiB, gzipped on the fly, forever.
    let (tar, produced) = endless(512 << 10);
    let bomb = flate2::read::GzEncoder::new(tar, flate2::Compression::fast());
    let dir = tempfile::tempdir().unwrap();
    match unpack(bomb, dir.path(), &limits) {
        Err(BundleError::TooLarge { limit }) => assert_eq!(limit, 4 << 20),
        other => panic!("{other:?}"),
    }
    // The encoder reads ahead of what unpack() asks for: allow for it.
    assert!(produced.get() < 16 << 20, "read {} bytes", produced.get());
    let written: u64 = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(written <= 4 << 20);

    // One file declared far bigger than the limit: refused before its
    // contents are read (uncompressed, so that `produced` is exact).
    // First as too much for the bundle, then as too much for one file.
    let whole_bundle = Limits {
        max_file_bytes: u64::MAX,
        ..limits
    };
    let (tar, produced) = endless(1 << 40);
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        unpack(tar, dir.path(), &whole_bundle),
        Err(BundleError::TooLarge { .. })
    ));
    assert!(produced.get() <= 64 << 10, "read {} bytes", produced.get());
    let (tar, produced) = endless(1 << 40);
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        unpack(tar, dir.path(), &limits),
        Err(BundleError::FileTooLarge { .. })
    ));
    assert!(produced.get() <= 64 << 10, "read {} bytes", produced.get());
}

#[test]
fn data_of_non_file_entries_is_capped() {
    // A directory that claims a terabyte of data, then endless zeros.
    let mut stream = header(b"d", EntryType::Directory, 1 << 40, 0o755, b"")
        .as_bytes()
        .to_vec();
    stream.extend_from_slice(&[0; 512]);
    let produced = Rc::new(Cell::new(0u64));
    struct Zeros(Rc<Cell<u64>>);
    impl Read for Zeros {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            out.fill(0);
            self.0.set(self.0.get() + out.len() as u64);
            Ok(out.len())
        }
    }
    let input = Cursor::new(stream).chain(Zeros(Rc::clone(&produced)));
    let dir = tempfile::tempdir().unwrap();
    match unpack(input, dir.path(), &Limits::default()) {
        Err(BundleError::Archive { detail }) => assert!(detail.contains("\"d\""), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(produced.get() < 2 << 20, "read {} bytes", produced.get());
}

#[test]
fn destination_must_be_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("x"), "").unwrap();
    let archive = gz(&tar_bytes(&[E::File("a", b"", 0o644)]));
    assert!(matches!(
        unpack(&archive[..], dir.path(), &Limits::default()),
        Err(BundleError::Destination { .. })
    ));
    assert!(matches!(
        unpack(
            &archive[..],
            &dir.path().join("missing"),
            &Limits::default()
        ),
        Err(BundleError::Destination { .. })
    ));
}

#[test]
fn garbage_and_empty_archives_are_refused() {
    for input in [
        &b"this is not an archive at all, not even close"[..],
        &gz(b"junk")[..],
        b"",
    ] {
        let (_dir, result) = unpack_new(input, &Limits::default());
        assert!(
            matches!(result, Err(BundleError::Archive { .. })),
            "{result:?}"
        );
    }
    let (_dir, result) = unpack_new(&gz(&tar_bytes(&[])), &Limits::default());
    let message = result.unwrap_err().to_string();
    assert!(message.contains("no files"), "{message}");
    // A truncated upload.
    let whole = gz(&tar_bytes(&[E::File("a", &[7; 100_000], 0o644)]));
    let (_dir, result) = unpack_new(&whole[..whole.len() / 2], &Limits::default());
    assert!(
        matches!(result, Err(BundleError::Archive { .. })),
        "{result:?}"
    );
}
