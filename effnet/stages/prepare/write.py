"""Writing the prepare stage's shards: worker processes, each writing one shard at a time.

A shard is written to a temporary file and renamed when complete, with a receipt in
``DIR/.receipts/`` recording its inputs, so a rerun after a kill writes only the shards
that are missing or whose inputs changed. The parent assigns each task to one worker
and watches the workers: a worker that dies (OOM killer, a crash in a decoder) has its
shard retried once in a new worker, then the stage stops naming the shard. No
temporary file is left behind either way.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import pickle
import random
import signal
import time
from pathlib import Path

from tqdm import tqdm

from effnet.core import cgroup
from effnet.core.atomic import atomic_open, temporary_path, write_json
from effnet.core.digests import file_sha256
from effnet.core.errors import OutOfMemoryError, UserError
from effnet.formats.images import CorruptImageError, check_image
from effnet.formats.records import check_example, encode_example
from effnet.formats.tfrecord import encode_record, iter_records
from effnet.stages.prepare.plan import ShardTask

RECEIPTS = ".receipts"
# What the default worker count budgets per worker: a worker writing image files imports protobuf and PIL, not
# TensorFlow (effnet.formats.example_proto), and has room for a large JPEG (36 MB decoded at 4000 x 3000); one
# reading through tfds imports TensorFlow (README, "Prepare", has the measured peaks).
WORKER_MEMORY = {"files": 1 << 28, "tfds": 1 << 30}
POLL_SECONDS = 0.2
ATTEMPTS = 2

# ---- worker side -----------------------------------------------------------------------

_progress = None


def _tick(n: int = 1) -> None:
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += n


def _source_images(task: ShardTask):
    """Yield (encoded bytes, class index, filename, name for errors) for a shard's inputs."""
    if task.kind == "files":
        for path, label in task.items:
            with open(path, "rb") as f:
                yield f.read(), label, os.path.basename(path), path
        return
    import tensorflow_datasets as tfds

    t = task.tfds
    builder = tfds.builder(t["name"], data_dir=t["data_dir"])
    examples = []
    for start, stop in task.items:
        ds = builder.as_dataset(split=f"{t['split']}[{start}:{stop}]", shuffle_files=False,
                                decoders={t["image_key"]: tfds.decode.SkipDecoding()})
        for n, ex in enumerate(tfds.as_numpy(ds), start):
            name = ex.get("file_name", b"").decode() or f"{t['split']}-{n:08d}"
            examples.append((ex[t["image_key"]], int(ex[t["label_key"]]), name,
                             f"tfds {t['name']} {t['split']}[{n}] ({name})"))
    random.Random(f"{t['seed']}-{task.path}").shuffle(examples)
    yield from examples


def write_shard(task: ShardTask) -> dict:
    """Write one shard atomically; return its manifest entry."""
    digest, count, skipped, converted = hashlib.sha256(), 0, [], 0
    with atomic_open(task.path) as out:
        for data, label, filename, name in _source_images(task):
            try:
                image = check_image(data, name)
            except CorruptImageError as exc:
                if not task.skip_corrupt:
                    raise
                skipped.append({"file": name, "error": exc.reason})
                _tick()
                continue
            cls = task.classes[label]
            record = encode_record(encode_example(image.jpeg, image.height, image.width, label, cls.id, cls.name,
                                                  filename))
            out.write(record)
            digest.update(record)
            count += 1
            converted += image.converted
            _tick()
    return {"file": os.path.basename(task.path), "examples": count, "bytes": os.path.getsize(task.path),
            "sha256": digest.hexdigest(), "converted": converted, "skipped": skipped}


