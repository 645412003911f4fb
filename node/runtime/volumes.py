"""Pod volumes materialised as host directories, ready to bind-mount into containers.

The caller (the node agent) fetches the pod's Secrets and ConfigMaps from the API server and
hands them in; this module only writes files. Layout under the pod's own directory:
`<base_dir>/<plugin>/<volume name>` (plugin: empty-dir, secret, configmap, downward-api,
projected). hostPath volumes are the host path itself, checked against their `type`.

Writing is repeatable: a second call rewrites changed files in place (each file replaced by a
rename, so a reader never sees half a file) and removes files whose keys are gone, which is how
updated Secrets and ConfigMaps reach running pods.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from node.runtime.types import VolumeError

DEFAULT_MODE = 0o644

Files = dict[str, tuple[bytes, int]]  # relative path -> (content, mode)


def _decode_b64(kind: str, name: str, key: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise VolumeError(f'{kind} "{name}": key {key!r} is not valid base64') from e


def secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's keys and decoded values (data is base64; stringData, if present, is plain)."""
    name = (secret.get("metadata") or {}).get("name", "")
    out = {k: _decode_b64("secret", name, k, v) for k, v in (secret.get("data") or {}).items()}
    out.update({k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()})
    return out


def configmap_data(configmap: Mapping[str, Any]) -> dict[str, bytes]:
    """A ConfigMap's keys and values (data is text; binaryData is base64)."""
    name = (configmap.get("metadata") or {}).get("name", "")
    out = {k: str(v).encode() for k, v in (configmap.get("data") or {}).items()}
    out.update(
        {k: _decode_b64("configmap", name, k, v) for k, v in (configmap.get("binaryData") or {}).items()}
    )
    return out


def _key_files(
    kind: str,
    obj_name: str,
    data: dict[str, bytes] | None,
    items: list[Mapping[str, Any]] | None,
    default_mode: int,
    optional: bool,
) -> Files:
    if data is None:
        if optional:
            return {}
        raise VolumeError(f'{kind} "{obj_name}" not found')
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    files: Files = {}
    for item in items:
        key = item.get("key")
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"{kind} {obj_name!r} references non-existent {kind} key: {key}")
        mode = item.get("mode")
        files[str(item.get("path") or key)] = (data[key], default_mode if mode is None else int(mode))
    return files


def _field_value(pod: Mapping[str, Any], path: str) -> str:
    meta = pod.get("metadata") or {}
    simple = {"metadata.name": "name", "metadata.namespace": "namespace", "metadata.uid": "uid"}
    if path in simple:
        return str(meta.get(simple[path], "") or ("default" if path == "metadata.namespace" else ""))
    for field_name in ("labels", "annotations"):
        values = meta.get(field_name) or {}
        if path == f"metadata.{field_name}":
            return "\n".join(f"{k}={json.dumps(str(v))}" for k, v in sorted(values.items()))
        prefix = f"metadata.{field_name}["
        if path.startswith(prefix) and path.endswith("]"):
            key = path[len(prefix) : -1].strip("'\"")
            return str(values.get(key, ""))
    raise VolumeError(f"downwardAPI fieldPath {path!r} is not supported in volumes")


def _downward_files(pod: Mapping[str, Any], items: list[Mapping[str, Any]], default_mode: int) -> Files:
    files: Files = {}
    for item in items or []:
        if "fieldRef" not in item:
            raise VolumeError(f"downwardAPI item {item.get('path')!r}: only fieldRef is supported")
        value = _field_value(pod, str(item["fieldRef"].get("fieldPath", "")))
        mode = item.get("mode")
        files[str(item["path"])] = (value.encode(), default_mode if mode is None else int(mode))
    return files


