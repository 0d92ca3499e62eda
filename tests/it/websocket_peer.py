"""WebSocket peers for tests/it/websocket.rs (Python `websockets`, both sides real).

server <log> <deflate|none> [<cert> <key>]: serves on 127.0.0.1 (TLS with cert and key) (port printed on the first stdout line);
  every message received is appended to <log> as a JSON line {"msg": ...}, acknowledged with
  "ack", and "bye" makes the server close (1000). The connection's end is logged as
  {"close": code, "reason": ...}.
client <gate_port> <url> <deflate|none> <scenario> <messages.json>: connects to <url> through
  the gate (origin-form: the socket goes to the gate, the Host names the destination), plays
  the scenario, prints one JSON line: acks received, close code and reason, the negotiated
  extensions.
"""
import asyncio
import json
import socket
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def server(log, deflate, tls):
    async def handler(ws):
        try:
            async for msg in ws:
                if isinstance(msg, bytes):
                    msg = msg.decode("latin-1")
                with open(log, "a") as f:
                    f.write(json.dumps({"msg": msg}) + "\n")
                if msg == "bye":
                    await ws.close(1000, "bye")
                    break
                try:
                    await ws.send("ack")
                except ConnectionClosed:
                    # Closed by the gate while this message was acknowledged: the messages
                    # received before the close are still queued; log them all.
                    continue
        except ConnectionClosed:
            pass
        rcvd = ws.protocol.close_rcvd
        with open(log, "a") as f:
            f.write(json.dumps({"close": rcvd.code if rcvd else None,
                                "reason": rcvd.reason if rcvd else None}) + "\n")

    comp = "deflate" if deflate == "deflate" else None
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
    async with serve(handler, "127.0.0.1", 0, compression=comp, max_size=None,
                     ping_interval=None, ssl=ctx) as srv:
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


async def client(gate_port, url, deflate, scenario, messages):
    comp = "deflate" if deflate == "deflate" else None
    kw = dict(compression=comp, max_size=None, ping_interval=None, open_timeout=30,
              close_timeout=30)
    if scenario.startswith("tls:"):
        # wss through the gate's CONNECT (interception), trusting the gate's CA.
        ctx = ssl.create_default_context(cafile=scenario[4:])
        kw.update(proxy=f"http://127.0.0.1:{gate_port}", ssl=ctx)
        scenario = "messages"
    else:
        sock = socket.create_connection(("127.0.0.1", gate_port))
        kw.update(sock=sock, proxy=None)
    acks = 0
    out = {}
    try:
        async with connect(url, **kw) as ws:
            out["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
            if scenario == "messages":
                for m in messages:
                    # "hex:<hex>" is sent as a binary message.
                    await ws.send(bytes.fromhex(m[4:]) if m.startswith("hex:") else m)
            elif scenario == "fragments":
                for m in messages:
                    await ws.send(list(m))  # each list element one frame
            elif scenario == "unfinished":
                async def forever():
                    yield messages[0]
                    await asyncio.Future()
                asyncio.ensure_future(ws.send(forever()))
            elif scenario == "pingflood":
                for _ in range(20000):
                    await ws.ping()
                for m in messages:
                    await ws.send(m)
            try:
                async for msg in ws:
                    if msg == "ack":
                        acks += 1
            except ConnectionClosed:
                pass
            rcvd = ws.protocol.close_rcvd
            out.update(code=rcvd.code if rcvd else None, reason=rcvd.reason if rcvd else None)
    except ConnectionClosed as e:
        rcvd = e.rcvd
        out.update(code=rcvd.code if rcvd else None, reason=rcvd.reason if rcvd else None)
    except Exception as e:  # the handshake refused: the HTTP status
        out["error"] = repr(e)
        status = getattr(getattr(e, "response", None), "status_code", None)
        out["status"] = status
    out["acks"] = acks
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server(sys.argv[2], sys.argv[3], sys.argv[4:6]))
    else:
        with open(sys.argv[6]) as f:
            messages = json.load(f)
        asyncio.run(client(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], messages))
