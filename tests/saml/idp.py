"""A SAML 2.0 identity provider for connectd's end-to-end tests.

Built on pysaml2 (pinned in requirements.txt; scripts/deps.sh installs it
into tests/saml/.venv) with Debian's xmlsec1 doing the signing, so every
response connectd sees is made and signed by a third-party SAML stack,
not by code of this project.

It listens on a loopback port and prints one JSON line with its base URL.
Endpoints:
  GET  /metadata             the IdP's metadata (entity ID <base>/idp)
  GET  /sso                  HTTP-Redirect binding: a login form
  POST /login                checks the password, answers the SP with an
                             auto-submitting HTTP-POST form
  POST /__test__/sp?url=U    loads the SP's metadata from U (connectd's)
  POST /__test__/mode?set=M  shapes the next response (see MODES)
  POST /__test__/metadata?fail=1|0
                             makes /metadata answer 500, or serve again
  GET  /__test__/unsolicited?user=U&relay=R
                             an IdP-initiated response for user U

Users are {"<login>": {"password", "id", "username", "first", "last",
"email", "groups": [...], "role"}}; "id" is the persistent NameID.
"""

import base64
import datetime
import html
import json
import os
import socket
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, samlp
from saml2 import xmldsig as ds
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.s_utils import sid
from saml2.saml import (
    AUTHN_PASSWORD,
    NAME_FORMAT_BASIC,
    NAMEID_FORMAT_PERSISTENT,
    NAMEID_FORMAT_TRANSIENT,
    NameID,
)
from saml2.server import Server
from saml2.sigver import pre_signature_part, signed_instance_factory

# What the next response looks like; "ok" after it is sent.
MODES = {
    "ok",  # signed response and assertion
    "unsigned",  # nothing signed
    "assertion_only",  # only the assertion signed
    "other_key",  # signed by a key the metadata does not hold
    "wrong_audience",
    "wrong_recipient",
    "wrong_destination",
    "expired",
    "failure",  # status Responder/AuthnFailed, no assertion
    "transient",  # a transient NameID
    "no_audience",  # no AudienceRestriction at all
    "sha1",  # signed with RSA-SHA1 (pysaml2's default, and broken)
}

# What IdPs sign with today; "sha1" mode uses pysaml2's old default.
SHA256 = {"sign_alg": ds.SIG_RSA_SHA256, "digest_alg": ds.DIGEST_SHA256}
SHA1 = {"sign_alg": ds.SIG_RSA_SHA1, "digest_alg": ds.DIGEST_SHA1}

STATE = {"mode": "ok", "sp": None, "metadata_fails": False}
LOCK = threading.Lock()


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_server(base, key, cert, name):
    conf = {
        "entityid": base + "/idp",
        "name": name,
        "service": {
            "idp": {
                "endpoints": {
                    "single_sign_on_service": [(base + "/sso", BINDING_HTTP_REDIRECT)],
                },
                "name_id_format": [NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT],
                "policy": {
                    "default": {
                        "lifetime": {"minutes": 5},
                        "attribute_restrictions": None,
                        "name_form": NAME_FORMAT_BASIC,
                    }
                },
                # IDP_REQUIRE_SIGNED_REQUESTS=1: refuse AuthnRequests that
                # the SP (by the certificate in its metadata) did not sign.
                "want_authn_requests_signed": os.environ.get("IDP_REQUIRE_SIGNED_REQUESTS") == "1",
            }
        },
        "key_file": key,
        "cert_file": cert,
        "xmlsec_binary": "/usr/bin/xmlsec1",
        "metadata": {},
        "delete_tmpfiles": True,
    }
    config = IdPConfig()
    config.load(conf)
    return Server(config=config), config


def sign(response, server, algs=SHA256):
    """Signs the assertion, then the response, with `server`'s key."""
    to_sign = []
    if response.assertion is not None:
        response.assertion.signature = pre_signature_part(
            response.assertion.id, server.sec.my_cert, 1, **algs
        )
        to_sign.append((type(response.assertion).__name__, response.assertion.id))
    response.signature = pre_signature_part(response.id, server.sec.my_cert, 2, **algs)
    to_sign.append((type(response).__name__, response.id))
    return signed_instance_factory(response, server.sec, to_sign)