def _check_relative(volume: str, rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        raise VolumeError(f"volume {volume!r}: item path {rel!r} must be relative and must not contain '..'")
    return p


def write_files(volume: str, directory: Path, files: Files) -> None:
    """Make `directory` hold exactly `files`, replacing each changed file atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    wanted: set[Path] = set()
    for rel, (content, mode) in files.items():
        target = directory / _check_relative(volume, rel)
        wanted.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"..{target.name}.tmp"
        tmp.write_bytes(content)
        tmp.chmod(mode & 0o7777)
        os.replace(tmp, target)
    for root, dirs, names in os.walk(directory, topdown=False):
        for n in names:
            path = Path(root) / n
            if path not in wanted:
                path.unlink()
        for d in dirs:
            path = Path(root) / d
            if not any(w.is_relative_to(path) for w in wanted):
                shutil.rmtree(path, ignore_errors=True)


def _host_path(name: str, spec: Mapping[str, Any]) -> str:
    path = Path(str(spec.get("path") or ""))
    if not path.is_absolute():
        raise VolumeError(f"hostPath volume {name!r}: path {str(path)!r} must be absolute")
    kind = spec.get("type") or ""
    exists = path.exists()
    if kind == "DirectoryOrCreate":
        if exists and not path.is_dir():
            raise VolumeError(f"hostPath type check failed: {path} is not a directory")
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        if not exists:
            if not path.parent.is_dir():
                raise VolumeError(
                    f"hostPath {path}: parent directory does not exist (FileOrCreate does not create it)"
                )
            path.touch(mode=0o644)
        elif not path.is_file():
            raise VolumeError(f"hostPath type check failed: {path} is not a file")
    elif kind:
        checks = {
            "Directory": Path.is_dir,
            "File": Path.is_file,
            "Socket": Path.is_socket,
            "CharDevice": Path.is_char_device,
            "BlockDevice": Path.is_block_device,
        }
        if kind not in checks:
            raise VolumeError(f"hostPath volume {name!r}: unknown type {kind!r}")
        if not checks[kind](path):
            raise VolumeError(f"hostPath type check failed: {path} is not a {kind}")
    return str(path)


def materialise_volumes(
    pod: Mapping[str, Any],
    base_dir: str | Path,
    secrets: Mapping[str, Mapping[str, Any]],
    configmaps: Mapping[str, Mapping[str, Any]],
) -> dict[str, str]:
    """Prepare every volume of `pod` under `base_dir` (the pod's own directory).

    `secrets` and `configmaps` map object names (in the pod's namespace) to the API objects.
    Returns volume name -> host path. Raises VolumeError (FailedMount) for a missing object or
    key that is not optional, a failed hostPath type check, or an unsupported volume type.
    """
    base = Path(base_dir)
    out: dict[str, str] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = str(vol["name"])
        if "emptyDir" in vol:
            path = base / "empty-dir" / name
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)  # as the kubelet does: any user of the pod may write
            out[name] = str(path)
        elif "hostPath" in vol:
            out[name] = _host_path(name, vol["hostPath"])
        elif "secret" in vol:
            src = vol["secret"]
            obj = secrets.get(src.get("secretName", ""))
            files = _key_files(
                "secret",
                src.get("secretName", ""),
                None if obj is None else secret_data(obj),
                src.get("items"),
                int(src.get("defaultMode", DEFAULT_MODE)),
                bool(src.get("optional")),
            )
            out[name] = _write(name, base / "secret" / name, files)
        elif "configMap" in vol:
            src = vol["configMap"]
            obj = configmaps.get(src.get("name", ""))
            files = _key_files(
                "configmap",
                src.get("name", ""),
                None if obj is None else configmap_data(obj),
                src.get("items"),
                int(src.get("defaultMode", DEFAULT_MODE)),
                bool(src.get("optional")),
            )
            out[name] = _write(name, base / "configmap" / name, files)
        elif "downwardAPI" in vol:
            src = vol["downwardAPI"]
            files = _downward_files(pod, src.get("items") or [], int(src.get("defaultMode", DEFAULT_MODE)))
            out[name] = _write(name, base / "downward-api" / name, files)
        elif "projected" in vol:
            out[name] = _write(
                name, base / "projected" / name, _projected_files(pod, vol["projected"], secrets, configmaps)
            )
        else:
            kinds = [k for k in vol if k != "name"]
            raise VolumeError(f"volume {name!r}: type {kinds[0] if kinds else '?'} is not supported by grove")
    return out


def _projected_files(
    pod: Mapping[str, Any],
    src: Mapping[str, Any],
    secrets: Mapping[str, Mapping[str, Any]],
    configmaps: Mapping[str, Mapping[str, Any]],
) -> Files:
    default_mode = int(src.get("defaultMode", DEFAULT_MODE))
    files: Files = {}
    for source in src.get("sources") or []:
        if "secret" in source:
            s = source["secret"]
            obj = secrets.get(s.get("name", ""))
            data = None if obj is None else secret_data(obj)
            files.update(
                _key_files(
                    "secret", s.get("name", ""), data, s.get("items"), default_mode, bool(s.get("optional"))
                )
            )
        elif "configMap" in source:
            s = source["configMap"]
            obj = configmaps.get(s.get("name", ""))
            data = None if obj is None else configmap_data(obj)
            files.update(
                _key_files(
                    "configmap",
                    s.get("name", ""),
                    data,
                    s.get("items"),
                    default_mode,
                    bool(s.get("optional")),
                )
            )
        elif "downwardAPI" in source:
            files.update(_downward_files(pod, source["downwardAPI"].get("items") or [], default_mode))
        # serviceAccountToken: grove issues no tokens yet; the source is left out.
    return files


def _write(name: str, path: Path, files: Files) -> str:
    try:
        write_files(name, path, files)
    except OSError as e:
        raise VolumeError(f"volume {name!r}: cannot write {path}: {e.strerror}") from e
    return str(path)


def remove_volumes(base_dir: str | Path) -> None:
    """Delete a pod's volume directories (never hostPath volumes, which live elsewhere)."""
    base = Path(base_dir)
    if base.is_dir() and not stat.S_ISLNK(base.lstat().st_mode):
        shutil.rmtree(base, ignore_errors=True)
