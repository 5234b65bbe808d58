"""Training and evaluation with LazyConfig files, in Detectron2's flow (see tools/lazyconfig_train_net.py).

Every knob lives under `cfg.train`:
    output_dir, init_checkpoint, device, seed
    init_checkpoint_partial None, or {"missing": [regex], "unexpected": [regex]}: the keys that init_checkpoint
                            may leave unfilled or hold unused (see engine/checkpointer.py); any other mismatch
                            fails the load. --eval-only and --resume load strictly
    reference_world_size    0, or the number of workers (GPUs) the config's batch and learning rate are for: run
                            on another number, the batch, the learning rate and the iteration counts are scaled
                            (auto_scale_workers, Detectron2's DefaultTrainer.auto_scale_workers for LazyConfigs)
    reinit_classes          init_checkpoint may have other classes than the train dataset: its class-dependent
                            weights are re-initialised, keeping the rows of the classes found by name
                            (engine/class_init.py). False: a checkpoint of another class count is refused
    epochs | max_iter       epochs become iterations: epochs * (dataloader.train_images // total_batch_size);
                            max_iter, when set, wins
    amp.enabled, amp.precision ("float16" | "bfloat16")
    clip_grad.enabled, clip_grad.max_norm, clip_grad.norm_type
    ddp.*                   DistributedDataParallel options
    checkpointer.period, checkpointer.max_to_keep, eval_period, log_period

What a checkpoint holds beyond d2's weights, optimizer and iteration (the data stream's position and every
process's random states, `TrainingStateHook`) makes `--resume` continue exactly as the uninterrupted run;
training stops at the first non-finite loss term (engine/trainers.py).
"""
import logging
from typing import Optional

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import default_setup, default_writers, hooks, launch
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from omegaconf import OmegaConf

from ..data.datasets import dataset_classes
from ..solver import iterations_per_epoch
from ..utils.precision import half_dtype
from ..utils.rng import preserved_rng
from .checkpointer import StrictCheckpointer, checkpoint_metadata
from .class_init import ClassInit, class_dimensions
from .hooks import GradientClipHook, TrainingStateHook
from .trainers import AMPTrainer, NonFiniteLossError, SimpleTrainer

__all__ = [
    "main", "do_train", "do_test", "resolve_max_iter", "build_ddp_model", "build_trainer", "train_dataset_classes",
    "auto_scale_workers",
]

logger = logging.getLogger("detectron2")


def resolve_max_iter(cfg) -> int:
    """Sets and returns cfg.train.max_iter: as given, or else from cfg.train.epochs."""
    max_iter, epochs = cfg.train.get("max_iter", None), cfg.train.get("epochs", None)
    if max_iter is not None:
        if epochs is not None:
            logger.info(f"train.max_iter = {max_iter} is set: it overrides train.epochs = {epochs}")
        return max_iter
    if epochs is None:
        raise ValueError("set train.epochs or train.max_iter")
    num_images = cfg.dataloader.get("train_images", None)
    if num_images is None:
        raise ValueError("train.epochs needs dataloader.train_images (the number of images in one epoch)")
    per_epoch = iterations_per_epoch(num_images, cfg.dataloader.train.total_batch_size)
    cfg.train.max_iter = int(round(epochs * per_epoch))
    logger.info(f"{epochs} epochs of {per_epoch} iterations: train.max_iter = {cfg.train.max_iter}")
    return cfg.train.max_iter


def auto_scale_workers(cfg, world_size: int) -> Optional[str]:
    """Detectron2's `DefaultTrainer.auto_scale_workers` for LazyConfigs: when cfg.train.reference_world_size is
    set and is not `world_size`, scales by world_size / reference_world_size the total batch size and the
    learning rate (the linear scaling rule), and by its inverse the iteration counts (train.max_iter where set,
    train.eval_period, train.checkpointer.period); schedules in epochs (train.epochs, milestones in epochs) follow
    the batch by themselves. reference_world_size becomes `world_size`, so that the scaled config (saved in
    train.output_dir) is not scaled again. Returns what was done, to be logged, or None."""
    reference = cfg.train.get("reference_world_size", 0) or 0
    if reference <= 0 or reference == world_size:
        return None
    scale = world_size / reference
    batch = cfg.dataloader.train.total_batch_size
    if abs(batch * scale - round(batch * scale)) > 1e-9 or round(batch * scale) < 1:
        raise ValueError(f"train.reference_world_size={reference}: the total batch {batch} cannot be scaled to "
                         f"{world_size} worker(s) ({batch * scale:g} images)")
    cfg.dataloader.train.total_batch_size = int(round(batch * scale))
    lr = cfg.optimizer.lr
    cfg.optimizer.lr = lr * scale
    done = [f"total batch {batch} -> {cfg.dataloader.train.total_batch_size}", f"lr {lr:g} -> {cfg.optimizer.lr:g}"]
    counts = [("train", "max_iter"), ("train", "eval_period"), ("train.checkpointer", "period")]
    for path, key in counts:
        node = OmegaConf.select(cfg, path)
        if node.get(key) is not None:
            old = node[key]
            node[key] = int(round(old / scale))
            done.append(f"{path}.{key} {old} -> {node[key]}")
    cfg.train.reference_world_size = world_size
    return f"auto_scale_workers: {reference} -> {world_size} worker(s): " + ", ".join(done)


