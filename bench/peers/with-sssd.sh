#!/bin/sh
# with-sssd.sh CMD...  -- run CMD with SSSD answering passwd/group/
# initgroups lookups, warmed so that hits come from SSSD's memory-mapped
# cache (/var/lib/sss/mc/*), which libnss_sss reads in-process without
# talking to sssd_nss.
#
# Provider (env SSSD_PROVIDER):
#   proxy (default)  bench/peers/sssd.conf: id_provider = proxy,
#                    proxy_lib_name = files -- sssd_be reads the bind-mounted
#                    /etc/passwd and /etc/group through glibc's files
#                    functions on each cache miss.  Starts in ~1 s.
#   files            bench/peers/sssd-files.conf: id_provider = files.
#                    sssd 2.8.2 imports the whole files at start-up, which
#                    does not finish in useful time for 10^4 users (see
#                    NOTES.md); SSSD_READY_TIMEOUT (s) bounds the wait.
#
# Needs root. The script makes its own private mount namespace (it
# re-executes itself under `unshare --mount --propagation private` and
# checks that its namespace is not the one it was started in) and mounts a
# tmpfs on /run there, whatever namespace it is started in.
#
# Assumes (the orchestrator sets this up; inherited by our namespace):
#   * the desired /etc/passwd and /etc/group bind-mounted;
#   * /etc/nsswitch.conf bind-mounted with
#         passwd:     sss files
#         group:      sss files
#         initgroups: sss files
#     `sss` first is what sssd-files(5) prescribes (SSSD's caching only
#     helps when nss_sss comes before nss_files); `files` after it is needed
#     because SSSD never answers for root / uid 0 / gid 0 (and, with the
#     files provider, answers UNAVAIL on purpose while it reloads).  The
#     explicit initgroups line makes getgrouplist()/initgroups() stop once
#     sss answered; without it glibc ALSO scans /etc/group through files on
#     every call.
#
# The script mounts private tmpfs over /etc/sssd (config copied with mode
# 0600, which sssd requires), /var/lib/sss (db, mc, pipes, pipes/private,
# pubconf, ... with the package's modes) and /var/log/sssd; starts
# `sssd -i` (no systemd needed; everything runs as root); waits for
# /run/sssd.pid (all responders up) and until the LAST user and group of
# the files resolve through sss alone (`getent -s sss`, no files fallback),
# sending SIGHUP to the monitor before each try (SIGHUP clears sssd_nss's
# negative cache; a miss during the files provider's import is negatively
# cached forever otherwise); warms a probe user; verifies that a warmed
# lookup is served from /var/lib/sss/mc without any connect() to
# /var/lib/sss/pipes/nss (strace, when installed); runs CMD; stops sssd;
# exits with CMD's status.
#
# How the fast path was verified: after `getent -s sss passwd U` once, a
# second `strace -f -e trace=connect,openat getent -s sss passwd U` shows an
# openat of /var/lib/sss/mc/passwd and NO connect() to /var/lib/sss/pipes/nss
# (done by this script on every run); and strace -c over a whole nss_bench
# run shows connect() calls only during its warm-up (NOTES.md).  SSSD's mc
# only holds entries that went through sssd_nss once (the first lookup of
# each key goes over the pipe and fills the mc), so CMD must warm its keys
# itself (nss_bench's --warmup does: warm-up >= --count).
#
# Only stdout of CMD goes to stdout; this script talks on stderr.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
# Every way this script fails before CMD runs ends with exactly one line
# "with-sssd: <why>" on stderr (die, or the EXIT trap for anything else).
STEP="starting"
REASON=no
CMD_RAN=no
log() { echo "with-sssd: $*" >&2; }
die() { log "$*"; REASON=yes; exit 125; }
SSSD_PID=
stop_sssd() {
    [ -n "$SSSD_PID" ] || return 0
    kids=$(pgrep -P "$SSSD_PID" 2>/dev/null | tr '\n' ' ' || true)
    kill -TERM "$SSSD_PID" 2>/dev/null || true
    i=0
    # (our exited child stays a zombie until `wait`: that counts as gone)
    while kill -0 "$SSSD_PID" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$SSSD_PID/status" 2>/dev/null &&
        [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    for p in $SSSD_PID $kids; do kill -KILL "$p" 2>/dev/null || true; done
    wait "$SSSD_PID" 2>/dev/null || true
    SSSD_PID=
}
on_exit() {
    rc=$?
    stop_sssd
    if [ "$rc" -ne 0 ] && [ "$REASON" = no ] && [ "$CMD_RAN" = no ]; then
        log "failed (exit $rc) while $STEP"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 143' INT TERM

PROVIDER=${SSSD_PROVIDER:-proxy}
case "$PROVIDER" in
proxy) CONF="$HERE/sssd.conf"; READY_TIMEOUT=${SSSD_READY_TIMEOUT:-60} ;;
files) CONF="$HERE/sssd-files.conf"; READY_TIMEOUT=${SSSD_READY_TIMEOUT:-900} ;;
*) die "SSSD_PROVIDER must be proxy or files, not '$PROVIDER'" ;;
esac

