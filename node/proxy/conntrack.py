"""Deleting stale UDP conntrack entries over ctnetlink, as kube-proxy does after endpoint changes.

A UDP "connection" lives in the kernel's conntrack table for as long as packets keep flowing, and
with it the NAT decision taken for its first packet. So when a UDP endpoint goes away, a client
that keeps sending from the same socket would keep hitting the dead pod; and a flow that started
before its service had endpoints would never be DNATed. The fix is to delete those entries so the
next packet is NATed afresh. This module speaks ctnetlink (NETLINK_NETFILTER) directly — a dump of
the IPv4 table and one delete per matching entry — so no `conntrack` binary is needed. Message
building and parsing are pure functions; `Conntrack` does the socket work (blocking: run it in
an executor).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_ZONE = 18
CTA_FILTER = 25
CTA_FILTER_ORIG_FLAGS = 1
CTA_FILTER_FLAG_PROTO_NUM = 1 << 3
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_TUPLE_ZONE = 3
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3

IPPROTO_TCP = 6
IPPROTO_UDP = 17

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")


class ConntrackError(OSError):
    """The kernel refused a ctnetlink request."""


@dataclass(frozen=True, slots=True)
class Tuple:
    src: str
    dst: str
    sport: int
    dport: int
    proto: int


@dataclass(frozen=True, slots=True)
class Flow:
    """One conntrack entry: the original direction and the (possibly NATed) reply direction."""

    orig: Tuple
    reply: Tuple
    zone: int = 0

    @property
    def dnat(self) -> bool:
        """True when the destination was rewritten (the reply comes from someone else)."""
        return (self.reply.src, self.reply.sport) != (self.orig.dst, self.orig.dport)


# --- wire format (pure) -----------------------------------------------------------------------


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    data = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return data + b"\0" * (_align(len(data)) - len(data))


def _nested(kind: int, *children: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(children))


def encode_tuple(t: Tuple) -> bytes:
    ip = _nested(
        CTA_TUPLE_IP,
        _attr(CTA_IP_V4_SRC, ipaddress.IPv4Address(t.src).packed),
        _attr(CTA_IP_V4_DST, ipaddress.IPv4Address(t.dst).packed),
    )
    proto = _nested(
        CTA_TUPLE_PROTO,
        _attr(CTA_PROTO_NUM, bytes([t.proto])),
        _attr(CTA_PROTO_SRC_PORT, struct.pack("!H", t.sport)),
        _attr(CTA_PROTO_DST_PORT, struct.pack("!H", t.dport)),
    )
    return ip + proto


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One netlink message of the ctnetlink subsystem for AF_INET."""
    payload = _NFGENMSG.pack(socket.AF_INET, 0, 0) + body
    return (
        _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), (NFNL_SUBSYS_CTNETLINK << 8) | kind, flags, seq, 0)
        + payload
    )


