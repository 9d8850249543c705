"""Start a Streamlit app listening on a Unix socket (or TCP), for connectd.

Usage: python connect_streamlit.py (--socket PATH | --bind HOST:PORT)
       --app-dir DIR --entrypoint FILE

Streamlit up to 1.56 served with Tornado, which binds a Unix socket itself when
``server.address`` is ``unix://PATH``. From 1.57 Streamlit serves with uvicorn
and refuses ``unix://`` ("Unix sockets are not supported with Starlette
currently"), although uvicorn itself serves any listening socket it is handed.
For those versions this script replaces Streamlit's socket binding (the private
``_bind_socket`` of ``streamlit.web.server.starlette.starlette_server``) with
one that binds the Unix socket, and gives Streamlit a placeholder TCP address
that is never bound. If a future Streamlit moves that function, the app fails
at start with a message saying so instead of silently listening on TCP.

With --bind, Streamlit listens on that TCP address itself, whatever its
version, and nothing is patched.

Standard library only, apart from Streamlit itself.
"""

import argparse
import importlib.util
import os
import socket
import stat
import sys


def bind_unix(path, backlog):
    # A socket left behind by a previous process of this app would make
    # bind() fail with EADDRINUSE; remove it, but never anything else.
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def parse_bind(value):
    """HOST:PORT, or [HOST]:PORT for an IPv6 address, as (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, not %r" % value)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket")
    where.add_argument("--bind", type=parse_bind, metavar="HOST:PORT")
    parser.add_argument("--app-dir", required=True)
    parser.add_argument("--entrypoint", required=True)
    args = parser.parse_args()

    script = os.path.join(args.app_dir, args.entrypoint)
    flags = [
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        # The bundle is read-only: watching it for changes only costs
        # inotify watches and threads.
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
    ]

    tornado = importlib.util.find_spec("streamlit.web.server.routes") is not None
    if args.bind is not None:
        host, port = args.bind
        flags += ["--server.address=" + host, "--server.port=%d" % port]
    elif tornado:
        flags.append("--server.address=unix://" + args.socket)
    else:
        try:
            from streamlit.web.server.starlette import starlette_server
        except ImportError as e:
            sys.exit(
                "connect_streamlit: this Streamlit version has neither the Tornado "
                "nor the Starlette server this runner knows (%s); pin "
                "streamlit<=1.67 in the requirements" % e
            )
        if not callable(getattr(starlette_server, "_bind_socket", None)):
            sys.exit(
                "connect_streamlit: this Streamlit version cannot listen on a Unix "
                "socket and no longer has the hook this runner uses; pin "
                "streamlit<=1.67 in the requirements"
            )
        path = args.socket
        starlette_server._bind_socket = lambda _addr, _port, backlog: bind_unix(
            path, backlog
        )
        # Never bound (see above); explicit so that Streamlit does not probe
        # other ports or IPv6.
        flags += ["--server.address=127.0.0.1", "--server.port=8501"]

    from streamlit.web import cli

    sys.argv = ["streamlit", "run", script] + flags
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
