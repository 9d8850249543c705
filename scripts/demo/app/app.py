"""The quickstart's sample app: says who it runs as and leaves a note in the
shared directory, as whoever opened it (the file's owner proves it)."""
import json
import os
import pwd
import time

SHARED = "/srv/connect-demo/shared"


def app(environ, start_response):
    me = pwd.getpwuid(os.getuid()).pw_name
    note = os.path.join(SHARED, me + ".txt")
    with open(note, "a") as f:
        f.write("%s was here at %s (pid %d)\n" % (me, time.strftime("%H:%M:%S"), os.getpid()))
    body = json.dumps({"user": me, "uid": os.getuid(), "pid": os.getpid(), "wrote": note})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode() + b"\n"]