def build(idp, other, user, sp_entity_id, acs, in_response_to, mode):
    if mode == "failure":
        response = idp.create_error_response(
            in_response_to, acs, (samlp.STATUS_RESPONDER, "the IdP refused: AuthnFailed"),
            sign=False,
        )
        if isinstance(response, str):
            response = samlp.response_from_string(response)
        response.status.status_code.status_code = samlp.StatusCode(
            value=samlp.STATUS_AUTHN_FAILED
        )
        return response.to_string().decode()
    identity = {
        "Username": [user["username"]],
        "FirstName": [user["first"]],
        "LastName": [user["last"]],
        "Email": [user["email"]],
        "Groups": list(user["groups"]),
        "Role": [user["role"]],
    }
    name_id = NameID(
        format=NAMEID_FORMAT_TRANSIENT if mode == "transient" else NAMEID_FORMAT_PERSISTENT,
        text=sid() if mode == "transient" else user["id"],
    )
    response = idp.create_authn_response(
        identity,
        in_response_to,
        acs,
        sp_entity_id,
        name_id=name_id,
        authn={"class_ref": AUTHN_PASSWORD, "authn_auth": idp.config.entityid},
        sign_response=False,
        sign_assertion=False,
    )
    if isinstance(response, (str, bytes)):
        response = samlp.response_from_string(response)
    assertion = response.assertion
    confirmation = assertion.subject.subject_confirmation[0].subject_confirmation_data
    if mode == "wrong_audience":
        assertion.conditions.audience_restriction[0].audience[0].text = "https://elsewhere.example/sp"
    elif mode == "no_audience":
        assertion.conditions.audience_restriction = []
    elif mode == "wrong_recipient":
        confirmation.recipient = "https://elsewhere.example/__login__/callback"
    elif mode == "wrong_destination":
        response.destination = "https://elsewhere.example/__login__/callback"
    elif mode == "expired":
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
        response.issue_instant = iso(past)
        assertion.issue_instant = iso(past)
        assertion.conditions.not_before = iso(past)
        assertion.conditions.not_on_or_after = iso(past + datetime.timedelta(minutes=5))
        confirmation.not_on_or_after = iso(past + datetime.timedelta(minutes=5))
    if mode == "unsigned":
        return response.to_string().decode()
    if mode == "assertion_only":
        assertion.signature = pre_signature_part(assertion.id, idp.sec.my_cert, 1, **SHA256)
        return signed_instance_factory(
            response, idp.sec, [(type(assertion).__name__, assertion.id)]
        )
    if mode == "sha1":
        return sign(response, idp, SHA1)
    return sign(response, other if mode == "other_key" else idp)


def post_form(acs, saml_response, relay_state):
    encoded = base64.b64encode(saml_response.encode()).decode()
    relay = (
        f'<input type="hidden" name="RelayState" value="{html.escape(relay_state)}">'
        if relay_state
        else ""
    )
    return (
        "<!doctype html><html><body onload=\"document.forms[0].submit()\">"
        f'<form method="post" action="{html.escape(acs)}">'
        f'<input type="hidden" name="SAMLResponse" value="{encoded}">{relay}'
        '<noscript><button type="submit">Continue</button></noscript>'
        "</form></body></html>"
    )


REQUEST_FIELDS = ("SAMLRequest", "RelayState", "SigAlg", "Signature")


def parse_request(idp, fields):
    """The AuthnRequest of an HTTP-Redirect binding, its signature checked
    when there is one (and required when the IdP wants signed requests)."""
    request = idp.parse_authn_request(
        fields["SAMLRequest"],
        BINDING_HTTP_REDIRECT,
        relay_state=fields.get("RelayState"),
        sigalg=fields.get("SigAlg"),
        signature=fields.get("Signature"),
    )
    if request is None:
        raise ValueError("the AuthnRequest was refused")
    return request


def login_page(fields, message=""):
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(fields[name])}">'
        for name in REQUEST_FIELDS
        if name in fields
    )
    return (
        "<!doctype html><html><body><h1>Test IdP</h1>"
        f"<p>{html.escape(message)}</p>"
        f'<form method="post" action="/login">{hidden}'
        '<input name="login"><input name="password" type="password">'
        '<button type="submit">Sign in</button></form></body></html>'
    )


