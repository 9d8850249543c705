#!/bin/sh
# Removes what install.sh installed. Keeps /etc/connect, connectd's data in
# /var/lib/connect and the account database in /var/lib/connect-nameservice (uids must never be reused, and
# files on disk still carry them): remove those by hand if you mean it.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "uninstall.sh: run as root" >&2; exit 1; }
if [ -d /run/systemd/system ] && [ -e /etc/systemd/system/connectd.service ]; then
    systemctl disable --now connectd.service || true
    rm -f /etc/systemd/system/connectd.service
elif [ -f /run/connectd.pid ]; then
    kill "$(cat /run/connectd.pid)" 2>/dev/null || true
    rm -f /run/connectd.pid
fi
# First stop asking the module, then remove it.
"$root/packaging/nsswitch.sh" disable /etc/nsswitch.conf
if [ -d /run/systemd/system ] && [ -e /etc/systemd/system/nameserviced.service ]; then
    systemctl disable --now nameserviced.service || true
    rm -f /etc/systemd/system/nameserviced.service
    systemctl daemon-reload
elif [ -f /run/connect-nameservice/nameserviced.pid ]; then
    kill "$(cat /run/connect-nameservice/nameserviced.pid)" 2>/dev/null || true
    rm -f /run/connect-nameservice/nameserviced.pid
fi
multiarch=$(gcc -print-multiarch 2>/dev/null || dpkg-architecture -qDEB_HOST_MULTIARCH)
rm -f "/usr/lib/$multiarch/libnss_connect.so.2" /usr/sbin/nameserviced /usr/bin/nameservicectl \
    /usr/sbin/connectd
rm -rf /usr/share/doc/connect-nameservice
ldconfig
echo "removed; kept /etc/connect, /var/lib/connect and /var/lib/connect-nameservice"
