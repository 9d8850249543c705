#!/bin/sh
# Builds libnss_connect.so exactly as it is installed.
#
# The module is built on its own (-p nss-connect) in its own target
# directory: building it together with the daemons would let Cargo unify
# tokio's features, pulling the daemon's multi-thread runtime and signal
# driver into a library that runs inside every process on the machine.
# tests/tests/artifact.rs checks the result.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
target=${NSS_TARGET_DIR:-$root/target/nss}
"${CARGO:-cargo}" build --quiet --release --locked -p nss-connect \
    --manifest-path "$root/Cargo.toml" --target-dir "$target"
echo "$target/release/libnss_connect.so"
