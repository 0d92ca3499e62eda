"""gRPC peers for tests/it/grpc.rs (Python `grpcio`, both sides real, no generated code: generic
handlers and raw bytes, the protobuf encoded by the test).

server <log> [<cert> <key>]: serves `partner.v1.CustomerService` on 127.0.0.1 (TLS with cert
  and key; plaintext HTTP/2 otherwise), port printed on the first stdout line. `Upload` (unary)
  and `UploadMany` (client streaming) append every message received to <log> as a JSON line
  {"msg": hex}, then the call's end: {"end": "completed", "count": n} when the client's stream
  ended cleanly, {"end": "cancelled", "count": n} when it was cut (reset). Both answer an Ack
  (field 1 = the count) with the custom trailing metadata `x-partner-trailer: kept`.
  `UploadLive` is `UploadMany` that sends its response headers (initial metadata
  `x-partner-started: yes`) before it reads the first message: the response has started
  while the client still sends.
web-server <log>: a gRPC-Web server over HTTP/1.1 (grpcio speaks no gRPC-Web) on 127.0.0.1,
  port printed on the first stdout line. A POST's body (Content-Length or chunked) is
  de-framed and logged like the gRPC server's (each message, then the end: "completed", or
  "cancelled" when the body broke off); the answer is `application/grpc-web+proto`, one data
  frame (the Ack) and a trailer frame (flag 0x80: `grpc-status: 0`, `x-partner-trailer: kept`).
client <spec.json>: makes one call through the gate and prints one JSON line: the status code
  name, its details, the response (hex), the initial and trailing metadata. The spec names the
  gate's port, the route (`h2c`: a plaintext channel to the gate with the destination as
  authority; `tls`: a TLS channel to the destination through the gate as an HTTP proxy, a
  CONNECT the gate intercepts, trusting the gate's CA), the method (`unary`, `stream`),
  the messages (hex), the compression (`gzip`, `none`) and the scenario: `plain`; `lockstep`
  (each message after the first is sent only once the server logged the one before it: the
  gate forwards message by message); `hold` (the messages sent, then the stream held open
  until the call ends); `paced` (a message every `pace` seconds). The method `live` calls `UploadLive`: the messages from index
  `after_headers` on are sent only once the server's response headers have arrived.
"""
import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "partner.v1.CustomerService"


def _ident(b):
    return b


def _log(path, obj):
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


def _ack(n):
    # Ack { int32 count = 1; } as raw protobuf.
    out = bytearray([0x08])
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _on_end(log, context, count):
    """Logs the call's end once it terminated: cancelled when the client's stream was cut
    (h2 RST_STREAM, a broken connection), completed when it ended cleanly and the status was
    sent. (grpcio ends the request iterator alike in both cases; only the call's close tells.)"""
    def done():
        # The sync API has no public "was cancelled" once the call is over.
        cancelled = getattr(context, "_state").client == "cancelled"
        _log(log, {"end": "cancelled" if cancelled else "completed", "count": count[0]})
    context.add_callback(done)


def server(log, tls):
    def upload(request, context):
        _on_end(log, context, [1])
        _log(log, {"msg": request.hex()})
        context.set_trailing_metadata((("x-partner-trailer", "kept"),))
        return _ack(1)

    def upload_many(request_iterator, context):
        n = [0]
        _on_end(log, context, n)
        for m in request_iterator:
            n[0] += 1
            _log(log, {"msg": m.hex()})
        context.set_trailing_metadata((("x-partner-trailer", "kept"),))
        return _ack(n[0])

    def upload_live(request_iterator, context):
        context.send_initial_metadata((("x-partner-started", "yes"),))
        return upload_many(request_iterator, context)

    handlers = {
        "Upload": grpc.unary_unary_rpc_method_handler(
            upload, request_deserializer=_ident, response_serializer=_ident),
        "UploadMany": grpc.stream_unary_rpc_method_handler(
            upload_many, request_deserializer=_ident, response_serializer=_ident),
        "UploadLive": grpc.stream_unary_rpc_method_handler(
            upload_live, request_deserializer=_ident, response_serializer=_ident),
    }
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                      options=[("grpc.so_reuseport", 0)])
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if tls:
        with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
            creds = grpc.ssl_server_credentials(((k.read(), c.read()),))
        port = srv.add_secure_port("127.0.0.1:0", creds)
    else:
        port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    print(port, flush=True)
    srv.wait_for_termination()


