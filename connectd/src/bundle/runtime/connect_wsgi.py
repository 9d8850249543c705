"""Serve a WSGI application (Flask, Django, Dash, ...) on a Unix socket or TCP.

Usage: python connect_wsgi.py (--socket PATH | --bind HOST:PORT) --app-dir DIR
       --entrypoint MODULE:OBJECT

connectd starts one of these per process of a "python-api" content item and
reverse-proxies viewers' requests to the socket. Standard library only: it must
run in any virtual environment, whatever the publisher's requirements hold.

- The app is imported before the socket is bound, so a broken app never looks
  ready; its import error goes to stderr and the exit status is 1.
- HTTP/1.1 with keep-alive. A response without Content-Length is sent chunked
  to HTTP/1.1 clients, and ends the connection for HTTP/1.0 ones. Chunked
  request bodies are decoded (into memory or a temporary file) so the app sees
  an ordinary CONTENT_LENGTH.
- One line per request on stderr: method, target, status, bytes, milliseconds.
- The only client is connectd's proxy, so X-Forwarded-For/-Proto/-Host and
  X-Forwarded-Prefix (a path prefix the proxy removed) are trusted and set
  REMOTE_ADDR, wsgi.url_scheme, HTTP_HOST and SCRIPT_NAME. On a TCP port
  (--bind), whoever chose the address must keep everyone else from reaching
  it, as the Unix socket's private directory does.
- SIGTERM stops the server (the socket file is removed); requests in flight
  are not waited for, so connectd's own grace period decides.
"""

import argparse
import importlib
import os
import signal
import socket
import socketserver
import stat
import sys
import tempfile
import time
import traceback
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote

# Headers that describe one hop, not the response: PEP 3333 forbids apps to set
# them, and this server decides the connection's framing itself.
HOP_BY_HOP = frozenset(
    [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    ]
)

# An idle keep-alive connection holds a thread; give it back after this long.
IDLE_TIMEOUT_SECONDS = 75
# Bodies the app left unread are skipped up to this size to keep the
# connection; past it, closing is cheaper than reading.
MAX_DRAIN_BYTES = 1 << 20
# Decoded chunked request bodies stay in memory up to this size.
SPOOL_MEMORY_BYTES = 1 << 20


