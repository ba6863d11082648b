"""Engine cache: an engine is built once per key, stored atomically, authenticated on every load.

The key is everything that makes a serialized TensorRT engine usable and correct: the sha256 of the
ONNX bytes, the TensorRT version, the GPU name and compute capability, the precision, the input
shapes and the builder flags. Any change gives another file, so a TensorRT upgrade or a new model
never meets a stale engine ("version tag does not match"); a matching key is never rebuilt.

File format (one file per engine, so the atomic rename covers header and payload together)::

    MAGIC (16 bytes) | header length (uint32 little-endian) | header JSON (utf-8) | payload

The header holds the full key, the payload size and sha256, free metadata (the build-time
validation report) and ``mac``: an HMAC-SHA256 of all of those under a secret of this cache
directory (``.record-key``, 32 random bytes, mode 0600, made on the first write). The MAC binds the
validation report to the sha256 of the engine bytes it was computed on, so a record planted or
edited by anyone who cannot read the secret, however well-formed, carries a "validation passed"
that is not trusted. A file with a bad magic, unreadable header, other key, wrong MAC, wrong size
(truncated) or wrong checksum is logged and rebuilt, never trusted and never a crash.

Trust in the directory: it must be a directory owned by this user and writable by nobody else
(mode without group/other write; created 0700), else :class:`EngineCacheError` names the fix.
Every file in it is reached through the directory's descriptor, opened with ``O_NOFOLLOW``
(symlinks are never followed: a record or lock that is a symlink is refused), must be a regular
file owned by this user (FIFOs and devices are refused before any read blocks) and is read with
a size bound (``max_record_bytes``).

Concurrency: builders hold an exclusive ``fcntl.flock`` on ``<engine file>.lock`` inside the
directory; a second process asking for the same key waits, then finds the first one's engine.
Unusable files are removed only under that lock. Writes go to a temporary file in the same
directory, fsync, then an atomic rename.

The TensorRT timing cache (tactic timings, shared by all models on one GPU + TensorRT version) is
stored in the same format and passed to every build, which makes rebuilds much faster.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geovis_ros.errors import GeovisError
from geovis_ros.inference.engine import InferenceError

LOG = logging.getLogger(__name__)

MAGIC = b"GEOVIS-ENGINE-2\n"
_HEADER_LENGTH = struct.Struct("<I")
_MAX_HEADER_BYTES = 1 << 20
MAX_RECORD_BYTES = 4 << 30
"""Default bound on a record's size (bytes): larger files are refused without being read."""
RECORD_KEY_NAME = ".record-key"
_RECORD_KEY_BYTES = 32
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class EngineCacheError(InferenceError):
    """The cache could not be used (untrusted or unwritable directory, lock timeout)."""


class CacheRecordError(GeovisError, ValueError):
    """A cache file is unusable; the message says why (bad header, truncated, checksum, key, MAC, file type)."""


@dataclass(frozen=True)
class EngineCacheKey:
    """What a serialized engine depends on. ``input_shapes``: ((name, shape), ...) in input order."""

    model: str
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    builder_flags: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples as lists), as stored in the file header."""
        return json.loads(json.dumps({
            "model": self.model, "onnx_sha256": self.onnx_sha256, "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name, "compute_capability": self.compute_capability,
            "precision": self.precision, "input_shapes": self.input_shapes,
            "builder_flags": sorted(self.builder_flags),
        }))

    @property
    def digest(self) -> str:
        """sha256 hex of the canonical JSON of the key."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def filename(self) -> str:
        """``<model>-<first 24 hex of digest>.engine``."""
        return f"{self.model}-{self.digest[:24]}.engine"

    def timing_cache_key(self) -> dict[str, str]:
        """Key of the timing cache this engine's build reads and extends (per TensorRT + GPU)."""
        return {"kind": "timing-cache", "tensorrt_version": self.tensorrt_version, "gpu_name": self.gpu_name,
                "compute_capability": self.compute_capability}


