"""Who is asking: TLS serving and authentication of the API server, as kube-apiserver does them.

- `--tls-cert-file` / `--tls-private-key-file` turn on HTTPS (`server_ssl_context`).
- `--client-ca-file`: a client certificate signed by that CA authenticates its holder; the
  user is the subject's CN, the groups its O values (`admin` in `system:masters`).
- `--token-auth-file`: kube's static token CSV, `token,user,uid,"group1,group2"`, read from
  `Authorization: Bearer <token>`.
- `--anonymous-auth`: a request with no credentials is `system:anonymous` in
  `system:unauthenticated`. It defaults to on only when no authenticator is configured (the plain
  single-host setup); otherwise such a request gets 401 `Unauthorized`. Credentials that are
  presented and wrong always get 401, as kube's fail-on-error union does.

Authorization is allow-all for every authenticated user (RBAC is out of scope): authentication
only decides who the user is. The user is kept in the request (`request["user"]`) and
`POST /apis/authentication.k8s.io/v1/selfsubjectreviews` echoes it back, so
`kubectl auth whoami` works. Health and version endpoints stay open, as kube's
`system:public-info-viewer` role leaves them.
"""

from __future__ import annotations

import csv
import io
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from . import codec, errors
from .config import ServerConfig

SELF_SUBJECT_REVIEW_PATH = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
# Open to everyone, credentials or not (kube's system:public-info-viewer paths).
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")


class AuthnConfigError(ValueError):
    """A TLS or authentication flag names a file that is missing, unreadable or malformed."""


@dataclass(frozen=True)
class UserInfo:
    """An authenticated user, as kube's user.Info: name, uid, groups."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        """The authentication.k8s.io/v1 UserInfo shape."""
        out: dict[str, Any] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out


ANONYMOUS = UserInfo("system:anonymous", groups=(UNAUTHENTICATED,))


def _authenticated(name: str, uid: str, groups: Iterable[str]) -> UserInfo:
    """kube adds `system:authenticated` to the groups of every user it authenticates."""
    all_groups = [g for g in groups if g]
    if AUTHENTICATED not in all_groups:
        all_groups.append(AUTHENTICATED)
    return UserInfo(name, uid, tuple(dict.fromkeys(all_groups)))


# --- static tokens -------------------------------------------------------------------------------


def parse_token_csv(text: str, source: str = "token file") -> dict[str, UserInfo]:
    """kube's --token-auth-file: `token,user,uid[,"group1,group2"]` per line; `#` lines skipped."""
    tokens: dict[str, UserInfo] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 3:
            raise AuthnConfigError(
                f'{source}, line {lineno}: want token,user,uid[,"group1,group2"], got {len(row)} column(s)'
            )
        token, user, uid = (c.strip() for c in row[:3])
        if not token or not user:
            raise AuthnConfigError(f"{source}, line {lineno}: the token and the user name must not be empty")
        groups = [g.strip() for g in row[3].split(",")] if len(row) > 3 else []
        if token in tokens:
            raise AuthnConfigError(f"{source}, line {lineno}: the token is listed twice")
        tokens[token] = _authenticated(user, uid, groups)
    return tokens


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (None when there is no such header)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


# --- client certificates ---------------------------------------------------------------------------


def user_from_peercert(peercert: Mapping[str, Any] | None) -> UserInfo | None:
    """The user a verified client certificate names (CN = user, each O = a group), from the dict
    `ssl.SSLSocket.getpeercert()` gives; None without a certificate or without a CN."""
    if not peercert:
        return None
    common_name = ""
    groups: list[str] = []
    for rdn in peercert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                common_name = value
            elif key == "organizationName":
                groups.append(value)
    if not common_name:
        return None
    return _authenticated(common_name, "", groups)


# --- the authenticator ------------------------------------------------------------------------------


def unauthorized() -> errors.ApiError:
    return errors.ApiError(401, "Unauthorized", "Unauthorized")


def is_public_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS)


@dataclass
class Authenticator:
    """Client certificates, then bearer tokens, then (when allowed) anonymous."""

    tokens: dict[str, UserInfo] = field(default_factory=dict)
    client_certs: bool = False
    anonymous: bool = True

    @property
    def enabled(self) -> bool:
        """Whether requests need checking at all (otherwise everyone is anonymous)."""
        return self.client_certs or bool(self.tokens) or not self.anonymous

    def authenticate(self, authorization: str | None, peercert: Mapping[str, Any] | None) -> UserInfo:
        """The request's user, or ApiError 401."""
        if self.client_certs:
            user = user_from_peercert(peercert)
            if user is not None:
                return user
        token = bearer_token(authorization)
        if token is not None:
            user = self.tokens.get(token)
            if user is None:
                raise unauthorized()  # presented and wrong: no fall-through to anonymous
            return user
        if self.anonymous:
            return ANONYMOUS
        raise unauthorized()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        try:
            request["user"] = self.authenticate(request.headers.get("Authorization"), peercert)
        except errors.ApiError:
            if not is_public_path(request.path):
                raise
            request["user"] = ANONYMOUS
        return await handler(request)

    def middlewares(self) -> list[Any]:
        """What to put in the application's middleware list (nothing when auth is off)."""
        return [self.middleware] if self.enabled else []


def _read(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise AuthnConfigError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None


def load_authenticator(config: ServerConfig) -> Authenticator:
    """The authenticator the flags ask for; AuthnConfigError when a file is missing or malformed."""
    tokens: dict[str, UserInfo] = {}
    if config.token_auth_file:
        text = _read(config.token_auth_file, "--token-auth-file")
        tokens = parse_token_csv(text, f"--token-auth-file {config.token_auth_file}")
    client_certs = bool(config.client_ca_file)
    if client_certs and not config.tls_cert_file:
        raise AuthnConfigError(
            "--client-ca-file needs HTTPS: give --tls-cert-file and --tls-private-key-file"
        )
    anonymous = config.anonymous_auth
    if anonymous is None:
        anonymous = not (client_certs or config.token_auth_file)
    return Authenticator(tokens, client_certs, anonymous)


def server_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The HTTPS context (None for plain HTTP): the serving pair, and the client CA to verify
    client certificates against when one is given (a certificate is optional, a bad one fails)."""
    cert, key = config.tls_cert_file, config.tls_private_key_file
    if not cert and not key:
        return None
    if not cert or not key:
        raise AuthnConfigError("--tls-cert-file and --tls-private-key-file go together")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise AuthnConfigError(f"cannot load the serving certificate {cert} / key {key}: {exc}") from None
    if config.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=config.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise AuthnConfigError(f"--client-ca-file: cannot load {config.client_ca_file}: {exc}") from None
        ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# --- SelfSubjectReview ---------------------------------------------------------------------------------


async def self_subject_review(request: web.Request) -> web.Response:
    """POST selfsubjectreviews: the caller's own user info (`kubectl auth whoami`)."""
    raw = await request.read()
    if raw:
        body = codec.decode_object(raw, request.headers.get("Content-Type"))
        kind = body.get("kind")
        if kind not in (None, "", "SelfSubjectReview"):
            raise errors.bad_request(f"the body must be a SelfSubjectReview, not a {kind}")
    user: UserInfo = request.get("user") or ANONYMOUS
    review = {
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "status": {"userInfo": user.to_api()},
    }
    return web.Response(body=orjson.dumps(review), status=201, content_type="application/json")
