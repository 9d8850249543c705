#!/bin/sh
# Install the peer NSS providers the benchmark compares against (nscd, SSSD)
# WITHOUT changing how this host resolves names.
#
# Packages: nscd, sssd-common (ships sssd, sssd_nss, sssd_be and the `files`
# id provider /usr/lib/<multiarch>/sssd/libsss_files.so in 2.8), sssd-proxy
# (libsss_proxy.so: the `proxy` id provider, which with-sssd.sh uses by
# default, see NOTES.md for why not `files`) and libnss-sss
# (libnss_sss.so.2).
#
# What the maintainer scripts would change, and what we do about it:
#   * libnss-sss postinst appends `sss` to passwd/group/shadow/netgroup/
#     services lines of /etc/nsswitch.conf and adds an `automount:` line;
#   * sssd-common postinst runs `adduser --system sssd` (edits /etc/passwd,
#     /etc/group, /etc/shadow, /etc/gshadow) and tries to start sssd;
#   * nscd postinst tries to start nscd;
#   * update-rc.d / deb-systemd-helper add boot-time enable symlinks.
# So: the whole of /etc is copied first; a policy-rc.d that exits 101 stops
# invoke-rc.d from starting anything; afterwards every pre-existing file
# under /etc that differs is copied back (and checked with cmp), the new
# boot-time enable symlinks for nscd/sssd are removed, and any nscd/sssd
# process that started anyway is killed.  /etc/ld.so.cache is the only
# pre-existing file allowed to change (it is ldconfig's cache, regenerated
# for the new libraries, not configuration).
#
# Idempotent: exits at once when everything is already installed.
#
# Every way it fails ends with exactly one line "install.sh: FAILED: <why>"
# on stderr (last line), which connect-bench puts into its table.
set -eu

STEP="starting"
REASON=no
fail() { echo "install.sh: FAILED: $*" >&2; REASON=yes; exit 1; }
POLICY_SET=no
on_exit() {
    rc=$?
    # Interrupted during the install: put the previous policy-rc.d back.
    [ "$POLICY_SET" = no ] || restore_policy
    if [ "$rc" -ne 0 ] && [ "$REASON" = no ]; then
        echo "install.sh: FAILED: exit $rc while $STEP" >&2
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 143' INT TERM

PKGS="nscd sssd-common sssd-proxy libnss-sss"
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

installed() {
    for p in $PKGS; do
        s=$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null || true)
        [ "$s" = "install ok installed" ] || return 1
    done
    [ -x /usr/sbin/nscd ] && [ -x /usr/sbin/sssd ] &&
        [ -e "/usr/lib/$MULTIARCH/sssd/libsss_files.so" ] &&
        [ -e "/usr/lib/$MULTIARCH/sssd/libsss_proxy.so" ] &&
        { [ -e "/lib/$MULTIARCH/libnss_sss.so.2" ] || [ -e "/usr/lib/$MULTIARCH/libnss_sss.so.2" ]; }
}

if installed; then
    echo "install.sh: $PKGS already installed; nothing to do"
    exit 0
fi

missing=""
for p in $PKGS; do
    s=$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null || true)
    [ "$s" = "install ok installed" ] || missing="$missing $p"
done
[ "$(id -u)" = 0 ] || fail "must run as root to install${missing:- the peer packages} (sudo bench/peers/install.sh)"
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null ||
    fail "apt-get/dpkg-query not found: the peers are Debian's nscd and sssd packages ($PKGS)"

# nscd/sssd processes a maintainer script may have started: those in OUR
# mount namespace (invoke-rc.d's children inherit it) and, when readable, in
# pid 1's (a daemon started through systemctl). Benchmark daemons that
# with-nscd.sh / with-sssd.sh run in their own private namespaces are in
# neither and are not ours to touch. /proc/1/ns/mnt is unreadable in some
# containers and VMs; then only our own namespace counts.
SELF_NS=$(readlink /proc/self/ns/mnt) || fail "cannot read /proc/self/ns/mnt"
INIT_NS=$(readlink /proc/1/ns/mnt 2>/dev/null || true)
# Scans /proc itself rather than use pgrep: a minimal root has no procps,
# and a missing pgrep would make this check pass without looking.
daemon_pids() {
    for dir in /proc/[0-9]*; do
        comm=$(cat "$dir/comm" 2>/dev/null) || continue
        case "$comm" in nscd* | sssd*) echo "${dir#/proc/}" ;; esac
    done
}
host_daemons() {
    for pid in $(daemon_pids); do
        pns=$(readlink "/proc/$pid/ns/mnt" 2>/dev/null || true)
        if [ -n "$pns" ] && { [ "$pns" = "$SELF_NS" ] || [ "$pns" = "$INIT_NS" ]; }; then
            echo "$pid"
        fi
    done
    return 0
}

STEP="backing up /etc"
BK=$(mktemp -d /tmp/nss-bench-install.XXXXXX)
echo "install.sh: installing$missing; backing up /etc to $BK/etc"
cp -a /etc "$BK/etc"
find /etc -xdev -type l | sort >"$BK/links.before"
host_daemons >"$BK/pids.before"
# nscd's postinst runs systemd-tmpfiles, which creates /run/nscd.
RUN_NSCD_BEFORE=no
[ ! -e /run/nscd ] || RUN_NSCD_BEFORE=yes