def log(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def load_app(entrypoint, app_dir):
    """Import MODULE and follow OBJECT's dotted attributes (e.g. app:server.wsgi)."""
    module_name, _, object_path = entrypoint.partition(":")
    sys.path.insert(0, app_dir)
    module = importlib.import_module(module_name)
    candidates = [object_path] if object_path else ["app", "application"]
    for candidate in candidates:
        target = module
        try:
            for attribute in candidate.split("."):
                target = getattr(target, attribute)
        except AttributeError:
            continue
        if not callable(target):
            raise TypeError(
                "%s:%s is a %s, not a WSGI application (a callable)"
                % (module_name, candidate, type(target).__name__)
            )
        return target
    raise AttributeError(
        "module %r has no attribute %s"
        % (module_name, " or ".join(repr(c) for c in candidates))
    )


class BodyReader:
    """wsgi.input for a body of known length: never reads past its end, so the
    next request on the connection stays intact."""

    def __init__(self, rfile, length):
        self._rfile = rfile
        self.remaining = length

    def read(self, size=-1):
        if self.remaining <= 0:
            return b""
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        data = self._rfile.read(size)
        self.remaining -= len(data)
        if not data:
            # The client went away mid-body.
            self.remaining = 0
        return data

    def readline(self, size=-1):
        if self.remaining <= 0:
            return b""
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        data = self._rfile.readline(size)
        self.remaining -= len(data)
        if not data:
            self.remaining = 0
        return data

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def drain(self, limit):
        """Skip what the app did not read; False when more than `limit` is left."""
        if self.remaining > limit:
            return False
        while self.remaining > 0:
            if not self.read(min(self.remaining, 65536)):
                return False
        return True


class BadRequest(Exception):
    pass


def read_chunked(rfile):
    """Decode a chunked request body into a seekable file."""
    body = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)
    while True:
        line = rfile.readline(1026)
        if not line.endswith(b"\n"):
            raise BadRequest("bad chunk size line")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest("bad chunk size line")
        if size < 0:
            raise BadRequest("bad chunk size line")
        if size == 0:
            break
        while size > 0:
            data = rfile.read(min(size, 65536))
            if not data:
                raise BadRequest("body ended inside a chunk")
            body.write(data)
            size -= len(data)
        if rfile.readline(3) not in (b"\r\n", b"\n"):
            raise BadRequest("missing CRLF after a chunk")
    # Trailers: read and dropped, as WSGI has no place for them.
    while True:
        line = rfile.readline(65537)
        if line in (b"\r\n", b"\n", b""):
            break
    length = body.tell()
    body.seek(0)
    return body, length


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "connect-wsgi"
    sys_version = ""
    timeout = IDLE_TIMEOUT_SECONDS

    # A Unix socket's peer has no (host, port): BaseHTTPRequestHandler's
    # address_string() would index into an empty string.
    def address_string(self):
        return "-"

    def log_message(self, format, *args):
        log("%s - %s" % (self.address_string(), format % args))

    def log_request(self, code="-", size="-"):
        # Replaced by the one line per request written in run_app().
        pass

    def handle_one_request(self):
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, ConnectionError):
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        try:
            self.run_app()
        except (BrokenPipeError, ConnectionError, TimeoutError):
            self.close_connection = True

    def environ(self, body, length):
        target = self.path
        # An absolute-form target (http://host/path) is legal HTTP/1.1.
        if "://" in target.split("?", 1)[0]:
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path, _, query = target.partition("?")
        headers = self.headers
        host = headers.get("X-Forwarded-Host") or headers.get("Host") or "localhost"
        host = host.split(",")[0].strip()
        scheme = (headers.get("X-Forwarded-Proto") or "").split(",")[0].strip()
        scheme = scheme.lower() if scheme.lower() in ("http", "https") else "http"
        server_name, _, server_port = host.rpartition(":")
        if not server_name or not server_port.isdigit() or "]" in server_port:
            server_name = host
            server_port = "443" if scheme == "https" else "80"
        forwarded_for = [
            a.strip() for a in (headers.get("X-Forwarded-For") or "").split(",")
        ]
        prefix = (headers.get("X-Forwarded-Prefix") or "").rstrip("/")
        environ = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": unquote(prefix, "latin-1"),
            # PEP 3333: PATH_INFO is decoded, as bytes taken for latin-1.
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "REQUEST_URI": target,
            "RAW_URI": target,
            "SERVER_NAME": server_name,
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": self.request_version,
            "SERVER_SOFTWARE": self.server_version,
            # The proxy appends the address it saw, so the last entry is the
            # one nobody but the proxy wrote.
            "REMOTE_ADDR": forwarded_for[-1] or self.peer_address(),
            "CONTENT_LENGTH": str(length) if length else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.input": body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        content_type = headers.get("Content-Type")
        if content_type is not None:
            environ["CONTENT_TYPE"] = content_type
        for name in set(headers.keys()):
            key = name.upper()
            # "X_User" and "X-User" would both become HTTP_X_USER: a client
            # could then pass off a header the proxy sets. Drop the underscored
            # spelling, as other servers do.
            if "_" in key or key in ("CONTENT-TYPE", "CONTENT-LENGTH"):
                continue
            key = "HTTP_" + key.replace("-", "_")
            separator = "; " if key == "HTTP_COOKIE" else ", "
            environ[key] = separator.join(headers.get_all(name))
        environ["HTTP_HOST"] = host
        return environ

    def peer_address(self):
        # A Unix socket's peer has no address: loopback's stands in for it.
        if isinstance(self.client_address, tuple):
            return self.client_address[0]
        return "127.0.0.1"

    def request_body(self):
        """wsgi.input and its length; None if the framing is bad (answered 400)."""
        encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if encoding:
            if encoding != "chunked":
                self.send_error(501, "Transfer-Encoding %s not supported" % encoding)
                return None
            try:
                return read_chunked(self.rfile)
            except BadRequest as e:
                self.send_error(400, str(e))
                return None
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return BodyReader(self.rfile, 0), 0
        values = {v.strip() for v in ",".join(lengths).split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            self.send_error(400, "bad Content-Length")
            return None
        length = int(values.pop())
        return BodyReader(self.rfile, length), length

    def run_app(self):
        started = time.monotonic()
        framed = self.request_body()
        if framed is None:
            self.close_connection = True
            return
        body, length = framed
        environ = self.environ(body, length)
        state = {
            "status": None,
            "headers": None,
            "sent": False,
            "chunked": False,
            "no_body": False,
        }
        sent_bytes = [0]
        head = self.command == "HEAD"

        def send_headers(known_length):
            status = state["status"]
            code = int(status[:3])
            headers = state["headers"]
            names = {n.lower() for n, _ in headers}
            no_body = head or code in (204, 304) or 100 <= code < 200
            state["no_body"] = no_body
            self.send_response_only(code, status[4:])
            for name, value in headers:
                self.send_header(name, value)
            if "date" not in names:
                self.send_header("Date", self.date_time_string())
            if "content-length" not in names:
                if known_length is not None:
                    if not (code in (204, 304) or code < 200):
                        self.send_header("Content-Length", str(known_length))
                elif no_body:
                    pass
                elif self.request_version == "HTTP/1.1":
                    self.send_header("Transfer-Encoding", "chunked")
                    state["chunked"] = True
                else:
                    self.close_connection = True
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            state["sent"] = True

        def write(data):
            if not isinstance(data, bytes):
                raise TypeError("WSGI apps must write bytes, not %s" % type(data))
            if state["status"] is None:
                raise AssertionError("write() before start_response()")
            if not state["sent"]:
                send_headers(None)
            if not data or state["no_body"]:
                return
            if state["chunked"]:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
            sent_bytes[0] += len(data)

        def start_response(status, headers, exc_info=None):
            if exc_info:
                try:
                    if state["sent"]:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif state["status"] is not None:
                raise AssertionError("start_response() called twice")
            if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit():
                raise ValueError("bad WSGI status %r" % (status,))
            kept = []
            for name, value in headers:
                if name.lower() in HOP_BY_HOP:
                    continue
                kept.append((name, value))
            state["status"] = status
            state["headers"] = kept
            return write

        result = None
        try:
            result = self.server.app(environ, start_response)
            # A one-element list (the common case) gets a Content-Length
            # instead of chunks.
            if (
                not state["sent"]
                and isinstance(result, (list, tuple))
                and len(result) <= 1
                and state["status"] is not None
            ):
                data = result[0] if result else b""
                if not isinstance(data, bytes):
                    raise TypeError("WSGI apps must return bytes, not %s" % type(data))
                send_headers(len(data))
                write(data)
            else:
                for data in result:
                    write(data)
                if state["status"] is None:
                    raise AssertionError("the app never called start_response()")
                if not state["sent"]:
                    send_headers(0)
            if state["chunked"]:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            log("error in %s %s:\n%s" % (self.command, self.path, traceback.format_exc()))
            if state["sent"]:
                # Part of a response is out; the only honest signal left is
                # to cut the connection.
                self.close_connection = True
            else:
                state["status"] = "500 Internal Server Error"
                state["headers"] = [("Content-Type", "text/plain; charset=utf-8")]
                message = b"Internal Server Error\n"
                send_headers(len(message))
                if not head:
                    self.wfile.write(message)
                sent_bytes[0] = len(message)
        finally:
            if hasattr(result, "close"):
                try:
                    result.close()
                except Exception:
                    log("error closing the response:\n" + traceback.format_exc())
            if isinstance(body, BodyReader):
                if not body.drain(MAX_DRAIN_BYTES):
                    self.close_connection = True
            else:
                body.close()
            log(
                '"%s %s %s" %s %d %.1fms'
                % (
                    self.command,
                    self.path,
                    self.request_version,
                    (state["status"] or "-")[:3],
                    sent_bytes[0],
                    (time.monotonic() - started) * 1000,
                )
            )


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    # http.server.HTTPServer would do, but its server_bind() takes the
    # address apart as (host, port); a Unix socket's address is a path.
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, path, app):
        self.app = app
        super().__init__(path, Handler, bind_and_activate=False)
        try:
            remove_stale_socket(path)
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise


