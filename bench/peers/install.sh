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
set -eu

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

[ "$(id -u)" = 0 ] || { echo "install.sh: must run as root" >&2; exit 1; }

# nscd/sssd processes in the HOST's mount namespace (benchmark daemons that
# with-nscd.sh / with-sssd.sh run in private namespaces are not ours to touch).
host_daemons() {
    hostns=$(readlink /proc/1/ns/mnt)
    for pid in $(pgrep '^(nscd|sssd)' || true); do
        [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$hostns" ] && echo "$pid"
    done
    return 0
}

BK=$(mktemp -d /tmp/nss-bench-install.XXXXXX)
echo "install.sh: backing up /etc to $BK/etc"
cp -a /etc "$BK/etc"
find /etc -xdev -type l | sort >"$BK/links.before"
host_daemons >"$BK/pids.before"

# policy-rc.d: nothing may start during the install.
POLICY=/usr/sbin/policy-rc.d
HAD_POLICY=no
if [ -e "$POLICY" ]; then
    HAD_POLICY=yes
    cp -a "$POLICY" "$BK/policy-rc.d"
fi
printf '#!/bin/sh\n# nss-bench install.sh: start nothing\nexit 101\n' >"$POLICY"
chmod 755 "$POLICY"

restore_policy() {
    if [ "$HAD_POLICY" = yes ]; then
        cp -a "$BK/policy-rc.d" "$POLICY"
    else
        rm -f "$POLICY"
    fi
}

rc=0
echo "install.sh: apt-get install $PKGS"
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $PKGS \
    >"$BK/apt.log" 2>&1 || rc=$?
grep -v 'Reading database' "$BK/apt.log" | tail -n 5 | sed 's/^/  apt: /'
restore_policy

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
    echo "install.sh: apt-get failed (rc=$rc); log in $BK/apt.log" >&2
    exit $rc
fi
if [ $bad -ne 0 ]; then
    echo "install.sh: host NOT restored cleanly; backup in $BK" >&2
    exit 1
fi
installed || { echo "install.sh: packages still missing" >&2; exit 1; }
echo "install.sh: installed $PKGS; host configuration unchanged (backup kept in $BK)"
