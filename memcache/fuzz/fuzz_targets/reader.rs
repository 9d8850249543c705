//! Fuzzes the cache-file reader: arbitrary bytes as a whole file, and
//! arbitrary damage to a valid file. The reader must never panic, and a
//! damaged file must answer exactly what the intact one did, miss, or doubt.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    connect_memcache::testing::exercise(data);
});
