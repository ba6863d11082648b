"""Engine cache: keys, hits, atomic writes, corruption handling, timing cache, cross-process lock.

The builder is an injected callable, so the cache logic runs here without TensorRT.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from geovis_ros.inference.cache import (
    MAGIC,
    RECORD_KEY_NAME,
    BuildOutput,
    CacheEntry,
    EngineCache,
    EngineCacheError,
    EngineCacheKey,
    encode_record,
    read_record,
    write_record,
)

KEY = EngineCacheKey(model="tiny_depth", onnx_sha256="ab" * 32, tensorrt_version="10.3.0",
                     gpu_name="NVIDIA Jetson Orin", compute_capability="8.7", precision="fp16",
                     input_shapes=(("image", (1, 3, 240, 320)),), builder_flags=("workspace_mib=1024",))


class CountingBuilder:
    """Returns a fixed engine payload and records the timing cache each build received."""

    def __init__(self, payload: bytes = b"serialized-engine" * 100) -> None:
        self.payload = payload
        self.timing_caches_seen: list[bytes | None] = []

    def __call__(self, timing_cache: bytes | None) -> BuildOutput:
        self.timing_caches_seen.append(timing_cache)
        return BuildOutput(self.payload, (timing_cache or b"") + b"+tactics")

    @property
    def builds(self) -> int:
        return len(self.timing_caches_seen)


def no_validation(engine: bytes) -> dict:
    return {"validation": {"reference": "test", "errors": {}}}


@pytest.mark.parametrize("component, value", [
    ("onnx_sha256", "cd" * 32), ("tensorrt_version", "10.4.0"), ("gpu_name", "NVIDIA GeForce RTX 4090"),
    ("compute_capability", "8.9"), ("precision", "fp32"), ("input_shapes", (("image", (1, 3, 480, 640)),)),
    ("builder_flags", ("workspace_mib=2048",)), ("model", "other"),
])
def test_each_key_component_changes_the_key_and_misses(tmp_path: Path, component: str, value: object) -> None:
    cache = EngineCache(tmp_path)
    builder = CountingBuilder()
    cache.get_or_build(KEY, builder, no_validation)
    changed = dataclasses.replace(KEY, **{component: value})
    assert changed.digest != KEY.digest and changed.filename != KEY.filename
    assert cache.load(changed) is None
    entry = cache.get_or_build(changed, builder, no_validation)
    assert not entry.hit and builder.builds == 2


def test_key_digest_is_canonical() -> None:
    reordered = dataclasses.replace(KEY, builder_flags=("b", "a"))
    assert reordered.digest == dataclasses.replace(KEY, builder_flags=("a", "b")).digest
    assert len(KEY.digest) == 64 and KEY.filename.startswith("tiny_depth-")


def test_hit_never_rebuilds_and_returns_stored_metadata(tmp_path: Path) -> None:
    builder = CountingBuilder()
    first = EngineCache(tmp_path).get_or_build(KEY, builder, no_validation)
    second = EngineCache(tmp_path).get_or_build(KEY, builder, no_validation)  # as a new process would
    assert (first.hit, second.hit, builder.builds) == (False, True, 1)
    assert second.engine == builder.payload
    assert second.metadata["validation"]["reference"] == "test" and "build_seconds" in second.metadata


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.engine"
    write_record(path, {"k": 1}, b"old", {})

    def crash(src: str, dst: str, **dir_fds: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_record(path, {"k": 1}, b"new", {})
    monkeypatch.undo()
    assert read_record(path, {"k": 1})[0] == b"old"  # the old file is intact, never half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_KEY_NAME, "x.engine"]


def test_failed_build_or_validation_caches_nothing(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)

    def failing_build(timing_cache: bytes | None) -> BuildOutput:
        raise RuntimeError("builder crashed")

    def failing_validation(engine: bytes) -> dict:
        raise RuntimeError("engine cannot run")

    with pytest.raises(RuntimeError, match="builder crashed"):
        cache.get_or_build(KEY, failing_build, no_validation)
    with pytest.raises(RuntimeError, match="cannot run"):
        cache.get_or_build(KEY, CountingBuilder(), failing_validation)
    assert cache.load(KEY) is None
    assert not list(tmp_path.glob("*.engine")) and not list(tmp_path.glob("*.tmp"))


def _corrupt_bad_magic(path: Path) -> None:
    path.write_bytes(b"NOT AN ENGINE" + path.read_bytes()[len(MAGIC):])


def _corrupt_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


def _corrupt_flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def _corrupt_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(MAGIC) + 4] + b"#" + data[len(MAGIC) + 5:])


def _corrupt_other_key(path: Path) -> None:
    other = dataclasses.replace(KEY, tensorrt_version="8.6.1")
    write_record(path, other.as_dict(), b"engine of another TensorRT", {})


def _corrupt_empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("corrupt, reason", [
    (_corrupt_bad_magic, "bad header"), (_corrupt_truncate, "truncated"), (_corrupt_flip_byte, "checksum"),
    (_corrupt_header, "unreadable header"), (_corrupt_other_key, "key mismatch in ['tensorrt_version']"),
    (_corrupt_empty, "bad header"),
])
def test_corrupt_or_mismatched_file_is_logged_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          corrupt, reason: str) -> None:
    cache = EngineCache(tmp_path)
    builder = CountingBuilder()
    path = cache.get_or_build(KEY, builder, no_validation).path
    corrupt(path)
    with caplog.at_level(logging.WARNING, logger="geovis_ros.inference.cache"):
        entry = cache.get_or_build(KEY, builder, no_validation)
    assert not entry.hit and builder.builds == 2 and entry.engine == builder.payload
    assert reason in caplog.text and str(path) in caplog.text
    assert cache.get_or_build(KEY, builder, no_validation).hit  # the rebuilt file is good again


def test_timing_cache_is_persisted_and_fed_to_later_builds(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    builder = CountingBuilder()
    cache.get_or_build(KEY, builder, no_validation)
    other_size = dataclasses.replace(KEY, input_shapes=(("image", (1, 3, 480, 640)),))
    cache.get_or_build(other_size, builder, no_validation)
    assert builder.timing_caches_seen == [None, b"+tactics"]
    assert cache.timing_cache_path(KEY) == cache.timing_cache_path(other_size)
    other_gpu = dataclasses.replace(KEY, gpu_name="NVIDIA RTX A2000")
    assert cache.timing_cache_path(other_gpu) != cache.timing_cache_path(KEY)
    assert read_record(cache.timing_cache_path(KEY), KEY.timing_cache_key())[0] == b"+tactics+tactics"


def test_corrupt_timing_cache_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EngineCache(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    cache.timing_cache_path(KEY).write_bytes(b"garbage")
    builder = CountingBuilder()
    with caplog.at_level(logging.WARNING):
        cache.get_or_build(KEY, builder, no_validation)
    assert builder.timing_caches_seen == [None] and "timing cache" in caplog.text
    assert read_record(cache.timing_cache_path(KEY), KEY.timing_cache_key())[0] == b"+tactics"


def test_invalidate_removes_the_engine(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    builder = CountingBuilder()
    cache.get_or_build(KEY, builder, no_validation)
    cache.invalidate(KEY, "test")
    assert cache.load(KEY) is None
    assert not cache.get_or_build(KEY, builder, no_validation).hit


def test_lock_timeout_raises_a_clear_error(tmp_path: Path) -> None:
    holder = EngineCache(tmp_path)
    waiter = EngineCache(tmp_path, lock_timeout_s=0.2)
    with holder._lock(KEY), pytest.raises(EngineCacheError, match="another process is building"):
        waiter.get_or_build(KEY, CountingBuilder(), no_validation)


def test_unwritable_cache_dir_raises_engine_cache_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EngineCacheError, match="not writable"):
        EngineCache(blocker / "engines").get_or_build(KEY, CountingBuilder(), no_validation)


def _build_in_child(cache_dir: str, build_log: str, building, result_queue) -> None:
    """One 'node': get the engine, building it slowly if needed; reports (hit, seconds)."""

    def slow_build(timing_cache: bytes | None) -> BuildOutput:
        with open(build_log, "a") as log:
            log.write(f"{os.getpid()}\n")
        building.set()
        time.sleep(0.6)
        return BuildOutput(b"engine built by " + str(os.getpid()).encode())

    started = time.monotonic()
    entry = EngineCache(Path(cache_dir)).get_or_build(KEY, slow_build, no_validation)
    result_queue.put((entry.hit, time.monotonic() - started, entry.engine))


def test_two_processes_build_once_the_second_waits_then_hits(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    building, results = context.Event(), context.Queue()
    log = tmp_path / "builds.log"
    first = context.Process(target=_build_in_child, args=(str(tmp_path), str(log), building, results))
    first.start()
    assert building.wait(10), "the first process never started building"
    second = context.Process(target=_build_in_child, args=(str(tmp_path), str(log), building, results))
    second.start()
    outcomes = sorted(results.get(timeout=20) for _ in range(2))
    first.join(10)
    second.join(10)
    assert log.read_text().count("\n") == 1  # exactly one build
    (waiter_hit, waiter_seconds, waiter_engine), (builder_hit, _, builder_engine) = outcomes[1], outcomes[0]
    assert (builder_hit, waiter_hit) == (False, True)
    assert waiter_engine == builder_engine
    assert waiter_seconds > 0.2  # it waited on the lock rather than finding a finished file


# -- planted and hostile cache contents ------------------------------------------------------------

FORGED_PASS = {"validation": {"reference": "onnxruntime-cpu", "errors": {"depth": 0.0}}}


def _built_cache(tmp_path: Path) -> tuple[EngineCache, CountingBuilder, Path]:
    cache = EngineCache(tmp_path / "engines")
    builder = CountingBuilder()
    path = cache.get_or_build(KEY, builder, no_validation).path
    return cache, builder, path


def _rebuilt_after(cache: EngineCache, builder: CountingBuilder, caplog: pytest.LogCaptureFixture) -> CacheEntry:
    with caplog.at_level(logging.WARNING, logger="geovis_ros.inference.cache"):
        entry = cache.get_or_build(KEY, builder, no_validation)
    assert not entry.hit and entry.engine == builder.payload
    assert entry.metadata["validation"]["reference"] == "test"  # the fresh report, never the planted one
    return entry


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770], ids=["0777", "1777-sticky", "0770-group"])
def test_directory_writable_by_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    builder = CountingBuilder()
    with pytest.raises(EngineCacheError, match=rf"writable by others .* run 'chmod go-w {shared}'"):
        EngineCache(shared).get_or_build(KEY, builder, no_validation)
    with pytest.raises(EngineCacheError, match="writable by others"):
        EngineCache(shared).load(KEY)
    assert builder.builds == 0 and not list(shared.iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 12345, 12345)
    with pytest.raises(EngineCacheError, match="owned by uid 12345, not by this user"):
        EngineCache(foreign).load(KEY)


def test_new_directory_is_private(tmp_path: Path) -> None:
    cache, _, path = _built_cache(tmp_path)
    assert (cache.directory.stat().st_mode & 0o777) == 0o700
    assert (path.stat().st_mode & 0o777) == 0o600
    assert ((cache.directory / RECORD_KEY_NAME).stat().st_mode & 0o777) == 0o600


def test_planted_record_with_a_forged_validation_report_is_rebuilt(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    cache, builder, path = _built_cache(tmp_path)
    # Well-formed in every way an attacker without the directory's secret can manage: right key, right
    # size and sha256 of the planted engine, a "validation passed" report, a MAC under a guessed key.
    path.write_bytes(encode_record(b"\0" * 32, KEY.as_dict(), b"attacker's engine", FORGED_PASS))
    assert cache.load(KEY) is None
    _rebuilt_after(cache, builder, caplog)
    assert "not authenticated" in caplog.text and builder.builds == 2


def test_record_copied_from_another_cache_is_not_trusted(tmp_path: Path) -> None:
    other, _, other_path = _built_cache(tmp_path / "other")
    cache = EngineCache(tmp_path / "engines")
    cache.directory.mkdir(mode=0o700)
    write_record(cache.directory / "unrelated.engine", {"k": 1}, b"x", {})  # this cache has a key of its own
    cache.engine_path(KEY).write_bytes(other_path.read_bytes())
    assert other.load(KEY) is not None and cache.load(KEY) is None


def test_edited_validation_report_breaks_the_mac(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, builder, path = _built_cache(tmp_path)
    data = path.read_bytes()
    assert data.count(b'"reference": "test"') == 1
    path.write_bytes(data.replace(b'"reference": "test"', b'"reference": "TEST"'))
    assert cache.load(KEY) is None
    _rebuilt_after(cache, builder, caplog)
    assert "not authenticated" in caplog.text


def test_engine_symlink_to_a_device_is_never_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, builder, path = _built_cache(tmp_path)
    path.unlink()
    path.symlink_to("/dev/zero")
    assert cache.load(KEY) is None
    _rebuilt_after(cache, builder, caplog)
    assert "symbolic link" in caplog.text and not path.is_symlink() and path.is_file()


def test_engine_fifo_is_refused_without_blocking(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, builder, path = _built_cache(tmp_path)
    path.unlink()
    os.mkfifo(path)
    outcome: list[object] = []
    reader = threading.Thread(target=lambda: outcome.append(cache.load(KEY)), daemon=True)
    reader.start()
    reader.join(5)
    assert not reader.is_alive() and outcome == [None], "reading a FIFO record blocked"
    _rebuilt_after(cache, builder, caplog)
    assert "not a regular file" in caplog.text and path.is_file()


def test_lock_symlink_never_creates_a_file_outside_the_directory(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    cache = EngineCache(tmp_path / "engines")
    cache.directory.mkdir(mode=0o700)
    outside = tmp_path / "outside" / "victim"
    outside.parent.mkdir()
    lock = cache.engine_path(KEY).with_suffix(".lock")
    lock.symlink_to(outside)
    with caplog.at_level(logging.WARNING, logger="geovis_ros.inference.cache"):
        entry = cache.get_or_build(KEY, CountingBuilder(), no_validation)
    assert not entry.hit and not outside.exists()
    assert not lock.is_symlink() and lock.is_file() and "symbolic link" in caplog.text


def test_oversized_record_is_refused_before_reading(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, builder, path = _built_cache(tmp_path)
    small = EngineCache(cache.directory, max_record_bytes=path.stat().st_size - 1)
    with caplog.at_level(logging.WARNING, logger="geovis_ros.inference.cache"):
        assert small.load(KEY) is None
    assert "over the bound" in caplog.text
    assert cache.load(KEY) is not None


def test_unusable_record_key_is_replaced_and_its_records_rebuilt(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    cache, builder, _ = _built_cache(tmp_path)
    key_file = cache.directory / RECORD_KEY_NAME
    key_file.chmod(0o644)  # readable by others: whoever read it could sign records
    assert cache.load(KEY) is None
    _rebuilt_after(cache, builder, caplog)
    assert (key_file.stat().st_mode & 0o777) == 0o600 and cache.load(KEY) is not None