def dump_request(seq: int, proto: int | None = None) -> bytes:
    """A dump of the IPv4 table; with `proto`, the kernel (5.8+) sends only that protocol's flows."""
    body = b""
    if proto is not None:
        body = _nested(
            CTA_TUPLE_ORIG, _nested(CTA_TUPLE_PROTO, _attr(CTA_PROTO_NUM, bytes([proto])))
        ) + _nested(CTA_FILTER, _attr(CTA_FILTER_ORIG_FLAGS, struct.pack("=I", CTA_FILTER_FLAG_PROTO_NUM)))
    return message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def delete_request(flow: Flow, seq: int) -> bytes:
    body = _nested(CTA_TUPLE_ORIG, encode_tuple(flow.orig))
    if flow.zone:
        body += _attr(CTA_ZONE, struct.pack("!H", flow.zone))
    return message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each netlink attribute in `data` (flags stripped from the type)."""
    off = 0
    while off + _NLATTR.size <= len(data):
        length, kind = _NLATTR.unpack_from(data, off)
        if length < _NLATTR.size:
            break
        yield kind & NLA_TYPE_MASK, data[off + _NLATTR.size : off + length]
        off += _align(length)


def decode_tuple(data: bytes) -> Tuple | None:
    src = dst = ""
    sport = dport = proto = 0
    for kind, payload in attributes(data):
        if kind == CTA_TUPLE_IP:
            for k, v in attributes(payload):
                if k == CTA_IP_V4_SRC and len(v) == 4:
                    src = str(ipaddress.IPv4Address(v))
                elif k == CTA_IP_V4_DST and len(v) == 4:
                    dst = str(ipaddress.IPv4Address(v))
        elif kind == CTA_TUPLE_PROTO:
            for k, v in attributes(payload):
                if k == CTA_PROTO_NUM and v:
                    proto = v[0]
                elif k == CTA_PROTO_SRC_PORT and len(v) >= 2:
                    sport = struct.unpack("!H", v[:2])[0]
                elif k == CTA_PROTO_DST_PORT and len(v) >= 2:
                    dport = struct.unpack("!H", v[:2])[0]
    if not src or not dst:
        return None
    return Tuple(src, dst, sport, dport, proto)


def decode_flow(body: bytes) -> Flow | None:
    """A Flow from the body of a ctnetlink message (after the nfgenmsg header), or None (IPv6,
    or a message without both tuples)."""
    orig = reply = None
    zone = 0
    for kind, payload in attributes(body):
        if kind == CTA_TUPLE_ORIG:
            orig = decode_tuple(payload)
        elif kind == CTA_TUPLE_REPLY:
            reply = decode_tuple(payload)
        elif kind == CTA_ZONE and len(payload) >= 2:
            zone = struct.unpack("!H", payload[:2])[0]
    if orig is None or reply is None:
        return None
    return Flow(orig, reply, zone)


def messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload) of each netlink message in one datagram."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _ = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size:
            break
        yield kind, flags, seq, data[off + _NLMSGHDR.size : off + length]
        off += _align(length)


# --- the socket -------------------------------------------------------------------------------


class Conntrack:
    """A ctnetlink socket: list IPv4 flows, delete the ones a predicate picks."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Conntrack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def flows(self, proto: int | None = None) -> list[Flow]:
        """Every IPv4 flow (of one protocol, when given)."""
        if proto is not None:
            try:
                return [f for f in self._dump(proto) if f.orig.proto == proto]
            except ConntrackError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                # A kernel without dump filters: take everything and filter here.
            return [f for f in self._dump(None) if f.orig.proto == proto]
        return self._dump(None)

    def _dump(self, proto: int | None) -> list[Flow]:
        seq = self._next_seq()
        self._sock.send(dump_request(seq, proto))
        out: list[Flow] = []
        while True:
            data = self._sock.recv(1 << 20)
            for kind, _, mseq, payload in messages(data):
                if mseq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", payload)[0]
                    if code:
                        raise ConntrackError(
                            -code, f"conntrack dump failed: {errno.errorcode.get(-code, code)}"
                        )
                    return out
                flow = decode_flow(payload[_NFGENMSG.size :])
                if flow is not None:
                    out.append(flow)

    def delete(self, flow: Flow) -> bool:
        """Delete one entry; False when it was already gone."""
        seq = self._next_seq()
        self._sock.send(delete_request(flow, seq))
        while True:
            data = self._sock.recv(65536)
            for kind, _, mseq, payload in messages(data):
                if mseq != seq or kind != NLMSG_ERROR:
                    continue
                code = struct.unpack_from("=i", payload)[0]
                if code == 0:
                    return True
                if -code == errno.ENOENT:
                    return False
                raise ConntrackError(-code, f"conntrack delete failed: {errno.errorcode.get(-code, code)}")

    def delete_where(self, predicate: Callable[[Flow], bool], proto: int | None = None) -> int:
        """Delete every flow (of `proto`) the predicate picks; returns how many were deleted."""
        return sum(1 for flow in self.flows(proto) if predicate(flow) and self.delete(flow))
