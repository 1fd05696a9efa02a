"""The training loop: one Horovod rank's steps, checkpoints, signals, logs and final outputs.

Every rank runs the same steps: a ``tf.function`` micro-step computes the loss on one batch and
``hvd.DistributedGradientTape`` averages its gradients across ranks (passing the underlying
tf.Variables: Horovod's Keras API does not average under Keras 3; a single rank uses the plain
tape); every ``grad_accum_steps`` micro-steps the optimizer applies their mean, the EMA moves, and
the global step advances (with one micro-step per update, within the micro-step: no accumulators). The
initial state is broadcast from rank 0. SIGTERM or SIGUSR1 (what SLURM sends before a time limit
or preemption) stops every rank at the next step boundary; rank 0 writes a checkpoint and the
process exits with EXIT_PREEMPTED, which the workflow treats as "rerun". A rerun resumes at the
exact step: the input stream skips the batches consumed, and the learning rate, EMA, loss scale
and RNG states continue from the checkpoint.
"""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml

from effnet.core import layout
from effnet.core.atomic import atomic_open, atomic_path, write_json
from effnet.core.diskspace import NoSpaceError
from effnet.core.errors import EXIT_PREEMPTED, UserError
from effnet.core.ranks import World
from effnet.data import build_dataset
from effnet.data.mixing import mix_batch
from effnet.data.validation import evaluate, make_eval_step, validation_batches
from effnet.formats import checkpoints
from effnet.formats.dllog import DLLogger, Verbosity
from effnet.formats.records import load_manifest
from effnet.stages.train import init_weights, recipe, stagewise
from effnet.stages.train.lock import hold
from effnet.stages.train.stop import StopFlag
from effnet.stages.train.watchdog import Watchdog


def _named_variables(model, optimizer, ema, step) -> dict:
    """Every variable of the run's state by a stable name (what a checkpoint holds)."""
    named = {f"model/{v.path}": v for v in model.variables}
    named.update({f"optimizer/{v.path}": v for v in optimizer.variables})
    if ema is not None:
        named.update({f"ema/{v.path}": a for v, a in zip(ema.sources, ema.averages)})
    named["loop/step"] = step
    if len(named) != len(model.variables) + len(optimizer.variables) + (len(ema.averages) if ema else 0) + 1:
        raise RuntimeError("variable paths are not unique: a checkpoint could not tell them apart")
    return named


def _tf_variable(v) -> tf.Variable:
    """The tf.Variable behind a Keras variable (what Horovod's broadcast needs)."""
    return v if isinstance(v, tf.Variable) else v.value


def _restore(named: dict, arrays: dict, where: Path) -> None:
    missing = sorted(set(named) - set(arrays))
    unexpected = sorted(set(arrays) - set(named))
    if missing or unexpected:
        raise UserError(f"{where}: its variables differ from this run's (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}): another model or recipe")
    for name, var in named.items():
        if tuple(arrays[name].shape) != tuple(var.shape):
            raise UserError(f"{where}: {name} has shape {arrays[name].shape}, this run's is {tuple(var.shape)}")
        var.assign(arrays[name])


