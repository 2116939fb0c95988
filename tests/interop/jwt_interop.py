#!/usr/bin/python3
"""jwt_interop.py - Mizan Web Tokens against an independent JWT library.

PyJWT (Debian package python3-jwt) mints HS256 tokens that the gateway's
verifier (through mizan_token_tool) must accept with the same claims, and
refuses the ones it must refuse; the gateway mints tokens that PyJWT must
accept. Run with the system interpreter:

    /usr/bin/python3 jwt_interop.py /path/to/mizan_token_tool

Exits 0 when every case passes; the last line is
"interop: N passed, M failed".
"""

import json
import subprocess
import sys
import time

try:
    import jwt
except ImportError:
    print("interop: FAILED: this Python (%s) has no 'jwt' module; install the Debian "
          "package python3-jwt (apt-get install python3-jwt)" % sys.executable)
    print("interop: 0 passed, 1 failed")
    sys.exit(1)

SECRET = "interop-secret-0123456789abcdef-A"
SECRET2 = "interop-secret-0123456789abcdef-B"
VECTOR_KEY = "mizan-token-secret-0123456789abcd"
VECTOR = ("eyJhbGciOiJIUzI1NiIsInR5cCI6Ik1XVCJ9."
          "eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwic3RhZmYiOnRydWUsInBlcm1zIjpbImJsb2cu"
          "YWRkX3Bvc3QiXX0.8ZNtHZnN0nAQpS6CUizlZOqMoP2oFuNmePKbCffP-Tc")

TOOL = None
CASES = []


class Failure(Exception):
    pass


def case(fn):
    CASES.append(fn)
    return fn


def check(cond, what):
    if not cond:
        raise Failure(what)


def run_tool(*args):
    """Runs the tool; returns (exit code, stdout stripped)."""
    proc = subprocess.run([TOOL] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=30)
    if proc.stderr.strip():
        # Sanitizer reports and usage errors land on stderr: never acceptable.
        raise Failure("tool wrote to stderr: %s" % proc.stderr.strip())
    return proc.returncode, proc.stdout.strip()


def tool_verify(secret, token, *extra):
    """Verifies through the tool; returns the claims dict (fails the case otherwise)."""
    rc, out = run_tool("verify", secret, token, *extra)
    check(rc == 0, "tool refused a valid token: %s" % out)
    return json.loads(out)


def tool_refuses(secret, token, reason, *extra):
    rc, out = run_tool("verify", secret, token, *extra)
    check(rc == 1, "tool accepted a token it must refuse (exit %d): %s" % (rc, out))
    check(reason in out, "refusal says %r, expected %r" % (out, reason))
    # The message must not repeat the token or any of its parts.
    for part in token.split("."):
        if len(part) >= 8:
            check(part not in out, "refusal echoes the token")


def tool_mint(secret, sub, *extra):
    rc, out = run_tool("mint", secret, sub, *extra)
    check(rc == 0, "tool could not mint: %s" % out)
    return out


def pyjwt_encode(payload, key, alg="HS256", headers=None):
    token = jwt.encode(payload, key, algorithm=alg, headers=headers)
    return token.decode() if isinstance(token, bytes) else token


# ---- PyJWT mints, the gateway verifies ------------------------------------

@case
def pyjwt_default_typ_jwt():
    now = int(time.time())
    tok = pyjwt_encode({"sub": "alice", "exp": now + 600}, SECRET)
    check(jwt.get_unverified_header(tok).get("typ") == "JWT", "PyJWT header has no typ JWT")
    c = tool_verify(SECRET, tok)
    check(c["sub"] == "alice" and c["exp"] == now + 600, "claims differ: %r" % c)
    check(c["staff"] is False and c["superuser"] is False and c["perms"] == [],
          "absent claims are not false/empty: %r" % c)
    check("nbf" not in c and "iat" not in c, "nbf/iat appeared: %r" % c)