# policy-rc.d: nothing may start during the install.
POLICY=/usr/sbin/policy-rc.d
HAD_POLICY=no
if [ -e "$POLICY" ]; then
    HAD_POLICY=yes
    cp -a "$POLICY" "$BK/policy-rc.d"
fi
restore_policy() {
    if [ "$HAD_POLICY" = yes ]; then
        cp -a "$BK/policy-rc.d" "$POLICY"
    else
        rm -f "$POLICY"
    fi
    POLICY_SET=no
}
POLICY_SET=yes
printf '#!/bin/sh\n# nss-bench install.sh: start nothing\nexit 101\n' >"$POLICY"
chmod 755 "$POLICY"

STEP="installing $PKGS with apt-get"
rc=0
echo "install.sh: apt-get install $PKGS"
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 $PKGS \
    >"$BK/apt.log" 2>&1 || rc=$?
if [ $rc -ne 0 ]; then
    # A fresh machine may have no (or stale) package lists.
    echo "install.sh: apt-get install failed (rc=$rc); apt-get update, then again"
    DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=300 >>"$BK/apt.log" 2>&1 || true
    rc=0
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 $PKGS \
        >>"$BK/apt.log" 2>&1 || rc=$?
fi
grep -v 'Reading database' "$BK/apt.log" | tail -n 5 | sed 's/^/  apt: /'
restore_policy
STEP="restoring /etc after the install"

# Kill any daemon that started anyway (only ones that were not running before).
for pid in $(host_daemons); do
    if ! grep -qx "$pid" "$BK/pids.before"; then
        echo "install.sh: killing daemon that started during install: $(ps -o pid=,comm= -p "$pid" || true)"
        kill "$pid" 2>/dev/null || true
    fi
done
sleep 0.5
for pid in $(host_daemons); do
    grep -qx "$pid" "$BK/pids.before" || kill -9 "$pid" 2>/dev/null || true
done

# Restore every pre-existing file under /etc that the maintainer scripts changed.
changed=0
(cd "$BK/etc" && find . \( -type f -o -type l \) -print) | while IFS= read -r rel; do
    f="/etc/${rel#./}"
    b="$BK/etc/${rel#./}"
    [ "$f" = /etc/ld.so.cache ] && continue
    if [ -L "$b" ]; then
        if [ "$(readlink "$b")" != "$(readlink "$f" 2>/dev/null || echo MISSING)" ]; then
            echo "install.sh: restoring symlink $f"
            rm -f "$f"; cp -a "$b" "$f"
        fi
    elif ! cmp -s "$b" "$f"; then
        echo "install.sh: restoring $f (changed by a maintainer script)"
        cp -a "$b" "$f"
    fi
done

# Remove the boot-time enable links the install added (rc?.d, systemd wants).
find /etc -xdev -type l | sort >"$BK/links.after"
comm -13 "$BK/links.before" "$BK/links.after" | while IFS= read -r l; do
    case "$l" in
    /etc/rc?.d/*nscd | /etc/rc?.d/*sssd | /etc/systemd/system/*.wants/*)
        echo "install.sh: removing boot-time enable link $l -> $(readlink "$l")"
        rm -f "$l" ;;
    esac
done

if [ "$RUN_NSCD_BEFORE" = no ] && rmdir /run/nscd 2>/dev/null; then
    echo "install.sh: removed the empty /run/nscd the install created"
fi

# Drop directories that only held those links (e.g. sssd.service.wants).
find /etc/systemd/system -xdev -mindepth 1 -type d -empty -newer "$BK/links.before" -print -delete 2>/dev/null |
    sed 's/^/install.sh: removed empty directory /' || true

# Verify.
bad=0
(cd "$BK/etc" && find . -type f -print) | while IFS= read -r rel; do
    [ "/etc/${rel#./}" = /etc/ld.so.cache ] && continue
    cmp -s "$BK/etc/${rel#./}" "/etc/${rel#./}" || { echo "install.sh: STILL DIFFERS: /etc/${rel#./}" >&2; echo x; }
done >"$BK/bad"
if [ -s "$BK/bad" ]; then bad=1; fi
if cmp -s "$BK/etc/nsswitch.conf" /etc/nsswitch.conf; then
    echo "install.sh: /etc/nsswitch.conf byte-identical to before: ok"
else
    echo "install.sh: /etc/nsswitch.conf DIFFERS" >&2; bad=1
fi
if getent passwd sssd >/dev/null; then
    echo "install.sh: sssd user still present" >&2; bad=1
fi
left=$(host_daemons | grep -v -x -F -f "$BK/pids.before" || true)
if [ -n "$left" ]; then
    echo "install.sh: a daemon is still running" >&2; bad=1
else
    echo "install.sh: no nscd/sssd process running: ok"
fi

if [ $rc -ne 0 ]; then
    why=$(grep -E '^(E|Err):' "$BK/apt.log" | tail -n 1 || true)
    fail "apt-get install $PKGS failed (rc=$rc): ${why:-see $BK/apt.log}"
fi
[ $bad -eq 0 ] || fail "host /etc NOT restored cleanly after the install (see above); backup in $BK"
installed || fail "$PKGS: still not all installed after apt-get; log in $BK/apt.log"
echo "install.sh: installed $PKGS; host configuration unchanged (backup kept in $BK)"