def _save_model(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


class Trainer:
    """One rank's training run, from a validated config (see ``effnet.stages.train.run``)."""

    def __init__(self, config: dict, data_dir: str, output: Path, checkpoint_dir: Path, world: World,
                 precision: recipe.Precision, index_dir: str | None = None) -> None:
        import horovod.tensorflow as hvd

        from effnet.models import build_model, native_size

        self.hvd, self.config, self.world, self.precision = hvd, config, world, precision
        self.data_dir, self.index_dir, self.output, self.checkpoint_dir = data_dir, index_dir, output, checkpoint_dir
        t, m = config["train"], config["model"]
        self.t = t
        self.image_size = m["image_size"] or native_size(m["arch"])  # the last stage's, and evaluation's
        self.stages = stagewise.schedule(t, self.image_size)  # a bad stage key stops here, before data is read
        self.stage = self.stages[0]
        manifest = load_manifest(data_dir)
        self.num_classes = manifest["num_classes"]
        self.classes = manifest["classes"]
        self.identity = {"arch": m["arch"], "num_classes": self.num_classes, "image_size": self.image_size}
        self.init_sha256 = init_weights.digest(t["init_from"]) if t["init_from"] else None
        self.recipe = recipe.fingerprint(config, manifest, self.init_sha256)
        self.accum = t["grad_accum_steps"]
        self.global_batch = t["batch_size"] * world.size * self.accum
        probe = self.batches(self.stage, 0, 1, 0)  # also checks that the data fills a batch on every rank
        self.updates_per_epoch = probe.steps // self.accum
        if self.updates_per_epoch == 0:
            raise UserError(f"train.grad_accum_steps={self.accum}: an epoch has only {probe.steps} batches of "
                            f"{t['batch_size']} per rank")
        self.micro_per_epoch = self.updates_per_epoch * self.accum
        self.total_updates = t["epochs"] * self.updates_per_epoch

        keras.mixed_precision.set_global_policy(precision.policy)
        self.model = build_model(m["arch"], num_classes=self.num_classes, image_size=self.image_size,
                                 dropout=m["dropout"], drop_connect=m["drop_connect"], activation=m["activation"],
                                 batch_norm=m["batch_norm"], weight_init=m["weight_init"],
                                 bn_momentum=m["bn_momentum"], zero_init_residual=m["zero_init_residual"],
                                 any_size=len(self.stages) > 1)
        # before the EMA copies them; a resumed checkpoint then overwrites them. Every rank loads (a bad file stops
        # them all at once, rather than rank 0 alone while the others wait in the broadcast)
        self.init = init_weights.load(self.model, m["arch"], t["init_from"], self.classes) if t["init_from"] else None
        self.trainable = list(self.model.trainable_variables)
        self.optimizer = recipe.optimizer(t, precision.mixed_float16)
        self.optimizer.build(self.trainable)
        self.schedule = recipe.schedule(t, self.global_batch, self.updates_per_epoch)
        self.ema = recipe.EMA(self.model, t["ema_decay"]) if t["ema_decay"] else None
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.accumulators = self._accumulators()
        self.kernels = recipe.decayed_kernels(self.model) if t["optimizer"] != "adamw" else []
        self.loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=t["label_smoothing"])
        self.compression = hvd.Compression.fp16 if precision.mixed_float16 else hvd.Compression.none
        self._trace_anew()
        self.named = _named_variables(self.model, self.optimizer, self.ema, self.step)
        self.saved_step: int | None = None

    def batches(self, stage: stagewise.Stage, epoch: int, epochs: int, skip: int):
        """The training stream of ``epochs`` epochs from ``epoch``, ``skip`` micro-batches consumed, at ``stage``'s
        image size and RandAugment magnitude."""
        t = self.t
        return build_dataset(self.data_dir, "train", backend=self.config["data"]["backend"],
                             batch_size=t["batch_size"], image_size=stage.image_size, rank=self.world.rank,
                             world_size=self.world.size, seed=t["seed"], epoch=epoch, epochs=epochs, skip=skip,
                             steps_per_epoch=t["steps_per_epoch"] and t["steps_per_epoch"] * self.accum,
                             augment=None if t["augment"] == "none" else t["augment"],
                             crop_min_area=t["crop_min_area"], index_dir=self.index_dir,
                             randaug_magnitude=stage.randaug_magnitude)

    # ---- steps ------------------------------------------------------------------------------------

    def _micro_step(self, images, labels, seed):
        images, soft = mix_batch(images, labels, self.num_classes, seed, self.stage.mixup_alpha,
                                 self.stage.cutmix_alpha)
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(images, training=True), tf.float32)
            loss = self.loss_fn(soft, logits)
            total = loss + recipe.l2_penalty(self.kernels, self.t["weight_decay"]) if self.kernels else loss
            scaled = self.optimizer.scale_loss(total)  # loss-scaled under mixed_float16, else unchanged
        if self.world.size > 1:  # one rank: nothing to average (Horovod's tf.cond per gradient costs ~14 s to trace)
            tape = distributed_tape(self.hvd, tape, self.compression, self.world.size)
        grads = tape.gradient(scaled, [v.value for v in self.trainable])
        if self.accumulators:  # one of grad_accum_steps micro-batches: apply_step applies their mean
            for accumulator, grad in zip(self.accumulators, grads):
                accumulator.assign_add(tf.cast(grad, tf.float32))
        else:
            self._apply(grads)
        hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
        return loss, hits

    def set_epoch(self, epoch: int) -> None:
        """Train only the classifier during the first ``train.freeze_epochs`` epochs (the backbone's weights
        fixed and its batch norm in inference mode, as in Keras' fine-tuning guide and timm), and keep batch norm
        frozen throughout with ``train.freeze_bn``; the step is traced anew when what trains changes."""
        frozen = epoch < self.t["freeze_epochs"]
        for layer in self.model.layers:
            if layer.name != init_weights.HEAD and layer.weights:
                norm = isinstance(layer, keras.layers.BatchNormalization)
                layer.trainable = not (frozen or (norm and self.t["freeze_bn"]))
        trainable = list(self.model.trainable_variables)
        if [v.path for v in trainable] != [v.path for v in self.trainable]:
            self.trainable = trainable
            self.accumulators = self._accumulators()
            self._trace_anew()

    def set_stage(self, stage: stagewise.Stage) -> None:
        """Train with ``stage``'s mixup and CutMix (its image size and magnitude are its stream's, ``batches``)."""
        if stage != self.stage:
            self.stage = stage
            self._trace_anew()

    def _trace_anew(self) -> None:
        self.micro_step = tf.function(self._micro_step)
        self._apply_accumulated = tf.function(self._apply_mean)

    def _accumulators(self) -> list[tf.Variable]:
        return [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False)
                for v in self.trainable] if self.accum > 1 else []

    def train_step(self, images, labels, seed):
        """A micro-step on one batch per rank and the update after it: what the benchmarks time (the loop
        applies the update every ``grad_accum_steps`` micro-steps). The batch's loss and top-1 hits."""
        loss, hits = self.micro_step(images, labels, seed)
        self.apply_step()
        return loss, hits

    def completed_step(self) -> int:
        """The optimizer steps done, read on the host (so it waits for the device)."""
        return int(self.step.numpy())

    def apply_step(self) -> None:
        """Apply the mean of the accumulated micro-steps (with one micro-step per update, it applied itself)."""
        if self.accumulators:
            self._apply_accumulated()

    def _apply_mean(self):
        self._apply([a / self.accum for a in self.accumulators])
        for accumulator in self.accumulators:
            accumulator.assign(tf.zeros_like(accumulator))

    def _apply(self, grads) -> None:
        self.optimizer.learning_rate = self.schedule(self.step)
        self.optimizer.apply_gradients(zip(grads, self.trainable))
        self.step.assign_add(1)
        if self.ema is not None:
            self.ema.update(self.step)

    # ---- state --------------------------------------------------------------------------------------

    def resume(self) -> dict | None:
        """Load the newest valid checkpoint on rank 0 and broadcast the state; return its meta."""
        meta = None
        if self.world.chief:
            found = checkpoints.latest(self.checkpoint_dir, self.identity, self.recipe)
            if found:
                meta, arrays = found
                _restore(self.named, arrays, self.checkpoint_dir / f"{layout.CHECKPOINT_PREFIX}{meta['step']:09d}")
        meta = self.hvd.broadcast_object(meta, root_rank=0, name="resume_meta")
        self.hvd.broadcast_variables([_tf_variable(v) for v in self.named.values()], root_rank=0)
        self.saved_step = meta["step"] if meta else None
        return meta

    def weights_digests(self) -> list[str]:
        """Every rank's digest of its trainable weights, in rank order; UserError unless they are equal (ranks
        whose gradients were not averaged drift apart silently, and a checkpoint would keep rank 0's alone)."""
        digest = hashlib.sha256()
        for v in self.trainable:
            digest.update(np.ascontiguousarray(v.numpy()).tobytes())
        digests = self.hvd.allgather_object(digest.hexdigest()[:16], name="weights_digest")
        if len(set(digests)) > 1:
            raise UserError(f"at step {self.completed_step()} the ranks' weights differ (digests by rank: "
                            f"{digests}): their gradients are not averaged the same way")
        return digests

    def save(self, epoch: int, micro: int) -> None:
        """Rank 0 writes a checkpoint of the state after ``micro`` micro-batches of ``epoch``, once every rank's
        weights are found equal to its own; every rank returns once it is complete (or raises its failure)."""
        digests = self.weights_digests()
        failure = None
        if self.world.chief:
            arrays = {name: np.asarray(v.numpy()) for name, v in self.named.items()}
            meta = {"step": self.completed_step(), "epoch": epoch, "micro_batch": micro, "seed": self.t["seed"],
                    **self.identity, checkpoints.RECIPE: self.recipe, "world_size": self.world.size,
                    "global_batch": self.global_batch, "weights_digests": digests}
            try:
                checkpoints.save(self.checkpoint_dir, arrays, meta, self.t["keep_checkpoints"])
            except NoSpaceError as exc:
                failure = exc
        self.fail_together(failure, "checkpoint_saved")
        self.saved_step = self.completed_step()

    def fail_together(self, failure: NoSpaceError | None, name: str) -> None:
        """Raise rank 0's ``failure`` (a full disk met writing) on every rank at once: ranks left waiting in a
        collective would be killed later, and the job would end with their 137 instead of EXIT_NO_SPACE."""
        if self.world.size > 1:
            failure = self.hvd.broadcast_object(failure, root_rank=0, name=name)
        if failure is not None:
            raise failure

    def agree_to_stop(self, flag: StopFlag, failure: NoSpaceError | None = None) -> bool:
        """Whether any rank was signalled (every rank gets the same answer); rank 0's ``failure`` (its log's disk
        full) is raised on every rank."""
        mine = tf.constant(2 if failure else (0 if flag.signal is None else 1), tf.int32)
        verdict = int(self.hvd.allreduce(mine, op=self.hvd.Max, name="stop").numpy())
        if verdict == 2:
            self.fail_together(failure, "log_written")
        return bool(verdict)


