#!/bin/sh
# The quickstart's demo directory: Debian's own OpenLDAP slapd, run from
# /var/lib/connect-demo/slapd with a configuration and database of its own
# (never the system slapd's, which stays as it was), listening on loopback
# only: ldap://127.0.0.1:3389/.
#
# Safe to run again: the directory is loaded once, its passwords are kept in
# /var/lib/connect-demo/passwords (root only), and slapd is started only if
# it does not answer. `directory.sh stop` stops it; scripts/down removes it.
#
# What is in it (dc=demo,dc=connect):
#   people: alice (Data-Science), bob (Sales), carol (IT-Administrators)
#   groups: Data-Science, Sales, IT-Administrators
#   cn=reader: the read-only account connectd searches with
set -eu
demo=/var/lib/connect-demo
dir=$demo/slapd
passwords=$demo/passwords
base=dc=demo,dc=connect
url=ldap://127.0.0.1:3389/
unit=connect-demo-slapd.service

answering() {
    ldapsearch -x -LLL -H "$url" -s base -b '' namingContexts >/dev/null 2>&1
}

stop() {
    if [ -d /run/systemd/system ] && [ -e "/etc/systemd/system/$unit" ]; then
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
        rm -f "/etc/systemd/system/$unit"
        systemctl daemon-reload
    elif [ -s "$dir/slapd.pid" ]; then
        kill "$(cat "$dir/slapd.pid")" 2>/dev/null || true
        i=0
        while answering && [ $i -lt 50 ]; do i=$((i + 1)); sleep 0.1; done
    fi
}

case "${1:-start}" in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac

password_of() { awk -v who="$1" '$1 == who { print $2 }' "$passwords"; }

if [ ! -e "$dir/loaded" ]; then
    echo "==> creating the demo directory in $dir"
    rm -rf "$dir"
    # slapd (user openldap) must reach its directory; the passwords file
    # itself is root's alone.
    install -d -m 0755 "$demo"
    install -d -m 0750 "$dir" "$dir/db"
    if [ ! -s "$passwords" ]; then
        umask 077
        for who in reader alice bob carol; do
            # 16 letters and digits: easy to type into a sign-in form.
            printf '%s %s\n' "$who" "$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 16)"
        done >"$passwords"
        umask 022
    fi
    ssha() { /usr/sbin/slappasswd -n -s "$1"; }
    cat >"$dir/slapd.conf" <<CONF
# Written by scripts/demo/directory.sh: the quickstart's demo directory.
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile $dir/slapd.pid
argsfile $dir/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
# Clients read the root DSE to discover what the server supports.
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read
# Passwords are only ever compared (a bind), never read.
access to attrs=userPassword by * auth
access to * by dn.exact="cn=reader,$base" read by self read by * none
database mdb
suffix "$base"
rootdn "cn=admin,$base"
directory $dir/db
maxsize 67108864
index objectClass eq
index uid,cn eq
index member eq
index entryUUID eq
CONF
    person() { # uid given surname group
        cat <<LDIF
dn: uid=$1,ou=people,$base
objectClass: inetOrgPerson
uid: $1
givenName: $2
sn: $3
cn: $2 $3
mail: $1@demo.connect
userPassword: $(ssha "$(password_of "$1")")

LDIF
    }
    {
        cat <<LDIF
dn: $base
objectClass: dcObject
objectClass: organization
o: Connect demo
dc: demo

dn: ou=people,$base
objectClass: organizationalUnit
ou: people

dn: ou=groups,$base
objectClass: organizationalUnit
ou: groups

dn: cn=reader,$base
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: reader
description: the read-only account connectd searches the directory with
userPassword: $(ssha "$(password_of reader)")

LDIF
        person alice Alice Liddell
        person bob Bob Builder
        person carol Carol Admin
        for group in Data-Science:alice Sales:bob IT-Administrators:carol; do
            cat <<LDIF
dn: cn=${group%%:*},ou=groups,$base
objectClass: groupOfNames
cn: ${group%%:*}
member: uid=${group#*:},ou=people,$base

LDIF
        done
    } >"$dir/demo.ldif"
    /usr/sbin/slapadd -q -f "$dir/slapd.conf" -l "$dir/demo.ldif"
    rm -f "$dir/demo.ldif"
    chown -R openldap:openldap "$dir"
    touch "$dir/loaded"
fi

if answering; then
    echo "    the demo directory is answering at $url"
    exit 0
fi
echo "==> starting the demo directory at $url"
args="-f $dir/slapd.conf -h $url -u openldap -g openldap"
if [ -d /run/systemd/system ]; then
    cat >"/etc/systemd/system/$unit" <<UNIT
[Unit]
Description=Demo LDAP directory for the Connect quickstart (scripts/up)
After=network.target

[Service]
Type=forking
PIDFile=$dir/slapd.pid
ExecStart=/usr/sbin/slapd $args
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now "$unit"
else
    # No systemd (a container): slapd puts itself in the background.
    # shellcheck disable=SC2086
    /usr/sbin/slapd $args
fi
i=0
until answering; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "the demo directory did not answer at $url" >&2; exit 1; }
    sleep 0.1
done
