#!/bin/sh
# with-nscd.sh CMD...  -- run CMD with nscd (glibc's Name Service Cache
# Daemon) answering passwd/group lookups from its shared-memory cache.
#
# Assumes (the orchestrator sets this up):
#   * root, inside a PRIVATE mount namespace (checked: refuses to run in the
#     host's namespace), with a private tmpfs on /run;
#   * the desired /etc/passwd and /etc/group bind-mounted;
#   * /etc/nsswitch.conf bind-mounted with `passwd: files` / `group: files`.
#     glibc asks nscd BEFORE consulting nsswitch.conf (for passwd, group,
#     initgroups); nscd itself resolves misses through nsswitch.conf, i.e.
#     through `files`.
#
# Config: bench/peers/nscd.conf (shared yes = clients map the cache and
# serve hits in-process; persistent no; TTL 600; see the comments there).
# nscd's socket, pid file and (unlinked) cache files live in /run/nscd on
# the private tmpfs, so nothing is left on the host.
#
# How "served by nscd's fast path" was verified (see NOTES.md): with
# `strace -f -c -e trace=connect,openat` around 100k nss_bench getpwnam
# calls there is ONE connect() per process (GETFDPW: nscd hands the cache's
# fd over SCM_RIGHTS, the client mmaps it) and no open of /etc/passwd; the
# daemon's `nscd -g` counts only the warm-up misses (hits served from the
# mapping never reach the daemon and are not counted there).
#
# Only stdout of CMD goes to stdout; this script talks on stderr.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
CONF="$HERE/nscd.conf"
log() { echo "with-nscd: $*" >&2; }
die() { log "$*"; exit 125; }

[ $# -ge 1 ] || die "usage: with-nscd.sh CMD [ARGS...]"
[ "$(id -u)" = 0 ] || die "must run as root"
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] ||
    die "refusing to run in the host's mount namespace (use unshare --mount --propagation private)"
mountpoint -q /run || die "/run is not a private mount (mount -t tmpfs tmpfs /run first)"
command -v nscd >/dev/null || die "nscd not installed (run bench/peers/install.sh)"
grep -Eq '^passwd:[[:space:]]+files[[:space:]]*$' /etc/nsswitch.conf ||
    log "warning: nsswitch.conf passwd line is not exactly 'files': $(grep '^passwd:' /etc/nsswitch.conf || true)"

mkdir -p /run/nscd
chmod 755 /run/nscd
# nscd refuses to start when its socket/pid file exist from a previous run.
rm -f /run/nscd/socket /run/nscd/nscd.pid

stop_nscd() {
    if [ -S /run/nscd/socket ]; then
        nscd -f "$CONF" -K 2>/dev/null || true
    fi
    pid=$(cat /run/nscd/nscd.pid 2>/dev/null || true)
    if [ -n "$pid" ]; then
        i=0
        # (a zombie waiting for init to reap it counts as gone)
        while kill -0 "$pid" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null &&
            [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f /run/nscd/socket /run/nscd/nscd.pid
}
trap stop_nscd EXIT
trap 'exit 143' INT TERM

nscd -f "$CONF" || die "nscd failed to start"

# Wait until it answers.
i=0
until [ -S /run/nscd/socket ] && nscd -f "$CONF" -g >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -le 100 ] || die "nscd did not come up within 10 s"
    sleep 0.1
done

misses() { # passwd cache: "cache misses on positive entries"
    nscd -f "$CONF" -g 2>/dev/null |
        awk '/^passwd cache:/ {p=1} /^group cache:/ {p=0} p && /cache misses on positive entries/ {print $1; exit}'
}

# Prove that lookups go through nscd: a lookup of the first user in
# /etc/passwd must show up as a miss in nscd's passwd statistics.
probe=$(awk -F: 'NF > 2 {print $1; exit}' /etc/passwd)
before=$(misses)
getent passwd "$probe" >/dev/null || die "getent passwd $probe failed with nscd running"
after=$(misses)
[ -n "$before" ] && [ -n "$after" ] && [ "$after" -gt "$before" ] ||
    die "lookup of $probe did not reach nscd (misses $before -> $after)"
log "nscd up (pid $(cat /run/nscd/nscd.pid)); lookup of '$probe' went through nscd (passwd misses $before -> $after)"

set +e
"$@"
rc=$?
set -e

log "nscd passwd stats after run: $(nscd -f "$CONF" -g 2>/dev/null | awk '/^passwd cache:/ {p=1} /^group cache:/ {p=0} p && /cache (hits|misses) on positive|current number of cached/ {sub(/^ +/, ""); printf "%s; ", $0}')"
exit $rc
