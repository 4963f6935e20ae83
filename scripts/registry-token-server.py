#!/usr/bin/env python3
"""Test token issuer for a docker-registry configured with `auth.token` (bearer tokens).

    registry-token-server.py --listen 127.0.0.1:5003 --key KEY.pem --cert CERT.pem \
        --issuer ISSUER --users USER:PASS[,USER:PASS...]

GET /token?service=S&scope=repository:NAME:ACTIONS[&scope=...] answers
{"token": JWT, "access_token": JWT, "expires_in": 300, "issued_at": ...}.

Policy (what the warren tests rely on):
- anonymous: `pull` on repositories not under `private/`;
- a listed user (HTTP Basic): `pull` and `push` everywhere;
- wrong user or password: 401.
The JWT is RS256-signed, with the signing certificate in the `x5c` header: distribution
2.8 verifies the chain against `auth.token.rootcertbundle` (the same self-signed cert).
Every request is appended to LOG (one line: path, whether Authorization was present) so
tests can check what clients sent.
"""
import argparse
import base64
import json
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--users", default="")
    ap.add_argument("--log", default=None)
    a = ap.parse_args()

    with open(a.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with open(a.cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    users = dict(u.split(":", 1) for u in a.users.split(",") if u)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet: the log file is ours
            pass

        def reply(self, code, body, extra=()):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            q = urllib.parse.parse_qs(url.query)
            authz = self.headers.get("Authorization")
            if a.log:
                with open(a.log, "a") as lf:
                    lf.write(f"{self.path} auth={'yes' if authz else 'no'}\n")
            if url.path != "/token":
                return self.reply(404, {"error": "not found"})
            user = None
            if authz:
                try:
                    scheme, cred = authz.split(" ", 1)
                    u, p = base64.b64decode(cred).decode().split(":", 1)
                except Exception:
                    return self.reply(400, {"error": "bad Authorization header"})
                if scheme.lower() != "basic" or users.get(u) != p:
                    return self.reply(
                        401,
                        {"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]},
                        [("WWW-Authenticate", 'Basic realm="warren-test-token"')],
                    )
                user = u
            service = (q.get("service") or [""])[0]
            access = []
            for scope in q.get("scope", []):
                parts = scope.split(":")
                if len(parts) < 3:
                    continue
                typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
                if typ != "repository":
                    continue
                if user is not None:
                    allowed = {"pull", "push"}
                elif name.startswith("private/"):
                    allowed = set()
                else:
                    allowed = {"pull"}
                granted = [x for x in actions if x in allowed]
                access.append({"type": typ, "name": name, "actions": granted})
            now = int(time.time())
            header = {"typ": "JWT", "alg": "RS256", "x5c": x5c}
            claims = {
                "iss": a.issuer,
                "sub": user or "",
                "aud": service,
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": f"{now}-{id(self)}",
                "access": access,
            }
            signing_input = (
                b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
            ).encode()
            sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
            token = signing_input.decode() + "." + b64url(sig)
            self.reply(
                200,
                {"token": token, "access_token": token, "expires_in": 300,
                 "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))},
            )

    host, port = a.listen.rsplit(":", 1)
    srv = ThreadingHTTPServer((host, int(port)), Handler)
    srv.daemon_threads = True
    sys.stdout.write(f"token server on {a.listen}\n")
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