[ $# -ge 1 ] || die "usage: with-sssd.sh CMD [ARGS...]"
[ "$(id -u)" = 0 ] || die "must run as root"

# Our own private mount namespace. /proc/self is readable everywhere (unlike
# /proc/1/ns/mnt, which some containers and VMs hide), so the check is: the
# namespace we run in now differs from the one we were started in.
ns=$(readlink /proc/self/ns/mnt) || die "cannot read /proc/self/ns/mnt"
if [ -z "${WITH_SSSD_OUTER_NS:-}" ]; then
    command -v unshare >/dev/null || die "unshare not found (util-linux): cannot make a private mount namespace"
    err=$(unshare --mount --propagation private true 2>&1) ||
        die "cannot make a private mount namespace: ${err:-unshare --mount failed}"
    export WITH_SSSD_OUTER_NS="$ns"
    exec unshare --mount --propagation private -- /bin/sh "$HERE/with-sssd.sh" "$@"
fi
[ "$ns" != "$WITH_SSSD_OUTER_NS" ] ||
    die "refusing to run: still in the mount namespace we were started in ($ns) after unshare"
unset WITH_SSSD_OUTER_NS
[ -x /usr/sbin/sssd ] || die "sssd not installed (run bench/peers/install.sh)"
for d in /etc/sssd /var/lib/sss /var/log/sssd; do
    [ -d "$d" ] || die "$d missing: sssd-common is not installed completely (run bench/peers/install.sh)"
done
grep -Eq '^passwd:[[:space:]]+sss([[:space:]]|$)' /etc/nsswitch.conf ||
    log "warning: nsswitch.conf passwd line does not start with sss: $(grep '^passwd:' /etc/nsswitch.conf || true)"

# Private state: nothing of this reaches the host (all tmpfs in our namespace).
STEP="mounting private tmpfs on /run, /etc/sssd, /var/lib/sss, /var/log/sssd"
mount -t tmpfs -o mode=755 tmpfs /run || die "cannot mount a private tmpfs on /run"
mount -t tmpfs -o mode=0711 tmpfs /etc/sssd || die "cannot mount a private tmpfs on /etc/sssd"
mkdir -m 0711 /etc/sssd/conf.d
install -m 0600 -o root -g root "$CONF" /etc/sssd/sssd.conf
mount -t tmpfs -o mode=0755 tmpfs /var/lib/sss || die "cannot mount a private tmpfs on /var/lib/sss"
mkdir -m 0700 /var/lib/sss/db /var/lib/sss/secrets
mkdir -m 0775 /var/lib/sss/mc
mkdir -m 0755 /var/lib/sss/pipes /var/lib/sss/pubconf /var/lib/sss/gpo_cache
mkdir -m 0750 /var/lib/sss/pipes/private
mkdir -m 0751 /var/lib/sss/deskprofile
mount -t tmpfs -o mode=0750 tmpfs /var/log/sssd || die "cannot mount a private tmpfs on /var/log/sssd"

# Logs stay in the private tmpfs /var/log/sssd (default debug level:
# fatal, critical and serious failures only, no per-request logging).
STEP="starting sssd"
sssd -i --logger=files -c /etc/sssd/sssd.conf </dev/null >/dev/null 2>&1 &
SSSD_PID=$!

probe=$(awk -F: 'NF > 2 && $3 != 0 {print $1; exit}' /etc/passwd)
last=$(awk -F: 'NF > 2 && $3 != 0 {u = $1} END {print u}' /etc/passwd)
lastgrp=$(awk -F: 'NF > 2 && $3 != 0 {g = $1} END {print g}' /etc/group)
[ -n "$probe" ] || die "no non-root user in /etc/passwd"
t0=$(date +%s)
alive_or_die() {
    kill -0 "$SSSD_PID" 2>/dev/null && return 0
    tail -n 20 /var/log/sssd/*.log >&2 2>/dev/null || true
    die "sssd exited during start-up"
}
# 1. All responders up: the monitor writes /run/sssd.pid then (and has its
#    SIGHUP handler installed long before; an early SIGHUP would kill it).
until [ -e /run/sssd.pid ] && [ -S /var/lib/sss/pipes/nss ]; do
    alive_or_die
    [ $(($(date +%s) - t0)) -le "$READY_TIMEOUT" ] || die "sssd did not start within $READY_TIMEOUT s"
    sleep 0.1
done
# 2. Data complete: the last user and group resolve through sss alone.
until getent -s sss passwd "$last" >/dev/null 2>&1 &&
    { [ -z "$lastgrp" ] || getent -s sss group "$lastgrp" >/dev/null 2>&1; }; do
    alive_or_die
    [ $(($(date +%s) - t0)) -le "$READY_TIMEOUT" ] ||
        die "sssd ($PROVIDER provider) did not serve '$last' through sss within $READY_TIMEOUT s"
    kill -HUP "$SSSD_PID" # clear sssd_nss's negative cache (see above)
    sleep 1
done
log "sssd up (pid $SSSD_PID, $PROVIDER provider) after $(($(date +%s) - t0)) s; '$last' and group '${lastgrp:-none}' resolve through sss"

STEP="warming and checking the memory cache"
# Warm and verify the memory-mapped cache.
getent -s sss passwd "$probe" >/dev/null || die "getent -s sss passwd $probe failed"
getent -s sss passwd "$(awk -F: -v u="$probe" '$1 == u {print $3}' /etc/passwd)" >/dev/null || true
[ -s /var/lib/sss/mc/passwd ] || die "/var/lib/sss/mc/passwd missing: memory cache not in use"
if command -v strace >/dev/null 2>&1; then
    tr=$(strace -f -e trace=connect,openat getent -s sss passwd "$probe" 2>&1 >/dev/null)
    if echo "$tr" | grep -q 'pipes/nss'; then
        echo "$tr" | grep -E 'sss' >&2
        die "a warmed lookup of '$probe' still talked to sssd_nss over the pipe: mc not used"
    fi
    echo "$tr" | grep -q 'mc/passwd' || die "a warmed lookup of '$probe' did not open /var/lib/sss/mc/passwd"
    log "warmed lookup of '$probe' served from /var/lib/sss/mc/passwd (no connect to pipes/nss, checked with strace)"
else
    log "strace not installed: skipped the no-pipe check of the warmed lookup"
fi

set +e
CMD_RAN=yes
"$@"
rc=$?
set -e
exit $rc