@dataclass(frozen=True)
class BuildOutput:
    """What a builder returns: the serialized engine and the updated timing cache (if any)."""

    engine: bytes
    timing_cache: bytes | None = None


@dataclass(frozen=True)
class CacheEntry:
    """An engine from the cache: ``hit`` False when this call built it; ``metadata`` from the header."""

    key: EngineCacheKey
    path: Path
    engine: bytes
    metadata: Mapping[str, Any]
    hit: bool


Builder = Callable[[bytes | None], BuildOutput]
"""Builds an engine; receives the stored timing cache (None if there is none yet)."""

Validator = Callable[[bytes], Mapping[str, Any]]
"""Checks a freshly built engine; returns JSON-able metadata stored in the header."""


class TrustedDirectory:
    """An open cache directory that passed the ownership and permission checks; files by name only.

    Open it with :meth:`open` (a context manager). Every operation goes through the directory's
    descriptor, so the checked directory is the one used even if its path is swapped afterwards.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: Path, create: bool) -> Iterator[TrustedDirectory]:
        """The checked directory ``path`` (made 0700 when ``create`` and missing).

        Raises EngineCacheError when it cannot be made or opened, is not a directory, is owned by
        another user or is writable by group or others; FileNotFoundError when it is missing and
        ``create`` is false.
        """
        try:
            if create:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:
                raise EngineCacheError(f"engine cache directory {path} is not writable: it vanished") from None
            raise
        except OSError as err:
            raise EngineCacheError(f"engine cache directory {path} is not writable: {err}") from err
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid():
                raise EngineCacheError(
                    f"engine cache directory {path} is owned by uid {info.st_uid}, not by this user "
                    f"(uid {os.geteuid()}); refusing to trust its engines: set engine_cache_dir to a directory "
                    "of your own (or chown it)")
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise EngineCacheError(
                    f"engine cache directory {path} is writable by others (mode {stat.filemode(info.st_mode)}); "
                    f"refusing to trust its engines: run 'chmod go-w {path}' (or use a directory of your own)")
            yield cls(path, fd)
        finally:
            os.close(fd)

    def _open_file(self, name: str, flags: int, mode: int = 0o600) -> int:
        """A descriptor on the regular file ``name`` owned by this user, never through a symlink.

        Raises CacheRecordError for a symlink, a non-regular file (FIFO, device, directory) or a
        file of another owner; FileNotFoundError when it is missing.
        """
        try:
            fd = os.open(name, flags | _OPEN_FLAGS, mode, dir_fd=self._fd)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise CacheRecordError(f"{name} is a symbolic link, which the cache never follows") from None
            if err.errno in (errno.EISDIR, errno.ENXIO):
                raise CacheRecordError(f"{name} is not a regular file") from None
            raise
        info = os.fstat(fd)
        problem = (None if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() else
                   f"{name} is not a regular file" if not stat.S_ISREG(info.st_mode) else
                   f"{name} is owned by uid {info.st_uid}, not by this user")
        if problem is not None:
            os.close(fd)
            raise CacheRecordError(problem)
        return fd

    def read(self, name: str, max_bytes: int) -> bytes:
        """The bytes of file ``name`` (at most ``max_bytes``, else CacheRecordError); FileNotFoundError if missing."""
        fd = self._open_file(name, os.O_RDONLY)
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(fd).st_size
            if size > max_bytes:
                raise CacheRecordError(f"{name} is {size} bytes, over the bound of {max_bytes}")
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise CacheRecordError(f"{name} grew past the bound of {max_bytes} bytes while being read")
        return data

    def write(self, name: str, data: bytes) -> None:
        """Atomically replace file ``name`` with ``data`` (temporary file, fsync, rename; mode 0600)."""
        tmp_name = self._write_temporary(name, data)
        try:
            os.replace(tmp_name, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            self.remove(tmp_name)
            raise

    def _write_temporary(self, name: str, data: bytes) -> str:
        """A new file ``.<name>.<random>.tmp`` holding ``data``, synced; returns its name."""
        tmp_name = f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600, dir_fd=self._fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            self.remove(tmp_name)
            raise
        return tmp_name

    def remove(self, name: str) -> None:
        """Remove the directory entry ``name`` (a symlink itself, never its target); missing is fine."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._fd)

    def record_key(self, create: bool) -> bytes | None:
        """The HMAC secret of this directory; made (atomically, 0600) when missing and ``create``, else None.

        A key file that is unusable (symlink, wrong size, readable by others) is replaced when
        ``create`` (every record signed with it is then rebuilt), else treated as missing.
        """
        try:
            fd = self._open_file(RECORD_KEY_NAME, os.O_RDONLY)
            with os.fdopen(fd, "rb") as handle:
                mode = os.fstat(fd).st_mode
                key = handle.read(_RECORD_KEY_BYTES + 1)
            if len(key) == _RECORD_KEY_BYTES and not mode & (stat.S_IRWXG | stat.S_IRWXO):
                return key
            LOG.warning("engine cache: %s/%s is unusable (size or mode); %s", self.path, RECORD_KEY_NAME,
                        "replacing it" if create else "records cannot be verified")
        except FileNotFoundError:
            pass
        except CacheRecordError as err:
            LOG.warning("engine cache: %s; %s", err, "replacing it" if create else "records cannot be verified")
        if not create:
            return None
        tmp_name = self._write_temporary(RECORD_KEY_NAME, secrets.token_bytes(_RECORD_KEY_BYTES))
        try:
            try:  # link, not rename: of two processes making the key at once, the first one wins
                os.link(tmp_name, RECORD_KEY_NAME, src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False)
            except FileExistsError:
                if self.record_key(create=False) is None:  # an unusable one is in the way: replace it
                    os.replace(tmp_name, RECORD_KEY_NAME, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        finally:
            self.remove(tmp_name)
        made = self.record_key(create=False)
        if made is None:
            raise EngineCacheError(f"engine cache directory {self.path}: could not make {RECORD_KEY_NAME}")
        return made

    @contextlib.contextmanager
    def locked(self, name: str, timeout_s: float, what: str) -> Iterator[None]:
        """Exclusive inter-process ``flock`` on the regular file ``name`` in this directory (polled, timeout).

        A lock entry that is not a regular file of this user (e.g. a planted symlink) is removed
        and made afresh; a symlink's target is never touched. ``what`` names the work in messages.
        """
        try:
            fd = self._open_file(name, os.O_RDWR | os.O_CREAT)
        except CacheRecordError as err:
            LOG.warning("engine cache: %s; replacing the lock file", err)
            self.remove(name)
            fd = self._open_file(name, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "r+b") as lock_file:
            deadline = time.monotonic() + timeout_s
            waiting_logged = False
            while True:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EngineCacheError(
                            f"timed out after {timeout_s:.0f} s waiting for {self.path / name} "
                            "(another process is building the same engine)") from None
                    if not waiting_logged:
                        LOG.info("waiting for another process building %s", what)
                        waiting_logged = True
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def _mac(secret: bytes, header: Mapping[str, Any]) -> str:
    """HMAC-SHA256 hex of the canonical JSON of ``header`` (without its ``mac``)."""
    signed = {name: value for name, value in header.items() if name != "mac"}
    return hmac.new(secret, json.dumps(signed, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def encode_record(secret: bytes, key: Mapping[str, Any], payload: bytes, metadata: Mapping[str, Any]) -> bytes:
    """The bytes of a record: ``payload`` with a header holding ``key``, size, sha256, ``metadata`` and the MAC."""
    header: dict[str, Any] = {"key": dict(key), "payload_size": len(payload),
                              "payload_sha256": hashlib.sha256(payload).hexdigest(), "metadata": dict(metadata)}
    header["mac"] = _mac(secret, header)
    encoded = json.dumps(header, sort_keys=True).encode()
    return MAGIC + _HEADER_LENGTH.pack(len(encoded)) + encoded + payload


def decode_record(data: bytes, secret: bytes | None, key: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """``(payload, metadata)`` of the record bytes ``data`` written for ``key`` under ``secret``.

    Raises CacheRecordError saying why not: bad magic or header, a MAC that does not verify (or no
    secret to verify it with), another key, a truncated payload or a checksum mismatch.
    """
    prefix = len(MAGIC) + _HEADER_LENGTH.size
    if len(data) < prefix or not data.startswith(MAGIC):
        raise CacheRecordError("bad header (not a geovis_ros cache file of this version)")
    (header_length,) = _HEADER_LENGTH.unpack_from(data, len(MAGIC))
    if header_length > _MAX_HEADER_BYTES or prefix + header_length > len(data):
        raise CacheRecordError(f"bad header length {header_length} for a {len(data)}-byte file (truncated?)")
    try:
        header = json.loads(data[prefix:prefix + header_length])
        stored_key, size, checksum = header["key"], int(header["payload_size"]), str(header["payload_sha256"])
        metadata, mac = dict(header["metadata"]), str(header["mac"])
        if not isinstance(stored_key, dict):
            raise TypeError(f"key is a {type(stored_key).__name__}")
    except (ValueError, KeyError, TypeError) as err:
        raise CacheRecordError(f"unreadable header ({err})") from err
    if secret is None or not hmac.compare_digest(mac, _mac(secret, header)):
        raise CacheRecordError("not authenticated: its MAC does not verify with this cache's record key "
                               "(written elsewhere, planted or edited), so its validation report is not trusted")
    if stored_key != dict(key):
        changed = sorted(k for k in {*stored_key, *key} if stored_key.get(k) != key.get(k))
        raise CacheRecordError(f"key mismatch in {changed}")
    payload = data[prefix + header_length:]
    if len(payload) != size:
        raise CacheRecordError(f"truncated: payload is {len(payload)} bytes, header says {size}")
    if hashlib.sha256(payload).hexdigest() != checksum:
        raise CacheRecordError("checksum mismatch (file corrupted)")
    return payload, metadata


def write_record(path: Path, key: Mapping[str, Any], payload: bytes, metadata: Mapping[str, Any]) -> None:
    """Atomically write a record of ``payload`` for ``key`` into the trusted directory of ``path``.

    Makes the directory (0700) and its record key when missing; raises EngineCacheError for an
    untrusted directory.
    """
    with TrustedDirectory.open(path.parent, create=True) as directory:
        secret = directory.record_key(create=True)
        assert secret is not None
        directory.write(path.name, encode_record(secret, key, payload, metadata))


def read_record(path: Path, key: Mapping[str, Any], max_bytes: int = MAX_RECORD_BYTES) -> tuple[bytes, dict[str, Any]]:
    """``(payload, metadata)`` of a record written for ``key``; raises CacheRecordError saying why not.

    Raises FileNotFoundError when there is no file (or no directory), EngineCacheError for an
    untrusted directory.
    """
    with TrustedDirectory.open(path.parent, create=False) as directory:
        data = directory.read(path.name, max_bytes)
        return decode_record(data, directory.record_key(create=False), key)


class EngineCache:
    """Engines (and the TensorRT timing cache) in one trusted directory, safe across processes.

    ``max_record_bytes`` bounds every file read (an engine larger than that is refused and rebuilt).
    """

    def __init__(self, directory: Path, lock_timeout_s: float = 1800.0,
                 max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self.directory = Path(directory).expanduser()
        self.lock_timeout_s = lock_timeout_s
        self.max_record_bytes = max_record_bytes

    def engine_path(self, key: EngineCacheKey) -> Path:
        """Where the engine of ``key`` lives."""
        return self.directory / key.filename

    def timing_cache_path(self, key: EngineCacheKey) -> Path:
        """Where the timing cache used to build ``key`` lives (one per TensorRT version + GPU)."""
        digest = hashlib.sha256(json.dumps(key.timing_cache_key(), sort_keys=True).encode()).hexdigest()
        return self.directory / f"timing-{digest[:24]}.cache"

    def load(self, key: EngineCacheKey, *, repair: bool = False) -> CacheEntry | None:
        """The cached engine of ``key``, or None (missing or unusable; logged).

        With ``repair`` (only under the build lock) an unusable file is also deleted. Raises
        EngineCacheError when the directory is not trusted (see the module docstring).
        """
        path = self.engine_path(key)
        try:
            engine, metadata = read_record(path, key.as_dict(), self.max_record_bytes)
        except FileNotFoundError:
            return None
        except (CacheRecordError, OSError) as err:
            LOG.warning("engine cache: %s is unusable (%s); %s", path, err,
                        "removing it and rebuilding" if repair else "it will be rebuilt")
            if repair:
                with TrustedDirectory.open(self.directory, create=False) as directory:
                    directory.remove(path.name)
            return None
        return CacheEntry(key, path, engine, metadata, hit=True)

    def get_or_build(self, key: EngineCacheKey, build: Builder, validate: Validator) -> CacheEntry:
        """The engine of ``key``: from the cache if a valid file matches, else built, validated, stored.

        ``validate`` runs on the fresh engine before it is stored; its metadata is saved with it,
        authenticated together with the engine's sha256 (an exception from it leaves nothing in the
        cache). Another process building the same key is waited for (up to ``lock_timeout_s``),
        then its engine is used.
        """
        entry = self.load(key)
        if entry is not None:
            LOG.info("engine cache hit: %s", entry.path)
            return entry
        with self._lock(key):
            entry = self.load(key, repair=True)
            if entry is not None:
                LOG.info("engine cache hit after waiting for another builder: %s", entry.path)
                return entry
            timing_path = self.timing_cache_path(key)
            timing_cache = self._load_timing_cache(key)
            LOG.info("engine cache miss: building %s (%s, %s)", key.filename, key.precision, key.gpu_name)
            started = time.monotonic()
            output = build(timing_cache)
            build_seconds = time.monotonic() - started
            metadata = {**validate(output.engine), "build_seconds": round(build_seconds, 3)}
            path = self.engine_path(key)
            write_record(path, key.as_dict(), output.engine, metadata)
            if output.timing_cache:
                write_record(timing_path, key.timing_cache_key(), output.timing_cache, {})
            LOG.info("engine built in %.1f s and cached: %s", build_seconds, path)
            return CacheEntry(key, path, output.engine, metadata, hit=False)

    def invalidate(self, key: EngineCacheKey, reason: str) -> None:
        """Remove the engine of ``key`` (under the build lock), logging ``reason``."""
        with self._lock(key), TrustedDirectory.open(self.directory, create=False) as directory:
            LOG.warning("engine cache: removing %s (%s)", self.engine_path(key), reason)
            directory.remove(key.filename)

    def _load_timing_cache(self, key: EngineCacheKey) -> bytes | None:
        path = self.timing_cache_path(key)
        try:
            payload, _ = read_record(path, key.timing_cache_key(), self.max_record_bytes)
        except FileNotFoundError:
            return None
        except (CacheRecordError, OSError) as err:
            LOG.warning("timing cache %s is unusable (%s); starting from an empty one", path, err)
            return None
        return payload

    @contextlib.contextmanager
    def _lock(self, key: EngineCacheKey) -> Iterator[None]:
        """Exclusive inter-process lock on ``<engine file>.lock`` in the (trusted) cache directory."""
        with TrustedDirectory.open(self.directory, create=True) as directory, \
                directory.locked(self.engine_path(key).with_suffix(".lock").name, self.lock_timeout_s, key.filename):
            yield
