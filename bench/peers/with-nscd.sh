#!/bin/sh
# with-nscd.sh CMD...  -- run CMD with nscd (glibc's Name Service Cache
# Daemon) answering passwd/group lookups from its shared-memory cache.
#
# Needs root. The script makes its own private mount namespace (it
# re-executes itself under `unshare --mount --propagation private` and
# checks that its namespace is not the one it was started in) and mounts a
# tmpfs on /run there, so nscd's socket, pid file and cache never reach the
# caller's namespace or the host, whatever namespace it is started in.
#
# Assumes (the orchestrator sets this up; inherited by our namespace):
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
# Every way this script fails before CMD runs ends with exactly one line
# "with-nscd: <why>" on stderr (die, or the EXIT trap for anything else).
STEP="starting"
REASON=no
CMD_RAN=no
log() { echo "with-nscd: $*" >&2; }
die() { log "$*"; REASON=yes; exit 125; }
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
# stop_nscd touches /run/nscd: only once /run is our own tmpfs.
PRIVATE_RUN=no
on_exit() {
    rc=$?
    [ "$PRIVATE_RUN" = no ] || stop_nscd
    if [ "$rc" -ne 0 ] && [ "$REASON" = no ] && [ "$CMD_RAN" = no ]; then
        log "failed (exit $rc) while $STEP"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 143' INT TERM

[ $# -ge 1 ] || die "usage: with-nscd.sh CMD [ARGS...]"
[ "$(id -u)" = 0 ] || die "must run as root"

# Our own private mount namespace. /proc/self is readable everywhere (unlike
# /proc/1/ns/mnt, which some containers and VMs hide), so the check is: the
# namespace we run in now differs from the one we were started in.
ns=$(readlink /proc/self/ns/mnt) || die "cannot read /proc/self/ns/mnt"
if [ -z "${WITH_NSCD_OUTER_NS:-}" ]; then
    command -v unshare >/dev/null || die "unshare not found (util-linux): cannot make a private mount namespace"
    err=$(unshare --mount --propagation private true 2>&1) ||
        die "cannot make a private mount namespace: ${err:-unshare --mount failed}"
    export WITH_NSCD_OUTER_NS="$ns"
    exec unshare --mount --propagation private -- /bin/sh "$HERE/with-nscd.sh" "$@"
fi
[ "$ns" != "$WITH_NSCD_OUTER_NS" ] ||
    die "refusing to run: still in the mount namespace we were started in ($ns) after unshare"
unset WITH_NSCD_OUTER_NS
STEP="mounting a private tmpfs on /run"
mount -t tmpfs -o mode=755 tmpfs /run || die "cannot mount a private tmpfs on /run"
PRIVATE_RUN=yes
command -v nscd >/dev/null || die "nscd not installed (run bench/peers/install.sh)"
grep -Eq '^passwd:[[:space:]]+files[[:space:]]*$' /etc/nsswitch.conf ||
    log "warning: nsswitch.conf passwd line is not exactly 'files': $(grep '^passwd:' /etc/nsswitch.conf || true)"

mkdir -p /run/nscd
chmod 755 /run/nscd
STEP="starting nscd"
nscd -f "$CONF" || die "nscd failed to start (nscd -f $CONF)"

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

STEP="checking that a lookup reaches nscd"
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
CMD_RAN=yes
"$@"
rc=$?
set -e

log "nscd passwd stats after run: $(nscd -f "$CONF" -g 2>/dev/null | awk '/^passwd cache:/ {p=1} /^group cache:/ {p=0} p && /cache (hits|misses) on positive|current number of cached/ {sub(/^ +/, ""); printf "%s; ", $0}')"
exit $rc
