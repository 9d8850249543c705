#!/bin/sh
# Installs Connect from this source tree (as root): binaries, the NSS
# module, the configuration (kept if present), the service account, the
# systemd units; starts nameserviced; enables `connect` in
# /etc/nsswitch.conf (after the module is in place); then starts connectd.
# Undo with packaging/uninstall.sh.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
cargo=${CARGO:-cargo}
multiarch=$(gcc -print-multiarch 2>/dev/null || dpkg-architecture -qDEB_HOST_MULTIARCH)
libdir=/usr/lib/$multiarch

echo "==> building (release)"
module=$("$root/packaging/build-nss-module.sh")
"$cargo" build --quiet --release --locked -p nameserviced -p connectd --manifest-path "$root/Cargo.toml"

echo "==> installing"
install -D -m 0755 "$root/target/release/nameserviced" /usr/sbin/nameserviced
install -D -m 0755 "$root/target/release/nameservicectl" /usr/bin/nameservicectl
install -D -m 0755 "$root/target/release/connectd" /usr/sbin/connectd
# Write beside and rename: a process loading the module never sees half a file.
install -m 0644 "$module" "$libdir/.libnss_connect.so.2.new"
mv -f "$libdir/.libnss_connect.so.2.new" "$libdir/libnss_connect.so.2"
ldconfig
install -d -m 0755 /etc/connect
if [ ! -e /etc/connect/connect.gcfg ]; then
    install -m 0644 "$root/packaging/connect.gcfg" /etc/connect/connect.gcfg
    echo "    wrote /etc/connect/connect.gcfg"
else
    echo "    kept the existing /etc/connect/connect.gcfg"
fi
install -D -m 0644 "$root/README.md" /usr/share/doc/connect-nameservice/README.md
if ! getent passwd connect >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/connect --shell /usr/sbin/nologin connect
    echo "    created the service account 'connect'"
fi

echo "==> checking the configuration"
/usr/sbin/nameserviced --check
/usr/sbin/connectd --check

echo "==> starting nameserviced"
if [ -d /run/systemd/system ]; then
    install -D -m 0644 "$root/packaging/systemd/nameserviced.service" /etc/systemd/system/nameserviced.service
    systemctl daemon-reload
    systemctl enable --now nameserviced.service
    systemctl restart nameserviced.service
else
    # No systemd (a container): run it in the background, logging to a file.
    if [ -f /run/connect-nameservice/nameserviced.pid ]; then
        kill "$(cat /run/connect-nameservice/nameserviced.pid)" 2>/dev/null || true
        sleep 0.5
    fi
    install -d -m 0755 /run/connect-nameservice /var/log
    "$root/packaging/private-log.sh" /var/log/nameserviced.log
    nohup /usr/sbin/nameserviced >>/var/log/nameserviced.log 2>&1 &
    echo $! > /run/connect-nameservice/nameserviced.pid
    echo "    no systemd: started pid $(cat /run/connect-nameservice/nameserviced.pid), log /var/log/nameserviced.log"
fi
i=0
until nameservicectl health >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "nameserviced did not come up" >&2; exit 1; }
    sleep 0.1
done

echo "==> enabling 'connect' in /etc/nsswitch.conf"
"$root/packaging/nsswitch.sh" enable /etc/nsswitch.conf

echo "==> starting connectd"
if [ -d /run/systemd/system ]; then
    install -D -m 0644 "$root/packaging/systemd/connectd.service" /etc/systemd/system/connectd.service
    systemctl daemon-reload
    systemctl enable --now connectd.service
    systemctl restart connectd.service
else
    if [ -f /run/connectd.pid ]; then
        kill "$(cat /run/connectd.pid)" 2>/dev/null || true
        sleep 0.5
    fi
    "$root/packaging/private-log.sh" /var/log/connectd.log
    nohup /usr/sbin/connectd >>/var/log/connectd.log 2>&1 &
    echo $! > /run/connectd.pid
    echo "    no systemd: started pid $(cat /run/connectd.pid), log /var/log/connectd.log"
fi
