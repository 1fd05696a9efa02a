"""Inference throughput and latency per batch size (1, 2, 4, ... up to benchmark.inference_max_batch) and
precision, for the Keras model and the exported SavedModel.

- Keras: ``model(images, training=False)`` in a tf.function on preprocessed float32 images, the model
  built under each precision's dtype policy (the trained run's architecture, class count and size).
- Export: the SavedModel's ``serve_pixels`` signature (uint8 images in, centre crop and resize in the
  graph, top-k out), as a client calls it; float32 as exported, so measured for fp32 and tf32 only.
Weights do not change the speed: without ``--model`` (a train run) the model is built with random
weights, without ``--export`` a temporary export of it is written. Every call is timed to its
result on the host after ``inference_warmup`` untimed calls; the raw seconds of every call are kept.
One dllogger record per configuration (the reference's metric names beside ours), parsed back into
``inference.json`` (``effnet.formats.benchmark_results``).
"""
from __future__ import annotations

import gc
import json
import sys
import tempfile
from pathlib import Path

from effnet.core import layout
from effnet.formats.dllog import DLLogger, read_records

RECORD = "inference_benchmark"
MODELS = ("keras", "export")


def batch_sizes(largest: int) -> list[int]:
    """1, 2, 4, ... below ``largest``, then ``largest``."""
    sizes, size = [], 1
    while size < largest:
        sizes.append(size)
        size *= 2
    return sizes + [largest]


def _model(config: dict, run_dir: str | None):
    """The Keras model to time (built under the current dtype policy), its class names and image size."""
    from effnet.formats import trained_run
    from effnet.models import build_model, native_size

    m = config["model"]
    if run_dir:
        summary = trained_run.load_summary(run_dir)
        arch, names, size = summary["arch"], [c["name"] for c in summary["classes"]], summary["image_size"]
    else:
        arch, size = m["arch"], m["image_size"] or native_size(m["arch"])
        names = [str(i) for i in range(1000)]
    return build_model(arch, num_classes=len(names), image_size=size, activation=m["activation"]), names, size


def _serve_pixels(export_dir: str | None, model, names: list[str], size: int, config: dict, scratch: Path):
    """The ``serve_pixels`` signature of ``export_dir``, or of a temporary export of ``model``."""
    from effnet.formats import exported_model
    from effnet.stages.export import save_serving, serving_module

    if export_dir:
        exported_model.load_manifest(export_dir)  # a clear error when it is not an export
    else:
        save_serving(serving_module(model, size, names, config["export"]["top_k"], config["model"]["crop_padding"]),
                     scratch / layout.SAVED_MODEL)
    loaded = exported_model.load_saved_model(export_dir or scratch)
    return loaded, loaded.signatures["serve_pixels"]


def _callables(model_name: str, model, signature, batch: int, size: int):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(batch)
    pixels = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    if model_name == "keras":
        forward = tf.function(lambda x: model(x, training=False))
        images = tf.constant(pixels.astype(np.float32))
        return lambda: forward(images).numpy()
    images = tf.constant(pixels)
    return lambda: signature(images=images)["probabilities"].numpy()


def _log_record(log: DLLogger, record: dict) -> None:
    latency = record["latency_ms"]
    log.log((RECORD,), {**record, "avg_exp_per_second_eval": record["img_per_sec"],
                        **{f"latency_{p}pct": latency[f"p{p}"] for p in (90, 95, 99)}, "latency_avg": latency["mean"]})


def measure(config: dict, log_path: Path, run_dir: str | None = None, export_dir: str | None = None) -> None:
    """Time every model x precision x batch size; one dllogger record each (and the skipped ones) to ``log_path``."""
    import keras

    from effnet.core.timing import latency_ms, rate, time_calls
    from effnet.stages.benchmark import precisions

    b = config["benchmark"]
    with DLLogger(log_path, stream=sys.stdout, append=False) as log, \
            tempfile.TemporaryDirectory(prefix="effnet-benchmark-") as scratch:
        log.metadata("img_per_sec", {"unit": "images/s"})
        log.metadata("latency_ms", {"unit": "ms"})
        for name, precision in precisions.runnable(config, log):
            model, names, size = _model(config, run_dir)
            exported = precision.policy == "float32"
            if not exported:
                log.log("PARAMETER", {"precision": name, "model": "export",
                                      "skipped": "the export is float32: measured under fp32 and tf32 only"})
            loaded, signature = (_serve_pixels(export_dir, model, names, size, config, Path(scratch) / name)
                                 if exported else (None, None))
            for model_name in MODELS[:2 if exported else 1]:
                for batch in batch_sizes(b["inference_max_batch"]):
                    call = _callables(model_name, model, signature, batch, size)
                    seconds = time_calls(call, b["inference_steps"], b["inference_warmup"])
                    _log_record(log, {"model": model_name, "precision": name, "policy": precision.policy,
                                      "xla": precision.jit_compile, "batch_size": batch, "image_size": size,
                                      "img_per_sec": rate(seconds, batch), "latency_ms": latency_ms(seconds),
                                      "seconds": seconds})
            del model, loaded, signature
            keras.backend.clear_session()
            gc.collect()


def summarize(records: list[dict]) -> dict:
    """inference.json's rows and skipped configurations from the dllogger records."""
    rows, skipped = [], []
    for record in records:
        if record.get("type") != "LOG":
            continue
        if record["step"] == [RECORD]:
            rows.append({k: v for k, v in record["data"].items()
                         if not k.startswith(("avg_exp_", "latency_")) or k == "latency_ms"})
        elif record["step"] == "PARAMETER" and "skipped" in record["data"]:
            data = record["data"]
            skipped.append({"precision": data["precision"], "model": data.get("model", "all"),
                            "reason": data["skipped"]})
    return {"rows": rows, "skipped": skipped}


def run(config: dict, output: str | Path, run_dir: str | None = None, export_dir: str | None = None) -> dict:
    """Measure, then write OUTPUT/inference.json from the dllogger records; return it."""
    from effnet.core import environment
    from effnet.core.atomic import write_json
    from effnet.core.timing import METHOD

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    log_path = output / "inference.dllog.json"
    measure(config, log_path, run_dir, export_dir)
    b = config["benchmark"]
    result = {"kind": "inference", "model_run": run_dir, "export": export_dir,
              "warmup_calls": b["inference_warmup"], "calls": b["inference_steps"], "method": METHOD,
              **summarize(read_records(log_path)), "environment": environment.describe(),
              "config": json.loads(json.dumps(config))}
    write_json(output / layout.BENCHMARK_RESULTS["inference"], result)
    return result