@case
def pyjwt_typ_mwt_with_every_claim():
    now = int(time.time())
    payload = {"sub": "bob", "exp": now + 600, "nbf": now - 10, "iat": now - 10,
               "staff": True, "superuser": True,
               "perms": ["blog.add_post", "blog.publish_post"], "iss": "ignored"}
    tok = pyjwt_encode(payload, SECRET, headers={"typ": "MWT"})
    c = tool_verify(SECRET, tok)
    for k in ("sub", "exp", "nbf", "iat", "staff", "superuser", "perms"):
        check(c[k] == payload[k], "claim %s: tool %r, PyJWT %r" % (k, c.get(k), payload[k]))


@case
def pyjwt_kid_rotation():
    now = int(time.time())
    tok = pyjwt_encode({"sub": "carol", "exp": now + 600}, SECRET2, headers={"kid": "k2"})
    c = tool_verify(SECRET, tok, "--kid", "k1", "--key", "k2=" + SECRET2)
    check(c["sub"] == "carol", "claims differ: %r" % c)
    # The same token where k2 is not configured, or k2 holds the wrong secret.
    tool_refuses(SECRET, tok, "token key id is unknown", "--kid", "k1")
    tool_refuses(SECRET, tok, "token signature is invalid", "--kid", "k1",
                 "--key", "k2=" + SECRET)


@case
def pyjwt_reproduces_protocol_vector():
    tok = pyjwt_encode({"sub": "alice", "exp": 4102444800, "staff": True,
                        "perms": ["blog.add_post"]}, VECTOR_KEY, headers={"typ": "MWT"})
    check(tok == VECTOR, "PyJWT minted %s, PROTOCOL.md says %s" % (tok, VECTOR))
    c = tool_verify(VECTOR_KEY, VECTOR)
    check(c["sub"] == "alice" and c["staff"] is True and c["perms"] == ["blog.add_post"],
          "vector claims differ: %r" % c)
    d = jwt.decode(VECTOR, VECTOR_KEY, algorithms=["HS256"])
    check(d["sub"] == "alice", "PyJWT read the vector differently: %r" % d)


@case
def pyjwt_unicode_subject():
    now = int(time.time())
    tok = pyjwt_encode({"sub": "zo\u00eb \u6771", "exp": now + 600}, SECRET)
    c = tool_verify(SECRET, tok)
    check(c["sub"] == "zo\u00eb \u6771", "subject differs: %r" % c["sub"])


@case
def leeway_admits_slightly_stale_tokens():
    now = int(time.time())
    old = pyjwt_encode({"sub": "a", "exp": now - 30}, SECRET)
    early = pyjwt_encode({"sub": "a", "exp": now + 600, "nbf": now + 30}, SECRET)
    tool_refuses(SECRET, old, "token has expired")
    tool_refuses(SECRET, early, "token is not valid yet")
    tool_verify(SECRET, old, "--leeway", "60")
    tool_verify(SECRET, early, "--leeway", "60")


# ---- refusals --------------------------------------------------------------

@case
def pyjwt_expired_is_refused():
    now = int(time.time())
    tok = pyjwt_encode({"sub": "alice", "exp": now - 1}, SECRET)
    tool_refuses(SECRET, tok, "token has expired")


@case
def pyjwt_hs384_is_refused():
    now = int(time.time())
    tok = pyjwt_encode({"sub": "alice", "exp": now + 600}, SECRET, alg="HS384")
    tool_refuses(SECRET, tok, "token algorithm must be HS256")
    tok = pyjwt_encode({"sub": "alice", "exp": now + 600}, SECRET, alg="HS512")
    tool_refuses(SECRET, tok, "token algorithm must be HS256")


@case
def pyjwt_alg_none_is_refused():
    now = int(time.time())
    tok = pyjwt_encode({"sub": "alice", "exp": now + 600}, None, alg="none")
    tool_refuses(SECRET, tok, "token is malformed")


@case
def pyjwt_wrong_secret_is_refused():
    now = int(time.time())
    tok = pyjwt_encode({"sub": "alice", "exp": now + 600}, SECRET2)
    tool_refuses(SECRET, tok, "token signature is invalid")