def web_server(log):
    """gRPC-Web over HTTP/1.1: see the module's docstring."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _body(self):
            if "content-length" in self.headers:
                n = int(self.headers["content-length"])
                data = self.rfile.read(n)
                if len(data) < n:
                    raise EOFError
                yield data
                return
            # chunked
            while True:
                line = self.rfile.readline()
                if not line:
                    raise EOFError
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                data = self.rfile.read(size)
                if len(data) < size or self.rfile.readline() != b"\r\n":
                    raise EOFError
                yield data

        def do_POST(self):
            buf = b""
            count = 0
            try:
                for chunk in self._body():
                    buf += chunk
                    while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[1:5], "big"):
                        n = int.from_bytes(buf[1:5], "big")
                        if buf[0] & 0x80:
                            raise EOFError  # a client sends no trailer frame
                        count += 1
                        _log(log, {"msg": buf[5:5 + n].hex()})
                        buf = buf[5 + n:]
                if buf:
                    raise EOFError
            except (EOFError, ValueError, OSError):
                _log(log, {"end": "cancelled", "count": count})
                self.close_connection = True
                return
            _log(log, {"end": "completed", "count": count})
            ack = _ack(count)
            trailer = b"grpc-status: 0\r\nx-partner-trailer: kept\r\n"
            body = (b"\x00" + len(ack).to_bytes(4, "big") + ack
                    + b"\x80" + len(trailer).to_bytes(4, "big") + trailer)
            self.send_response(200)
            self.send_header("content-type", "application/grpc-web+proto")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


def _logged(path):
    try:
        with open(path) as f:
            return sum(1 for line in f if '"msg"' in line)
    except FileNotFoundError:
        return 0


def client(spec):
    opts = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    if spec["route"] == "h2c":
        opts.append(("grpc.default_authority", spec["authority"]))
        channel = grpc.insecure_channel("127.0.0.1:%d" % spec["port"], options=opts)
    else:
        opts = [("grpc.enable_retries", 0),
                ("grpc.http_proxy", "http://127.0.0.1:%d" % spec["port"])]
        with open(spec["ca"], "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(spec["authority"], creds, options=opts)
    compression = grpc.Compression.Gzip if spec.get("compression") == "gzip" else None
    msgs = [bytes.fromhex(m) for m in spec["messages"]]
    timeout = spec.get("timeout", 60)
    scenario = spec.get("scenario", "plain")
    held = threading.Event()
    started = threading.Event()

    def requests():
        for i, m in enumerate(msgs):
            if scenario == "lockstep" and i > 0:
                # The server must have the message before the next one leaves the client.
                deadline = time.monotonic() + 30
                while _logged(spec["server_log"]) < i:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the server never got message %d" % i)
                    time.sleep(0.02)
            if i == spec.get("after_headers", -1) and not started.wait(30):
                raise RuntimeError("the server's response headers never arrived")
            if scenario == "paced" and i > 0:
                # A long-lived stream: a message every `pace` seconds.
                time.sleep(spec["pace"])
            yield m
        if scenario == "hold":
            # Held open: the call ends by the gate (or the client's own deadline).
            held.wait(timeout)

    out = {}
    try:
        if spec["method"] == "unary":
            call = channel.unary_unary("/%s/Upload" % SERVICE, request_serializer=_ident,
                                       response_deserializer=_ident)
            resp, c = call.with_call(msgs[0], timeout=timeout, compression=compression)
        elif spec["method"] == "live":
            call = channel.stream_unary("/%s/UploadLive" % SERVICE, request_serializer=_ident,
                                        response_deserializer=_ident)
            c = call.future(requests(), timeout=timeout, compression=compression)
            # Blocks until the response headers arrived (or the call ended).
            c.initial_metadata()
            started.set()
            resp = c.result()
        else:
            call = channel.stream_unary("/%s/UploadMany" % SERVICE, request_serializer=_ident,
                                        response_deserializer=_ident)
            resp, c = call.with_call(requests(), timeout=timeout, compression=compression)
        out = {"code": c.code().name, "details": c.details() or "", "response": resp.hex(),
               "initial": dict(c.initial_metadata() or ()),
               "trailing": dict(c.trailing_metadata() or ())}
    except grpc.RpcError as e:
        out = {"code": e.code().name, "details": e.details() or "",
               "initial": dict(e.initial_metadata() or ()),
               "trailing": dict(e.trailing_metadata() or ())}
    finally:
        held.set()
        started.set()
    print(json.dumps(out), flush=True)
    channel.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], sys.argv[3:5] if len(sys.argv) > 3 else None)
    elif sys.argv[1] == "web-server":
        web_server(sys.argv[2])
    else:
        with open(sys.argv[2]) as f:
            client(json.load(f))