def main():
    key, cert, other_key, other_cert = sys.argv[1:5]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(os.environ.get("IDP_PORT", "0"))))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    idp, config = make_server(base, key, cert, "connect test IdP")
    # The same entity with another key: what an attacker without the IdP's
    # key could sign with.
    other, _ = make_server(base, other_key, other_cert, "impostor")
    users_file = os.environ["IDP_USERS"]
    metadata = create_metadata_string(None, config=config, valid=24).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            sys.stdout.write("idp: " + (fmt % args) + "\n")
            sys.stdout.flush()

        def reply(self, code, body, content_type="text/html; charset=utf-8"):
            data = body.encode() if isinstance(body, str) else body
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def query(self):
            return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))

        def form(self):
            length = int(self.headers.get("Content-Length") or 0)
            return dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            try:
                if path == "/metadata":
                    with LOCK:
                        fails = STATE["metadata_fails"]
                    if fails:
                        self.reply(500, "metadata unavailable (test)", "text/plain")
                    else:
                        self.reply(200, metadata, "application/samlmetadata+xml")
                elif path == "/sso":
                    q = self.query()
                    request = parse_request(idp, q)
                    signed = "signed" if "Signature" in q else "unsigned"
                    print(f"idp: {signed} AuthnRequest {request.message.id}", flush=True)
                    self.reply(200, login_page(q))
                elif path == "/__test__/unsolicited":
                    q = self.query()
                    self.answer(q["user"], None, q.get("relay", ""))
                else:
                    self.reply(404, "not found")
            except Exception as e:  # a test fixture: say what broke
                self.reply(500, f"idp error: {e!r}", "text/plain")

        def do_POST(self):
            path = urllib.parse.urlsplit(self.path).path
            try:
                if path == "/login":
                    f = self.form()
                    users = load_users()
                    user = users.get(f.get("login", ""))
                    if user is None or user["password"] != f.get("password"):
                        self.reply(200, login_page(f, "wrong password"))
                        return
                    request = parse_request(idp, f)
                    self.answer(f["login"], request.message, f.get("RelayState", ""))
                elif path == "/__test__/sp":
                    url = self.query()["url"]
                    with urllib.request.urlopen(url) as r:
                        text = r.read().decode()
                    idp.metadata.load("inline", text)
                    other.metadata.load("inline", text)
                    with LOCK:
                        STATE["sp"] = text
                    self.reply(200, "loaded", "text/plain")
                elif path == "/__test__/metadata":
                    with LOCK:
                        STATE["metadata_fails"] = self.query()["fail"] == "1"
                    self.reply(200, "ok", "text/plain")
                elif path == "/__test__/mode":
                    mode = self.query()["set"]
                    if mode not in MODES:
                        self.reply(400, f"unknown mode {mode}", "text/plain")
                        return
                    with LOCK:
                        STATE["mode"] = mode
                    self.reply(200, mode, "text/plain")
                else:
                    self.reply(404, "not found")
            except Exception as e:
                self.reply(500, f"idp error: {e!r}", "text/plain")

        def answer(self, login, request, relay_state):
            users = load_users()
            user = users[login]
            if request is not None:
                args = idp.response_args(request, [BINDING_HTTP_POST])
                acs, sp_entity_id, in_response_to = (
                    args["destination"],
                    args["sp_entity_id"],
                    args["in_response_to"],
                )
            else:
                sp_entity_id = list(idp.metadata.with_descriptor("spsso").keys())[0]
                acs = idp.metadata.assertion_consumer_service(sp_entity_id, BINDING_HTTP_POST)[0][
                    "location"
                ]
                in_response_to = None
            with LOCK:
                mode = STATE["mode"]
                STATE["mode"] = "ok"
            xml = build(idp, other, user, sp_entity_id, acs, in_response_to, mode)
            print(f"idp: answered {login} with mode {mode}", flush=True)
            self.reply(200, post_form(acs, xml, relay_state))

    def load_users():
        with open(users_file) as f:
            return json.load(f)

    sock.listen(64)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    print(json.dumps({"base": base, "entity_id": base + "/idp"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