def validate_shard(task: ShardTask) -> dict:
    """Check an existing shard record by record (CRCs, Example keys, image decodes); return its entry."""
    count, labels = 0, {}
    for n, (offset, data) in enumerate(iter_records(task.path)):
        feature = check_example(data, f"{task.path} (record {n} at byte offset {offset})")
        label = feature["image/class/label"].int64_list.value[0]
        text = feature["image/class/text"].bytes_list.value[0].decode() if "image/class/text" in feature else ""
        labels.setdefault(label, text)
        count += 1
        _tick()
    return {"file": os.path.basename(task.path), "examples": count, "bytes": os.path.getsize(task.path),
            "sha256": file_sha256(task.path), "converted": 0, "skipped": [], "labels": labels}


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.dumps(exc)
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _worker(inbox, results, counter) -> None:
    """Run the tasks the parent sends (``(index, task)``, None to stop); report ``(index, entry, error)``."""
    global _progress
    _progress = counter
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    while (item := inbox.get()) is not None:
        index, task = item
        try:
            entry = validate_shard(task) if task.kind == "existing" else write_shard(task)
            results.put((index, entry, None))
        except BaseException as exc:
            results.put((index, None, _picklable(exc)))


# ---- parent side ---------------------------------------------------------------------------


class _Worker:
    """A worker process, its inbox and the task it is running."""

    def __init__(self, ctx, results, counter) -> None:
        self.inbox = ctx.SimpleQueue()
        self.process = ctx.Process(target=_worker, args=(self.inbox, results, counter), daemon=True)
        self.process.start()
        self.task: int | None = None

    def assign(self, index: int, task: ShardTask) -> None:
        self.task = index
        self.inbox.put((index, task))


def _death(exitcode: int, for_memory: bool | None, workers: int, kind: str) -> tuple[str, str]:
    """Why a worker is gone and what to change: killed for memory when its cgroup's OOM killer counted a kill
    (``for_memory``; None where the kernel does not say), else its signal or status."""
    if for_memory:
        budget = WORKER_MEMORY["tfds" if kind == "tfds" else "files"] >> 20
        return (f"killed for memory by the kernel's OOM killer, with {workers} workers writing at once (each "
                f"budgeted {budget} MiB by default)", "lower --workers, or give the stage more memory")
    advice = "lower --workers or check the shard's inputs"
    if exitcode < 0:
        name = signal.Signals(-exitcode).name
        if name == "SIGKILL":
            name += " (out of memory?)" if for_memory is None else " (not for memory: no OOM kill in its cgroup)"
        return f"killed by {name}", advice
    return f"exited with status {exitcode}", advice


def _receipt_path(task: ShardTask) -> Path:
    path = Path(task.path)
    return path.parent / RECEIPTS / f"{path.name}.json"


def _done(task: ShardTask, fingerprint: str) -> dict | None:
    """The receipt of a shard already written from the same inputs, if the shard is intact on disk."""
    try:
        receipt = json.loads(_receipt_path(task).read_text())
        if receipt["fingerprint"] == fingerprint and os.path.getsize(task.path) == receipt["entry"]["bytes"]:
            return receipt["entry"]
    except (OSError, ValueError, KeyError):
        pass
    return None


def run_tasks(tasks: list[ShardTask], workers: int, total_examples: int | None) -> tuple[list[dict], int]:
    """Run the shard tasks not already done on ``workers`` processes, with a progress bar.

    Returns the manifest entries in task order and the number of images processed by this run.
    """
    fingerprints = [t.fingerprint() for t in tasks]
    entries = [_done(t, f) for t, f in zip(tasks, fingerprints)]
    todo = [i for i, e in enumerate(entries) if e is None]
    print(f"prepare: {len(tasks) - len(todo)} of {len(tasks)} shards already complete, {len(todo)} to write",
          flush=True)
    if not todo:
        return entries, 0
    already = sum(e["examples"] + len(e["skipped"]) for e in entries if e)
    bar = tqdm(total=total_examples and total_examples - already, unit="img", desc="prepare",
               dynamic_ncols=True, mininterval=1.0)
    pool = _Pool(tasks, todo, min(workers, len(todo)))
    try:
        while pool.busy():
            pool.assign()
            dead = pool.dead()
            for index, entry in pool.finished():
                entries[index] = entry
                write_json(_receipt_path(tasks[index]), {"fingerprint": fingerprints[index], "entry": entry})
            pool.replace(dead)
            bar.update(pool.counter.value - bar.n)
            time.sleep(POLL_SECONDS)
        bar.update(pool.counter.value - bar.n)
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        bar.close()
    return entries, pool.counter.value


