"""Engine cache: an engine is built once per key, stored atomically, validated on every load.

The key is everything that makes a serialized TensorRT engine usable and correct: the sha256 of the
ONNX bytes, the TensorRT version, the GPU name and compute capability, the precision, the input
shapes and the builder flags. Any change gives another file, so a TensorRT upgrade or a new model
never meets a stale engine ("version tag does not match"); a matching key is never rebuilt.

File format (one file per engine, so the atomic rename covers header and payload together)::

    MAGIC (16 bytes) | header length (uint32 little-endian) | header JSON (utf-8) | payload

The header holds the full key, the payload size and sha256, and free metadata (the build-time
validation report). A file with a bad magic, unreadable header, other key, wrong size (truncated)
or wrong checksum is logged and rebuilt, never trusted and never a crash.

Concurrency: builders hold an exclusive ``fcntl.flock`` on ``<engine file>.lock``; a second process
asking for the same key waits, then finds the first one's engine. Corrupt files are removed only
under that lock. Writes go to a temporary file in the same directory, fsync, then ``os.replace``.

The TensorRT timing cache (tactic timings, shared by all models on one GPU + TensorRT version) is
stored in the same format and passed to every build, which makes rebuilds much faster.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geovis_ros.errors import GeovisError
from geovis_ros.inference.engine import InferenceError

LOG = logging.getLogger(__name__)

MAGIC = b"GEOVIS-ENGINE-1\n"
_HEADER_LENGTH = struct.Struct("<I")
_MAX_HEADER_BYTES = 1 << 20


class EngineCacheError(InferenceError):
    """The cache could not be used (lock timeout, unwritable directory)."""


class CacheRecordError(GeovisError, ValueError):
    """A cache file is unusable; the message says why (bad header, truncated, checksum, key)."""


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


def write_record(path: Path, key: Mapping[str, Any], payload: bytes, metadata: Mapping[str, Any]) -> None:
    """Atomically write ``payload`` with a header holding ``key``, size, sha256 and ``metadata``."""
    header = json.dumps({"key": dict(key), "payload_size": len(payload),
                         "payload_sha256": hashlib.sha256(payload).hexdigest(), "metadata": dict(metadata)},
                        sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(MAGIC + _HEADER_LENGTH.pack(len(header)) + header)
            tmp.write(payload)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def read_record(path: Path, key: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """``(payload, metadata)`` of a record written for ``key``; raises CacheRecordError saying why not.

    Raises FileNotFoundError when there is no file.
    """
    data = path.read_bytes()
    prefix = len(MAGIC) + _HEADER_LENGTH.size
    if len(data) < prefix or not data.startswith(MAGIC):
        raise CacheRecordError("bad header (not a geovis_ros cache file)")
    (header_length,) = _HEADER_LENGTH.unpack_from(data, len(MAGIC))
    if header_length > _MAX_HEADER_BYTES or prefix + header_length > len(data):
        raise CacheRecordError(f"bad header length {header_length} for a {len(data)}-byte file (truncated?)")
    try:
        header = json.loads(data[prefix:prefix + header_length])
        stored_key, size, checksum = header["key"], int(header["payload_size"]), str(header["payload_sha256"])
        metadata = dict(header["metadata"])
        if not isinstance(stored_key, dict):
            raise TypeError(f"key is a {type(stored_key).__name__}")
    except (ValueError, KeyError, TypeError) as err:
        raise CacheRecordError(f"unreadable header ({err})") from err
    if stored_key != dict(key):
        changed = sorted(k for k in {*stored_key, *key} if stored_key.get(k) != key.get(k))
        raise CacheRecordError(f"key mismatch in {changed}")
    payload = data[prefix + header_length:]
    if len(payload) != size:
        raise CacheRecordError(f"truncated: payload is {len(payload)} bytes, header says {size}")
    if hashlib.sha256(payload).hexdigest() != checksum:
        raise CacheRecordError("checksum mismatch (file corrupted)")
    return payload, metadata


class EngineCache:
    """Engines (and the TensorRT timing cache) in one directory, safe across processes."""

    def __init__(self, directory: Path, lock_timeout_s: float = 1800.0) -> None:
        self.directory = Path(directory).expanduser()
        self.lock_timeout_s = lock_timeout_s

    def engine_path(self, key: EngineCacheKey) -> Path:
        """Where the engine of ``key`` lives."""
        return self.directory / key.filename

    def timing_cache_path(self, key: EngineCacheKey) -> Path:
        """Where the timing cache used to build ``key`` lives (one per TensorRT version + GPU)."""
        digest = hashlib.sha256(json.dumps(key.timing_cache_key(), sort_keys=True).encode()).hexdigest()
        return self.directory / f"timing-{digest[:24]}.cache"

    def load(self, key: EngineCacheKey, *, repair: bool = False) -> CacheEntry | None:
        """The cached engine of ``key``, or None (missing or unusable; logged).

        With ``repair`` (only under the build lock) an unusable file is also deleted.
        """
        path = self.engine_path(key)
        try:
            engine, metadata = read_record(path, key.as_dict())
        except FileNotFoundError:
            return None
        except (CacheRecordError, OSError) as err:
            LOG.warning("engine cache: %s is unusable (%s); %s", path, err,
                        "removing it and rebuilding" if repair else "it will be rebuilt")
            if repair:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return None
        return CacheEntry(key, path, engine, metadata, hit=True)

    def get_or_build(self, key: EngineCacheKey, build: Builder, validate: Validator) -> CacheEntry:
        """The engine of ``key``: from the cache if a valid file matches, else built, validated, stored.

        ``validate`` runs on the fresh engine before it is stored; its metadata is saved with it (an
        exception from it leaves nothing in the cache). Another process building the same key is
        waited for (up to ``lock_timeout_s``), then its engine is used.
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
        with self._lock(key):
            path = self.engine_path(key)
            if path.exists():
                LOG.warning("engine cache: removing %s (%s)", path, reason)
                path.unlink()

    def _load_timing_cache(self, key: EngineCacheKey) -> bytes | None:
        path = self.timing_cache_path(key)
        try:
            payload, _ = read_record(path, key.timing_cache_key())
        except FileNotFoundError:
            return None
        except (CacheRecordError, OSError) as err:
            LOG.warning("timing cache %s is unusable (%s); starting from an empty one", path, err)
            return None
        return payload

    @contextlib.contextmanager
    def _lock(self, key: EngineCacheKey) -> Iterator[None]:
        """Exclusive inter-process lock on ``<engine file>.lock`` (polled, with a timeout)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.engine_path(key).with_suffix(".lock"), "a+b")
        except OSError as err:
            raise EngineCacheError(f"engine cache directory {self.directory} is not writable: {err}") from err
        with lock_file:
            deadline = time.monotonic() + self.lock_timeout_s
            waiting_logged = False
            while True:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EngineCacheError(
                            f"timed out after {self.lock_timeout_s:.0f} s waiting for {lock_file.name} "
                            "(another process is building the same engine)") from None
                    if not waiting_logged:
                        LOG.info("waiting for another process building %s", key.filename)
                        waiting_logged = True
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
