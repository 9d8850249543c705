#!/bin/sh
# Installs what a fresh Debian machine lacks to build and test (as root).
# Only calls apt-get when something is missing, so repeated runs are quick.
set -eu
missing=""
need() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }
need gcc gcc
# gcc only Recommends libc6-dev and this script installs without
# recommends; without it nothing links, not even a build script (Scrt1.o,
# crti.o, libc.so). Only libpam0g-dev's dependency brought it in before.
[ -e /usr/include/stdio.h ] || missing="$missing libc6-dev"
need nm binutils
need readelf binutils
need unshare util-linux
need setpriv util-linux
need getent libc-bin
need awk mawk
# connectd links libpam (the pam and pam-sys crates); the header and the
# libpam.so link are in the -dev package only.
[ -e /usr/include/security/pam_appl.h ] || missing="$missing libpam0g-dev"
# The LDAP fixture (tests/src/slapd.rs) runs its own slapd from a temporary
# directory; slapd lives in /usr/sbin, which a non-root PATH may lack.
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || missing="$missing slapd"
need ldapsearch ldap-utils
need openssl openssl
need curl curl
# Content: Python apps get a virtual environment of Debian's python3 (which
# every viewer's account can run; an interpreter under /root would not do),
# Node.js apps node and npm.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null ||
    missing="$missing python3 python3-venv"
[ -x /usr/bin/node ] || missing="$missing nodejs"
[ -x /usr/bin/npm ] || missing="$missing npm"
# The content benchmark (tests/src/bin/content-bench.rs) and its smoke test
# drive wrk through nginx (its own, from a temporary directory) and connectd.
need wrk wrk
# SAML sign-in: samael checks XML signatures with libxmlsec1 (through
# bindgen, which needs libclang) and libxml2, and reads keys with openssl;
# the test IdP (tests/saml/idp.py, pysaml2) signs with Debian's xmlsec1.
[ -e /usr/include/xmlsec1/xmlsec/xmlsec.h ] || missing="$missing libxmlsec1-dev"
[ -e /usr/include/libxml2/libxml/parser.h ] || missing="$missing libxml2-dev"
[ -e /usr/include/openssl/ssl.h ] || missing="$missing libssl-dev"
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || missing="$missing libclang-dev"
need pkg-config pkgconf
need xmlsec1 xmlsec1
# The dashboard's browser tests drive Debian's headless Chromium through
# its WebDriver (tests/tests/dashboard_browser.rs).
# A second files-like NSS source (/var/lib/extrausers), for the test that
# maps an identity onto an account only another NSS source resolves.
[ -e /usr/lib/libnss_extrausers.so.2 ] || [ -e /usr/lib/x86_64-linux-gnu/libnss_extrausers.so.2 ] || missing="$missing libnss-extrausers"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
if [ -n "$missing" ]; then
    echo "==> installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Installing slapd would start a system slapd on port 389 with a default
    # database, and nginx a system nginx on port 80. The tests never use them,
    # so forbid starting services during the install (policy-rc.d, exit 101)
    # unless a policy is already in place, and remove that policy afterwards
    # only if this script created it.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        trap 'rm -f "$policy"' EXIT
        trap 'exit 130' INT TERM
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
    fi
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
    # Belt and braces: if a system slapd got started anyway, stop it.
    case " $missing " in
    *" slapd "*)
        if [ -s /run/slapd/slapd.pid ] && kill -0 "$(cat /run/slapd/slapd.pid)" 2>/dev/null; then
            echo "==> stopping the system slapd the package started"
            kill "$(cat /run/slapd/slapd.pid)" || true
        fi
        ;;
    esac
fi
# The benchmark's peers (nscd, SSSD), which its smoke test measures: their
# packages, installed so that neither runs and this host's name resolution
# and /etc stay exactly as they were (the script checks it, and is a no-op
# once they are there), so the test itself never installs anything.
"$(dirname "$0")/../bench/peers/install.sh"
# The OpenID Connect tests run a real provider, panva's oidc-provider, from
# tests/oidc, pinned by its package-lock.json: `npm ci` installs exactly that
# (again only when the lock file changed). Where the checkout is read-only
# (the fresh-root check binds it so), the install goes to a scratch copy
# instead, which still proves it works with this machine's Node.js.
oidc="$(cd "$(dirname "$0")/.." && pwd)/tests/oidc"
if [ ! -w "$oidc" ]; then
    scratch=$(mktemp -d)
    cp "$oidc/package.json" "$oidc/package-lock.json" "$scratch/"
    echo "==> npm ci of the test OpenID Connect provider (in a scratch copy: $oidc is read-only)"
    (cd "$scratch" && npm ci --no-audit --no-fund --loglevel=error) >/dev/null
    rm -rf "$scratch"
elif [ ! -e "$oidc/node_modules/.package-lock.json" ] ||
    [ "$oidc/package-lock.json" -nt "$oidc/node_modules/.package-lock.json" ]; then
    echo "==> npm ci of the test OpenID Connect provider (tests/oidc)"
    (cd "$oidc" && npm ci --no-audit --no-fund --loglevel=error) >/dev/null
fi
# The SAML tests run a real IdP built on pysaml2 from tests/saml, pinned with
# hashes in requirements.txt, in a virtual environment of Debian's python3
# (again only when the requirements changed; a scratch one when the checkout
# is read-only, as for npm above).
saml="$(cd "$(dirname "$0")/.." && pwd)/tests/saml"
install_saml() {
    /usr/bin/python3 -m venv "$1"
    "$1/bin/pip" install -q --disable-pip-version-check --require-hashes \
        --no-deps -r "$saml/requirements.txt"
}
if [ ! -w "$saml" ]; then
    scratch=$(mktemp -d)
    echo "==> pip install of the test SAML IdP (in a scratch venv: $saml is read-only)"
    install_saml "$scratch/venv" >/dev/null
    rm -rf "$scratch"
elif [ ! -e "$saml/.venv/installed" ] ||
    [ "$saml/requirements.txt" -nt "$saml/.venv/installed" ]; then
    echo "==> pip install of the test SAML IdP (tests/saml/.venv)"
    rm -rf "$saml/.venv"
    install_saml "$saml/.venv" >/dev/null
    touch "$saml/.venv/installed"
fi
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        echo "cargo is in $HOME/.cargo/bin: add it to PATH" >&2
    else
        echo "Rust 1.88 or newer is needed (Debian's packaged rustc is older):" >&2
        echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" >&2
    fi
    exit 1
fi
