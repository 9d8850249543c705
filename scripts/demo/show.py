#!/usr/bin/python3
"""The quickstart's last step: show content running as each viewer.

Signs in to the connectd that scripts/up installed, as the demo directory's
administrator (carol) deploys the sample app (scripts/demo/app) set to run as
the current user, then opens it as two viewers (alice, bob) and prints, for
each, what the system says rather than what the app says:

- `getent passwd <viewer>` and `id <viewer>` (glibc, through the NSS module);
- the pid connectd recorded for that viewer's process (the content API's
  jobs), and that process's real uid read from /proc/<pid>/status;
- the file each process wrote into the shared directory, with `ls -ln`.

It fails (exit 1, saying why) if two viewers share a process or a uid, or if
a process's uid is not its viewer's. Safe to run again: the app is found by
name and deployed afresh.

Usage: show.py PASSWORDS_FILE SHARED_DIR [APP_DIR]
"""

import http.cookiejar
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request

BASE = "http://127.0.0.1:3939"
API = BASE + "/__api__/v1"
APP_NAME = "whoami-as-the-viewer"


class Failure(Exception):
    pass


class Session:
    """One signed-in person: a cookie jar and JSON requests."""

    def __init__(self, username, password):
        self.username = username
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.request("POST", BASE + "/__login__", {"username": username, "password": password})

    def request(self, method, url, body=None, raw=None, content_type="application/json"):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with self.opener.open(req, timeout=60) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as e:
            raise Failure("%s %s as %s: HTTP %d: %s" % (method, url, self.username, e.code, e.read().decode()))
        except urllib.error.URLError as e:
            raise Failure("%s %s: %s (is connectd running? see /var/log/connectd.log or journalctl -u connectd)" % (method, url, e.reason))
        return json.loads(text) if text.strip() else None


def bundle(app_dir):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name in sorted(os.listdir(app_dir)):
            tar.add(os.path.join(app_dir, name), arcname=name)
    return out.getvalue()


def deploy(admin, app_dir):
    existing = [c for c in admin.request("GET", API + "/content") if c.get("name") == APP_NAME]
    if existing:
        content = existing[0]
    else:
        content = admin.request(
            "POST",
            API + "/content",
            {"name": APP_NAME, "title": "Who am I? (runs as the viewer)",
             "access_type": "logged_in", "run_as_current_user": True},
        )
    guid = content["guid"]
    if not content.get("run_as_current_user"):
        admin.request("PATCH", API + "/content/" + guid, {"run_as_current_user": True})
    uploaded = admin.request("POST", API + "/content/%s/bundles" % guid, raw=bundle(app_dir),
                             content_type="application/gzip")
    task = admin.request("POST", API + "/content/%s/deploy" % guid, {"bundle_id": uploaded["id"]})
    deadline = time.monotonic() + 300
    while True:
        state = admin.request("GET", API + "/tasks/%s?wait=5" % task["task_id"])
        if state.get("finished"):
            break
        if time.monotonic() > deadline:
            raise Failure("the deployment did not finish in 5 minutes: %s" % state)
    if state.get("code") != 0:
        raise Failure("the deployment failed:\n%s" % "\n".join(state.get("output", [])))
    return guid


def status_ids(pid):
    """(real uid, real gid) of a live process, from the kernel."""
    ids = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid"):
                ids[key] = int(value.split()[0])
    return ids["Uid"], ids["Gid"]


def shell(command):
    print("$ " + " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        raise Failure("%s failed (%d): %s" % (" ".join(command), result.returncode, result.stderr))
    return result.stdout


def main():
    passwords_file, shared = sys.argv[1], sys.argv[2]
    app_dir = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(__file__), "app")
    with open(passwords_file) as f:
        passwords = dict(line.split() for line in f if line.strip())

    print("==> carol (IT-Administrators: administrator) deploys %s, set to run as the current user" % APP_NAME)
    admin = Session("carol", passwords["carol"])
    guid = deploy(admin, app_dir)
    url = "%s/content/%s/" % (BASE, guid)

    seen = {}
    for viewer in ("alice", "bob"):
        print()
        print("==> %s signs in and opens %s" % (viewer, url))
        session = Session(viewer, passwords[viewer])
        me = session.request("GET", API + "/user")
        answer = session.request("GET", url)
        print("    the app answered: %s" % json.dumps(answer))
        passwd = shell(["getent", "passwd", viewer]).strip()
        shell(["id", viewer])
        account_uid = int(passwd.split(":")[2])
        jobs = admin.request("GET", API + "/content/%s/jobs" % guid)
        running = [j for j in jobs if j.get("running") and j.get("viewer_guid") == me["guid"]]
        if not running:
            raise Failure("connectd lists no running process for %s: %s" % (viewer, jobs))
        pid = running[-1]["pid"]
        uid, gid = status_ids(pid)
        print("    connectd's process for %s: pid %d, /proc/%d/status says uid %d gid %d"
              % (viewer, pid, pid, uid, gid))
        if uid != account_uid:
            raise Failure("%s's process runs as uid %d, but getent says %s is uid %d"
                          % (viewer, uid, viewer, account_uid))
        seen[viewer] = (pid, uid)

    (pid_a, uid_a), (pid_b, uid_b) = seen["alice"], seen["bob"]
    if pid_a == pid_b or uid_a == uid_b:
        raise Failure("alice and bob share a process or a uid: %s" % seen)
    print()
    print("==> what each process left in the shared directory (owner = the viewer's uid)")
    shell(["ls", "-ln", shared])
    print()
    print("Two viewers, two processes, two uids: alice's app ran as uid %d (pid %d), bob's as uid %d (pid %d)."
          % (uid_a, pid_a, uid_b, pid_b))
    print("App: %s" % url)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print("scripts/up: %s" % e, file=sys.stderr)
        sys.exit(1)