class TcpHandler(Handler):
    # Headers and body leave in separate writes: without this, the body would
    # wait for the proxy's delayed ACK of the headers.
    disable_nagle_algorithm = True


class TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    request_queue_size = 128
    # A process started on the port of one that just ended must not wait for
    # the old connections' TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, host, port, app):
        self.app = app
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), TcpHandler)


def parse_bind(value):
    """HOST:PORT, or [HOST]:PORT for an IPv6 address, as (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, not %r" % value)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def remove_stale_socket(path):
    # A socket left by an earlier process of this app would make bind() fail;
    # remove it, but never a file of any other kind.
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="Unix socket to listen on")
    where.add_argument(
        "--bind", type=parse_bind, metavar="HOST:PORT", help="TCP address to listen on"
    )
    parser.add_argument("--app-dir", required=True, help="directory of the app's code")
    parser.add_argument(
        "--entrypoint", required=True, help="MODULE:OBJECT of the WSGI application"
    )
    args = parser.parse_args()

    try:
        app = load_app(args.entrypoint, args.app_dir)
    except Exception:
        log(
            "connect_wsgi: cannot load the WSGI application %r from %s:\n%s"
            % (args.entrypoint, args.app_dir, traceback.format_exc())
        )
        sys.exit(1)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    if args.bind is not None:
        host, port = args.bind
        server = TcpServer(host, port, app)
        shown = ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)
        log("connect_wsgi: serving %s on tcp:%s" % (args.entrypoint, shown))
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return
    server = Server(args.socket, app)
    bound = os.lstat(args.socket)
    log("connect_wsgi: serving %s on unix:%s" % (args.entrypoint, args.socket))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        # Remove the socket only if it is still ours: a successor process may
        # already have replaced it.
        try:
            now = os.lstat(args.socket)
            if (now.st_dev, now.st_ino) == (bound.st_dev, bound.st_ino):
                os.unlink(args.socket)
        except OSError:
            pass


if __name__ == "__main__":
    main()
