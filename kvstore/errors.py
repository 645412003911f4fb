"""etcd v2 error codes, messages and HTTP statuses.

Clients (etcdctl, python-etcd, grove's own) branch on `errorCode`, so the numbers, the messages
and the status codes below are etcd's own. An `EtcdError` is a value the tree returns and the
HTTP layer writes out as `{"errorCode", "message", "cause", "index"}`.
"""

from __future__ import annotations

KEY_NOT_FOUND = 100
TEST_FAILED = 101
NOT_FILE = 102
NOT_DIR = 104
NODE_EXIST = 105
ROOT_READ_ONLY = 107
DIR_NOT_EMPTY = 108
UNAUTHORIZED = 110

VALUE_REQUIRED = 200
PREV_VALUE_REQUIRED = 201
TTL_NAN = 202
INDEX_NAN = 203
VALUE_OR_TTL_REQUIRED = 204
TIMEOUT_NAN = 205
NAME_REQUIRED = 206
INDEX_OR_VALUE_REQUIRED = 207
INDEX_VALUE_MUTEX = 208
INVALID_FIELD = 209
INVALID_FORM = 210
REFRESH_VALUE = 211
REFRESH_TTL_REQUIRED = 212

RAFT_INTERNAL = 300
LEADER_ELECT = 301

WATCHER_CLEARED = 400
EVENT_INDEX_CLEARED = 401

MESSAGES = {
    KEY_NOT_FOUND: "Key not found",
    TEST_FAILED: "Compare failed",
    NOT_FILE: "Not a file",
    103: "Reached the max number of peers in the cluster",
    NOT_DIR: "Not a directory",
    NODE_EXIST: "Key already exists",
    106: "The prefix of given key is a keyword in etcd",
    ROOT_READ_ONLY: "Root is read only",
    DIR_NOT_EMPTY: "Directory not empty",
    109: "Peer address has existed",
    UNAUTHORIZED: "The request requires user authentication",
    VALUE_REQUIRED: "Value is Required in POST form",
    PREV_VALUE_REQUIRED: "PrevValue is Required in POST form",
    TTL_NAN: "The given TTL in POST form is not a number",
    INDEX_NAN: "The given index in POST form is not a number",
    VALUE_OR_TTL_REQUIRED: "Value or TTL is required in POST form",
    TIMEOUT_NAN: "The given timeout in POST form is not a number",
    NAME_REQUIRED: "Name is required in POST form",
    INDEX_OR_VALUE_REQUIRED: "Index or value is required",
    INDEX_VALUE_MUTEX: "Index and value cannot both be specified",
    INVALID_FIELD: "Invalid field",
    INVALID_FORM: "Invalid POST form",
    REFRESH_VALUE: "Value provided on refresh",
    REFRESH_TTL_REQUIRED: "A TTL must be provided on refresh",
    RAFT_INTERNAL: "Raft Internal Error",
    LEADER_ELECT: "During Leader Election",
    WATCHER_CLEARED: "watcher is cleared due to etcd recovery",
    EVENT_INDEX_CLEARED: "The event in requested index is outdated and cleared",
}

_STATUS = {
    KEY_NOT_FOUND: 404,
    NOT_FILE: 403,
    DIR_NOT_EMPTY: 403,
    UNAUTHORIZED: 401,
    TEST_FAILED: 412,
    NODE_EXIST: 412,
    RAFT_INTERNAL: 500,
    LEADER_ELECT: 500,
}


class EtcdError(Exception):
    """An etcd v2 error: raised inside the tree and the HTTP layer, written out as etcd's JSON."""

    def __init__(self, code: int, cause: str = "", index: int = 0, message: str | None = None):
        self.code = code
        self.cause = cause
        self.index = index
        self.message = message or MESSAGES.get(code, "Unknown error")
        super().__init__(f"{code}: {self.message} ({cause}) [{index}]")

    @property
    def status(self) -> int:
        return _STATUS.get(self.code, 400)

    def to_dict(self) -> dict:
        return {"errorCode": self.code, "message": self.message, "cause": self.cause, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict) -> EtcdError:
        return cls(int(d["errorCode"]), d.get("cause", ""), int(d.get("index", 0)), d.get("message"))
