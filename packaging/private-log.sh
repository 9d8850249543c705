#!/bin/sh
# A daemon's log file without systemd: created if missing, then root:adm
# 0640 (as /var/log/syslog), so that content, running as other accounts,
# cannot read sign-in failures (usernames) and client addresses in it.
# Where there is no adm group, root:root.
#
#     packaging/private-log.sh FILE...
set -eu
[ $# -gt 0 ] || { echo "usage: $0 FILE..." >&2; exit 2; }
for log in "$@"; do
    [ -e "$log" ] || : >"$log"
    chown root:adm "$log" 2>/dev/null || chown root:root "$log"
    chmod 0640 "$log"
done
