#!/bin/sh
# Adds or removes the `connect` service in /etc/nsswitch.conf.
#
#   nsswitch.sh enable  [FILE]   append `connect` to passwd, group and (if
#                                present) initgroups, after what is there
#   nsswitch.sh disable [FILE]   remove it again
#
# Idempotent. Install libnss_connect.so.2 BEFORE enabling: a process that
# fails to dlopen a module never retries in its lifetime.
#
# Without an initgroups line glibc takes initgroups from the group line and
# asks every source (files and connect), which is what we want; an explicit
# `initgroups: files connect` would stop at files for a local user who is in
# a local group, so the line is only extended if the admin already has one.
set -eu
action=${1:-}
file=${2:-/etc/nsswitch.conf}
[ -f "$file" ] || { echo "nsswitch.sh: $file does not exist" >&2; exit 1; }
tmp=$(mktemp "$file.XXXXXX")
trap 'rm -f "$tmp"' EXIT
case "$action" in
enable)
    awk '
        /^[ \t]*(passwd|group|initgroups)[ \t]*:/ {
            line = $0; sub(/[ \t]*#.*$/, "", line)
            n = split(line, words, /[ \t]+/); has = 0
            for (i = 1; i <= n; i++) if (words[i] == "connect") has = 1
            if (!has) { print line " connect"; next }
        }
        { print }' "$file" > "$tmp" ;;
disable)
    awk '
        /^[ \t]*(passwd|group|initgroups)[ \t]*:/ {
            gsub(/[ \t]+connect([ \t]+\[[^]]*\])?([ \t]|$)/, " ")
            sub(/[ \t]+$/, "")
        }
        { print }' "$file" > "$tmp" ;;
*)
    echo "usage: nsswitch.sh enable|disable [FILE]" >&2; exit 2 ;;
esac
chmod --reference="$file" "$tmp"
mv "$tmp" "$file"
trap - EXIT
grep -E '^[ \t]*(passwd|group|initgroups)[ \t]*:' "$file"