def distributed_tape(hvd, tape: tf.GradientTape, compression, ranks: int):
    """A tape whose gradients are averaged over ``ranks``, each divided by the rank count before the sum:
    loss-scaled gradients compressed to float16 would otherwise overflow (65504) in the sum, and the loss
    scale settle ``ranks`` times lower, skipping more steps."""
    return hvd.DistributedGradientTape(tape, compression=compression, gradient_predivide_factor=float(ranks))


def _log_start(log: DLLogger, trainer: Trainer, world: World) -> None:
    t = trainer.t
    log.log("PARAMETER", {"world_size": world.size, "global_batch": trainer.global_batch,
                          "precision": trainer.precision.policy, "xla": trainer.precision.jit_compile,
                          "updates_per_epoch": trainer.updates_per_epoch,
                          "peak_lr": t["lr_init"] * trainer.global_batch / recipe.REFERENCE_BATCH,
                          "stages": [stage.record() for stage in trainer.stages],
                          "config": trainer.config})
    if trainer.init:
        init = trainer.init
        log.log("PARAMETER", {"init_from": trainer.t["init_from"], "init_kind": init.kind,
                              "init_sha256": trainer.init_sha256, "init_layers_loaded": init.loaded,
                              "init_layers_reinitialised": list(init.reinitialised)})
        if init.note:
            log.log("PARAMETER", {"init_warning": init.note})
    for metric, unit in (("loss", "nat"), ("top1", "fraction"), ("stage", None), ("lr", None),
                         ("img_per_sec", "images/s"),
                         ("eval_loss", "nat"), ("eval_top1", "fraction"), ("eval_top5", "fraction")):
        log.metadata(metric, {"unit": unit} if unit else {})


