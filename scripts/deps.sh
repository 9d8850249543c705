#!/bin/sh
# Installs what a fresh Debian machine lacks to build and test (as root).
# Only calls apt-get when something is missing, so repeated runs are quick.
set -eu
missing=""
need() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }
need gcc gcc
need nm binutils
need readelf binutils
need unshare util-linux
need setpriv util-linux
need getent libc-bin
need awk mawk
if [ -n "$missing" ]; then
    echo "==> installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        echo "cargo is in $HOME/.cargo/bin: add it to PATH" >&2
    else
        echo "Rust 1.88 or newer is needed (Debian's packaged rustc is older):" >&2
        echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" >&2
    fi
    exit 1
fi