class _Pool:
    """The worker processes of ``run_tasks``: each runs one task at a time from the queue of ``todo``; a task
    whose worker died goes back to the front of the queue, once."""

    def __init__(self, tasks: list[ShardTask], todo: list[int], size: int) -> None:
        self.ctx = mp.get_context("spawn")
        self.counter, self.results = self.ctx.Value("q", 0), self.ctx.SimpleQueue()
        self.tasks, self.queue, self.attempts = tasks, list(todo), dict.fromkeys(todo, 0)
        self.workers = [self._start() for _ in range(size)]
        self.size, self.oom_kills = size, cgroup.oom_kills()  # the group the workers share with this process

    def _start(self) -> _Worker:
        return _Worker(self.ctx, self.results, self.counter)

    def busy(self) -> bool:
        return bool(self.queue) or any(w.task is not None for w in self.workers)

    def assign(self) -> None:
        """Give each idle worker the next task."""
        for w in self.workers:
            if w.task is None and self.queue:
                index = self.queue.pop(0)
                self.attempts[index] += 1
                w.assign(index, self.tasks[index])

    def dead(self) -> list[_Worker]:
        """The workers that are gone (read before ``finished``: a result sent just before dying still counts)."""
        return [w for w in self.workers if not w.process.is_alive()]

    def finished(self):
        """Yield (task index, manifest entry) of each task done since the last call; a task's error is raised."""
        while not self.results.empty():
            index, entry, error = self.results.get()
            if error is not None:
                raise error
            next(w for w in self.workers if w.task == index).task = None
            yield index, entry

    def replace(self, dead: list[_Worker]) -> None:
        """Requeue the tasks of ``dead`` workers (UserError after ATTEMPTS) and start new workers while there
        are tasks left."""
        for_memory = self._killed_for_memory() if dead else None  # once for all the workers that died together
        for w in dead:
            self.workers.remove(w)
            if w.task is not None:
                path = self.tasks[w.task].path
                temporary_path(path, w.process.pid).unlink(missing_ok=True)
                reason, advice = _death(w.process.exitcode, for_memory, self.size, self.tasks[w.task].kind)
                if self.attempts[w.task] >= ATTEMPTS:
                    error = OutOfMemoryError if for_memory else UserError
                    raise error(f"{path}: the worker writing this shard was {reason}, {ATTEMPTS} times; {advice}")
                print(f"prepare: the worker writing {path} was {reason}; retrying the shard", flush=True)
                self.queue.insert(0, w.task)
            if self.queue:
                self.workers.append(self._start())

    def _killed_for_memory(self) -> bool | None:
        """Whether the OOM killer has killed in this process's group since the last call (None: unknown)."""
        before, self.oom_kills = self.oom_kills, cgroup.oom_kills()
        return None if None in (before, self.oom_kills) else self.oom_kills > before

    def terminate(self) -> None:
        """Stop every worker mid-write and remove their temporary files."""
        for w in self.workers:
            w.process.terminate()
        for w in self.workers:
            w.process.join()
        for directory in {Path(t.path).parent for t in self.tasks}:
            remove_temporaries(directory)

    def close(self) -> None:
        """Let the idle workers end."""
        for w in self.workers:
            w.inbox.put(None)
        for w in self.workers:
            w.process.join()


def remove_temporaries(directory: Path) -> None:
    """Delete the temporary files of shards whose writing was interrupted (never trusted, never kept)."""
    for stale in directory.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