def run(config: dict, data_dir: str, output: str | Path, checkpoint_dir: str | Path | None = None,
        flag: StopFlag | None = None, index_dir: str | None = None) -> int:
    """Train (or resume) the run ``config`` on this rank; return the exit status (0 or EXIT_PREEMPTED)."""
    return train(config, data_dir, output, checkpoint_dir, flag, index_dir)[0]


def train(config: dict, data_dir: str, output: str | Path, checkpoint_dir: str | Path | None = None,
          flag: StopFlag | None = None, index_dir: str | None = None) -> tuple[int, "Trainer"]:
    """``run``, also returning the rank's Trainer (its model and state after the last step).

    ``flag``: the stop-signal handler, installed early by the command line (else here). ``index_dir``: the
    DALI indexes (data.backend dali; default: the pipeline's layout, beside ``data_dir``)."""
    from effnet.core import ranks

    flag = flag or StopFlag()

    t = config["train"]
    world = ranks.init(t["stall_timeout"])
    output = Path(output)
    if world.chief:
        output.mkdir(parents=True, exist_ok=True)
        lock = hold(output)  # noqa: F841 (held until this function returns or the process ends)
    watchdog = Watchdog(t["stall_timeout"], world.rank)  # from the first step: each step and evaluation batch
    precision = recipe.precision(t, on_gpu=world.device != "CPU")
    if t["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    tf.config.experimental.enable_tensor_float_32_execution(precision.tf32)
    if precision.jit_compile:
        tf.config.optimizer.set_jit("autoclustering")  # as the reference: XLA clusters, Horovod ops stay out
    keras.utils.set_random_seed(t["seed"])
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else output / layout.CHECKPOINTS
    print(f"rank {world.rank}/{world.size} local_rank {world.local_rank}/{world.local_size} device {world.device} "
          f"precision {precision.policy} xla {precision.jit_compile} tf32 {precision.tf32} "
          f"controller {world.controller}", flush=True)
    trainer = Trainer(config, data_dir, output, checkpoint_dir, world, precision, index_dir)
    log = DLLogger(output / layout.TRAIN_LOG if world.chief else None, stream=sys.stdout if world.chief else None,
                   verbosity=Verbosity.VERBOSE if world.chief else Verbosity.OFF)
    if world.chief:
        with atomic_open(output / layout.TRAIN_CONFIG, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        _log_start(log, trainer, world)
    meta = trainer.resume()
    epoch, micro = (meta["epoch"], meta["micro_batch"]) if meta else (0, 0)
    if meta and world.chief:
        log.log("PARAMETER", {"resumed_from_step": meta["step"], "epoch": epoch, "micro_batch": micro})
    try:
        status = _train(trainer, log, flag, epoch, micro, world, meta, watchdog)
    finally:
        watchdog.stop()
    log.close()
    return status, trainer


def _train(trainer: Trainer, log: DLLogger, flag: StopFlag, epoch: int, micro: int, world: World,
           meta: dict | None, watchdog: Watchdog) -> int:
    """The steps from (``epoch``, ``micro``) to the end; the exit status (0, or EXIT_PREEMPTED after a signal)."""
    t = trainer.t
    epochs = t["epochs"]
    eval_step = make_eval_step(trainer.model, trainer.num_classes) if t["eval_every"] else None
    progress = _Progress(trainer, log, epoch * trainer.micro_per_epoch + micro)
    step = trainer.completed_step()  # then counted here: reading the variable each step would wait for the device
    trainer.set_epoch(epoch)
    seed_base = tf.constant([t["seed"], 0x7EA1], tf.int64)
    for stage in stagewise.remaining(trainer.stages, epoch):  # each stage streams its epochs at its own size
        trainer.set_stage(stage)
        if len(trainer.stages) > 1:
            log.log("PARAMETER", {"stage_start": stage.record(), "epoch": epoch, "micro_batch": micro})
            watchdog.rest()
        for images, labels in trainer.batches(stage, epoch, stage.end_epoch - epoch, micro):
            seed = seed_base + tf.constant([0, 1], tf.int64) * (epoch * trainer.micro_per_epoch + micro)
            progress.batch(*trainer.micro_step(images, labels, seed), int(images.shape[0]))
            watchdog.beat()
            micro += 1
            if micro % trainer.accum:
                continue
            trainer.apply_step()
            step += 1
            epoch_done = micro == trainer.micro_per_epoch
            boundary = step % t["log_every"] == 0 or epoch_done  # where the host waits for the device anyway
            if boundary:
                progress.log_train(epoch, step)
            if epoch_done:
                epoch, micro = epoch + 1, 0
                trainer.set_epoch(epoch)
                if eval_step and (epoch % t["eval_every"] == 0 or epoch == epochs):
                    progress.log_eval(epoch, step, _evaluate(trainer, eval_step, watchdog))
            # one rank stops at the step after a signal; several vote at log boundaries (an allreduce the host
            # waits for), so that every rank stops at the same step (or fails together when rank 0's log found its
            # disk full)
            if world.size == 1 and progress.failure:
                raise progress.failure
            if ((flag.signal is not None and world.size == 1) or (world.size > 1 and boundary)) \
                    and trainer.agree_to_stop(flag, progress.failure):
                # save returns on every rank once rank 0's checkpoint is complete (no rank exits before it: srun
                # ends the step a while after the first rank exits, and a rank 0 killed mid-save loses the signal's
                # checkpoint)
                _save(trainer, watchdog, epoch, micro)
                log.log("PARAMETER", {"stopped_by_signal": flag.signal, "checkpoint_step": step})
                progress.close()
                return EXIT_PREEMPTED
            every = t["checkpoint_every_steps"]
            if (micro == 0 and epoch % t["checkpoint_every"] == 0) or (every and step % every == 0):
                _save(trainer, watchdog, epoch, micro)
    progress.close()
    if trainer.saved_step != trainer.completed_step():  # the final state, resumable (and reusable) as it is
        _save(trainer, watchdog, epoch, micro)
    wall = time.perf_counter() - progress.start
    rates = trainer.hvd.allgather_object(progress.images / max(wall, 1e-9), name="img_per_sec")
    failure = progress.failure
    if world.chief and not failure:
        try:
            _write_outputs(trainer, progress.last, progress.eval_metrics, rates, wall, meta)
        except NoSpaceError as exc:
            failure = exc
    trainer.fail_together(failure, "outputs_written")  # the ranks leave together (srun ends the step soon after
    return 0  # the first)


def _save(trainer: Trainer, watchdog: Watchdog, epoch: int, micro: int) -> None:
    trainer.save(epoch, micro)
    watchdog.beat()


class _Progress:
    """What the loop reports as it goes: the loss and top-1 of the batches since the last record, dllogger
    records (rank 0's file and stdout), TensorBoard scalars (rank 0) and a progress bar (rank 0 on a terminal)."""

    def __init__(self, trainer: Trainer, log: DLLogger, done: int) -> None:
        from tqdm import tqdm

        self.trainer, self.log = trainer, log
        chief = trainer.world.chief
        self.writer = tf.summary.create_file_writer(str(trainer.output / layout.TENSORBOARD)) if chief else None
        self.bar = tqdm(total=trainer.t["epochs"] * trainer.micro_per_epoch, initial=done, unit="batch",
                        disable=not (chief and sys.stdout.isatty()), dynamic_ncols=True)
        self.start, self.images, self.eval_metrics = time.perf_counter(), 0, None
        self.last = {"loss": float("nan"), "top1": float("nan")}
        self.failure: NoSpaceError | None = None  # rank 0's log found its disk full: the loop ends the run
        self._reset()

    def _reset(self) -> None:
        self.loss, self.hits, self.batches, self.window_start = 0.0, 0.0, 0, time.perf_counter()

    def batch(self, loss, hits, images: int) -> None:
        """Count one micro-batch (its loss and hits stay on the device until the next record)."""
        self.loss += loss
        self.hits += hits
        self.batches += 1
        self.images += images
        self.bar.update(1)

    def log_train(self, epoch: int, step: int) -> None:
        """The record of the batches since the last one: mean loss, top-1, learning rate, images/s."""
        t, elapsed = self.trainer.t, time.perf_counter() - self.window_start
        self.last = {"loss": float(self.loss) / self.batches,
                     "top1": float(self.hits) / (self.batches * t["batch_size"])}
        values = {**self.last, "stage": self.trainer.stage.index, "lr": float(self.trainer.schedule(step - 1)),
                  "img_per_sec": self.batches * t["batch_size"] * self.trainer.world.size / max(elapsed, 1e-9)}
        self._record((epoch, step), values)
        self._scalars("train", step, values)
        self._reset()

    def _record(self, step, values: dict) -> None:
        try:
            self.log.log(step, values)
        except NoSpaceError as exc:
            self.failure = self.failure or exc

    def log_eval(self, epoch: int, step: int, metrics: dict) -> None:
        """An evaluation's record; the next images/s leaves the evaluation out."""
        self.eval_metrics = metrics
        self._record((epoch,), {"stage": self.trainer.stage.index, **{f"eval_{k}": v for k, v in metrics.items()}})
        self._scalars("eval", step, {name: metrics[name] for name in ("loss", "top1", "top5")})
        self.window_start = time.perf_counter()

    def _scalars(self, group: str, step: int, values: dict) -> None:
        if self.writer:
            with self.writer.as_default(step=step):
                for name, value in values.items():
                    tf.summary.scalar(f"{group}/{name}", value)

    def close(self) -> None:
        self.bar.close()
        if self.writer:
            self.writer.flush()


def _evaluate(trainer: Trainer, eval_step, watchdog: Watchdog) -> dict:
    """Validation metrics of the EMA weights (raw without EMA), every example once across ranks."""
    batches = validation_batches(trainer.data_dir, trainer.config, trainer.world, trainer.image_size,
                                 trainer.config["model"]["crop_padding"], trainer.index_dir)
    if trainer.ema:
        trainer.ema.swap()
    try:
        return evaluate(eval_step, watchdog.beating(batches),
                        lambda x: trainer.hvd.allreduce(x, op=trainer.hvd.Sum)).metrics()
    finally:
        if trainer.ema:
            trainer.ema.swap()


def _write_outputs(trainer: Trainer, last: dict, eval_metrics: dict | None, rates: list, wall: float,
                   meta: dict | None) -> None:
    """The declared outputs, summary last: raw model, EMA model, train_summary.json."""
    out = trainer.output
    _save_model(trainer.model, out / layout.RAW_MODEL)
    if trainer.ema:
        trainer.ema.swap()
        _save_model(trainer.model, out / layout.EMA_MODEL)
        trainer.ema.swap()
    summary = {
        "arch": trainer.identity["arch"], "num_classes": trainer.num_classes, "image_size": trainer.image_size,
        "steps": trainer.completed_step(), "epochs": trainer.t["epochs"], "global_batch": trainer.global_batch,
        "world_size": trainer.world.size, "final_train_loss": last["loss"], "final_train_top1": last["top1"],
        "eval": eval_metrics, "img_per_sec": sum(rates), "img_per_sec_per_rank": rates,
        "wall_seconds": round(wall, 3), "precision": trainer.precision.policy,
        "resumed_from_step": meta["step"] if meta else None,
        "weights": {"raw": layout.RAW_MODEL, "ema": layout.EMA_MODEL if trainer.ema else None},
        "classes": trainer.classes, "crop_padding": trainer.config["model"]["crop_padding"],
        "init_from": trainer.t["init_from"], "init_sha256": trainer.init_sha256,
        "stages": [stage.record() for stage in trainer.stages],
    }
    write_json(out / layout.TRAIN_SUMMARY, summary)
    print(f"train: {out / layout.TRAIN_SUMMARY} ({summary['steps']} steps, "
          f"{'eval top-1 %.3f' % eval_metrics['top1'] if eval_metrics else 'no evaluation'})")