def build_ddp_model(cfg, model: torch.nn.Module) -> torch.nn.Module:
    """DDP when there are several workers; on CPU, DDP takes no device ids."""
    kwargs = dict(cfg.train.get("ddp", {}))
    if torch.device(cfg.train.device).type != "cuda":
        kwargs["device_ids"] = None
    return create_ddp_model(model, **kwargs)


def build_trainer(cfg, model: torch.nn.Module, data_loader, optimizer) -> SimpleTrainer:
    """The training step of cfg.train (AMP, gradient clipping, a stop at the first non-finite loss), with no
    other hook: shared by `do_train` and tools/benchmark.py, so that the benchmark times the step that
    training runs."""
    if cfg.train.amp.enabled:
        precision = half_dtype(cfg.train.amp.get("precision", "float16"))
        trainer = AMPTrainer(model, data_loader, optimizer, precision=precision)
    else:
        trainer = SimpleTrainer(model, data_loader, optimizer)
    clip = cfg.train.get("clip_grad", {})
    if clip.get("enabled", False):
        trainer.register_hooks([GradientClipHook(clip.max_norm, clip.get("norm_type", 2.0))])
    return trainer


def do_test(cfg, model) -> Optional[dict]:
    if "evaluator" not in cfg.dataloader or cfg.dataloader.evaluator is None:
        return None
    # an evaluation in the middle of training must not change what the training draws next
    with preserved_rng():
        ret = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    print_csv_format(ret)
    return ret


def train_dataset_classes(cfg, model: torch.nn.Module):
    """The class names of the train dataset (cfg.dataloader.train.dataset), checked against the model's class
    count (a model without `num_classes` is not checked)."""
    node = cfg.dataloader.train.dataset
    classes = dataset_classes(node.names, node.get("json_file"), node.get("image_root"))
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and num_classes != len(classes):
        raise ValueError(
            f"the model predicts {num_classes} classes, but the train dataset {node.names!r} has {len(classes)} "
            f"categories ({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}): the configs take the "
            "class count from the train dataset (sam_detr.config.train_dataset_num_classes); remove the override of "
            "the model's num_classes"
        )
    return classes


def do_train(args, cfg) -> None:
    max_iter = resolve_max_iter(cfg)
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    classes = train_dataset_classes(cfg, model)
    class_init = None
    if cfg.train.init_checkpoint and hasattr(model, "num_classes"):
        class_init = ClassInit(class_dimensions(cfg.model, model), classes, str(cfg.dataloader.train.dataset.names),
                               reinit=cfg.train.get("reinit_classes", False),
                               agnostic=getattr(model, "class_agnostic_rows", dict)())
    metadata = checkpoint_metadata(model, getattr(args, "config_file", None), classes)
    model.to(cfg.train.device)

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = build_ddp_model(cfg, model)
    trainer = build_trainer(cfg, model, train_loader, optimizer)
    checkpointer = StrictCheckpointer(model, cfg.train.output_dir, metadata=metadata, trainer=trainer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            # before the checkpointer, so that the checkpoint holds the states after the iteration
            TrainingStateHook(cfg.train.checkpointer.period, max_iter),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, max_iter), period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )
    resume = args.resume and checkpointer.has_checkpoint()
    if resume:
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=True)
    else:
        checkpointer.load_partial(
            cfg.train.init_checkpoint, cfg.train.get("init_checkpoint_partial", None), class_init=class_init
        )
    # the checkpoint stores the iteration that just finished
    start_iter = trainer.iter + 1 if resume else 0
    try:
        trainer.train(start_iter, max_iter)
    except NonFiniteLossError as e:
        last = checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else None
        raise NonFiniteLossError(f"{e} [last checkpoint: {last or 'none yet'}]") from None


def main(args):
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    scaled = None if args.eval_only else auto_scale_workers(cfg, comm.get_world_size())
    default_setup(cfg, args)
    # the package's own messages (dataset checks, data stream, checkpoints) into the same log
    setup_logger(cfg.train.output_dir, comm.get_rank(), name="sam_detr")
    if scaled:
        logger.info(scaled)
    if args.eval_only:
        if not cfg.train.init_checkpoint:
            raise ValueError("--eval-only needs the weights to evaluate: train.init_checkpoint=<checkpoint>")
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = build_ddp_model(cfg, model)
        StrictCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(args, cfg)
    return None


def launch_main(args) -> None:
    """Runs `main(args)` in args.num_gpus processes on each of args.num_machines machines (d2's `launch`):
    what tools/lazyconfig_train_net.py and each Slurm task do with the parsed arguments."""
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