@case
def pyjwt_claim_problems_are_refused():
    now = int(time.time())
    tool_refuses(SECRET, pyjwt_encode({"exp": now + 600}, SECRET), "token has no subject")
    tool_refuses(SECRET, pyjwt_encode({"sub": "a"}, SECRET), "token has no expiry")
    tool_refuses(SECRET, pyjwt_encode({"sub": "a", "exp": now + 600.5}, SECRET),
                 "token is malformed")
    tool_refuses(SECRET, pyjwt_encode({"sub": "a", "exp": now + 600, "perms": "x"}, SECRET),
                 "token is malformed")


# ---- the gateway mints, PyJWT verifies ------------------------------------

@case
def tool_mint_plain():
    before = int(time.time())
    tok = tool_mint(SECRET, "dave")
    header = jwt.get_unverified_header(tok)
    check(header == {"alg": "HS256", "typ": "MWT"}, "header: %r" % header)
    d = jwt.decode(tok, SECRET, algorithms=["HS256"])
    check(d["sub"] == "dave", "sub: %r" % d)
    check(d["exp"] - d["iat"] == 3600 and d["iat"] >= before, "exp/iat: %r" % d)
    check("staff" not in d and "superuser" not in d and "perms" not in d,
          "false claims were written: %r" % d)


@case
def tool_mint_every_claim():
    tok = tool_mint(SECRET, "erin", "--staff", "--superuser", "--perm", "blog.add_post",
                    "--perm", "blog.publish_post", "--ttl", "120", "--kid", "k1")
    header = jwt.get_unverified_header(tok)
    check(header.get("kid") == "k1" and header.get("typ") == "MWT", "header: %r" % header)
    d = jwt.decode(tok, SECRET, algorithms=["HS256"])
    check(d["sub"] == "erin" and d["staff"] is True and d["superuser"] is True,
          "claims: %r" % d)
    check(d["perms"] == ["blog.add_post", "blog.publish_post"], "perms: %r" % d)
    check(d["exp"] - d["iat"] == 120, "ttl: %r" % d)
    # And the gateway reads its own token back.
    c = tool_verify(SECRET, tok, "--kid", "k1")
    check(c["perms"] == d["perms"] and c["sub"] == "erin", "round trip: %r" % c)


@case
def tool_mint_unicode_subject():
    tok = tool_mint(SECRET, "zo\u00eb")
    d = jwt.decode(tok, SECRET, algorithms=["HS256"])
    check(d["sub"] == "zo\u00eb", "sub: %r" % d["sub"])


@case
def tool_mint_expired_and_wrong_secret_rejected_by_pyjwt():
    tok = tool_mint(SECRET, "frank", "--now", str(int(time.time()) - 7200), "--ttl", "60")
    try:
        jwt.decode(tok, SECRET, algorithms=["HS256"])
        raise Failure("PyJWT accepted an expired token minted by the tool")
    except jwt.ExpiredSignatureError:
        pass
    tok = tool_mint(SECRET, "frank")
    try:
        jwt.decode(tok, SECRET2, algorithms=["HS256"])
        raise Failure("PyJWT accepted a token under the wrong secret")
    except jwt.InvalidSignatureError:
        pass


def main():
    global TOOL
    if len(sys.argv) != 2:
        print("usage: /usr/bin/python3 jwt_interop.py /path/to/mizan_token_tool")
        return 2
    TOOL = sys.argv[1]
    passed = failed = 0
    for fn in CASES:
        try:
            fn()
        except Failure as e:
            failed += 1
            print("FAIL %s: %s" % (fn.__name__, e))
        except Exception as e:  # a crash in a case is a failure, not an abort
            failed += 1
            print("FAIL %s: %s: %s" % (fn.__name__, type(e).__name__, e))
        else:
            passed += 1
            print("ok   %s" % fn.__name__)
    print("interop: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
