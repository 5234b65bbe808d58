#!/usr/bin/env python
"""A method's models side by side with the official code and HuggingFace transformers: the training step
and inference on the same image, the same machine and the same threads, with their peak memory.

    python tools/benchmark_vs_official.py --method deformable_detr --official /path/to/Deformable-DETR
    python tools/benchmark_vs_official.py --method deformable_detr --official /path/to/Deformable-DETR \\
        --rows two_stage --sizes 480x640 --iters 2 --no-hf
    python tools/benchmark_vs_official.py --method deformable_detr --official /path/to/Deformable-DETR \\
        --threads 1 --clock cpu     # CPU seconds: comparable while other work loads the machine
    python tools/benchmark_vs_official.py --method deformable_detr --official /path/to/Deformable-DETR \
        --tasks inference --onnx     # and our model exported to ONNX, run by ONNX Runtime

Each method is a table of rows (`METHODS`): this package's config, the official repository's command-line
flags for the same model, and HuggingFace's configuration of it (where transformers has the model). The
official code is imported at run time from `--official` (a clone of the official repository; nothing of it
is part of this package); where its compiled attention op has no CPU kernel, the op runs the repository's
own PyTorch path, as the official code does without its extension. HuggingFace's model gets random
weights (no download) and is skipped when transformers is not installed (or with `--no-hf`).

All models predict the official 91 COCO logits. The training step is forward, the official losses (the
auxiliary layers' and two-stage's included; Plain-DETR's engine's one-to-one plus one-to-many; DINO's
denoising groups', its training forward taking the targets), backward, gradient clipping at 0.1 and an
AdamW step; inference is a forward pass without gradients in eval mode. Each (implementation, row, size,
task) runs in a fresh process: after building the model and its input, `--warmup` untimed and `--iters`
timed steps; peak memory is how far the process's peak resident memory (Linux VmHWM) rose above its resident
memory before the warm-up (activations, gradients, optimizer state; not the weights).

To add a method: a `Method` entry with its rows, a function building the official model and criterion from
the repository and flags (`official_detr_family` serves the DETR-family repositories), and, if
transformers has the model, a function building it from a row's `hf` arguments.
"""
import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from sam_detr.utils.benchmark import time_calls
from sam_detr.utils.cli import image_size

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NUM_CLASSES = 91  # the official COCO heads
CLIP_MAX_NORM = 0.1
IMPLEMENTATIONS = ("ours", "official", "hf", "onnx")


@dataclass
class Row:
    config: str  # this package's LazyConfig, under configs/
    official_args: List[str]  # the official main.py's flags for the same model
    hf: Optional[Dict] = None  # the arguments of the method's HuggingFace builder; None: no such model


@dataclass
class Method:
    rows: Dict[str, Row]
    official: Callable[[str, Sequence[str]], tuple]  # (repository, flags) -> (model, criterion, nested_tensor_fn)
    hf: Optional[Callable[..., torch.nn.Module]] = None  # builds the HuggingFace model from a row's `hf`
    hf_label_key: str = "class_labels"
    official_forward_takes_targets: bool = False  # the official training forward is model(samples, targets)
    notes: List[str] = field(default_factory=list)  # printed above the tables


# ------------------------------------------------------------------------------- the official code
@contextmanager
def _official_imports(repository: str):
    """The repository's top-level packages (models, util, ...) importable, and what torch 2.x breaks in them
    worked around: their version test reads torchvision's version as a float ("0.29" -> 0.2), and
    `_LinearWithBias` is gone from torch; Plain-DETR's engine imports wandb (unused here)."""
    import torchvision

    for name in list(sys.modules):
        if name.split(".")[0] in {"models", "util", "datasets", "main", "engine"}:
            del sys.modules[name]
    sys.modules.setdefault("MultiScaleDeformableAttention", types.ModuleType("MultiScaleDeformableAttention"))
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))  # imported by Plain-DETR's engine, unused here
    linear = importlib.import_module("torch.nn.modules.linear")
    if not hasattr(linear, "_LinearWithBias"):  # torch 1.x's Linear subclass, imported by Conditional DETR
        linear._LinearWithBias = linear.NonDynamicallyQuantizableLinear
    sys.modules.setdefault("torch._overrides", torch.overrides)  # Conditional DETR's version test misreads 2.x
    version, cwd = torchvision.__version__, os.getcwd()
    torchvision.__version__ = "0.9.1"
    sys.path.insert(0, repository)
    os.chdir(repository)
    try:
        yield
    finally:
        torchvision.__version__ = version
        os.chdir(cwd)
        sys.path.remove(repository)


class _OfficialPyTorchPath:
    """The official MSDeformAttnFunction on the CPU: the repository's own `ms_deform_attn_core_pytorch`."""

    core = None

    @classmethod
    def apply(cls, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
        return cls.core(value, spatial_shapes, sampling_locations, attention_weights)


def _use_official_pytorch_path(package: str) -> None:
    """The repository's MSDeformAttn (under `package`, e.g. "models.ops") through its own PyTorch path; nothing
    where the repository has no deformable attention."""
    try:
        functions = importlib.import_module(f"{package}.functions.ms_deform_attn_func")
    except ImportError:
        return
    _OfficialPyTorchPath.core = staticmethod(functions.ms_deform_attn_core_pytorch)
    importlib.import_module(f"{package}.modules.ms_deform_attn").MSDeformAttnFunction = _OfficialPyTorchPath


def official_detr_family(repository: str, flags: Sequence[str]):
    """(model, criterion, nested_tensor_from_tensor_list) of a DETR-family repository, built by its own
    `build_model` from its main.py's flags, on the CPU, without downloading pretrained weights."""
    with _official_imports(repository):
        misc = importlib.import_module("util.misc")
        misc.is_main_process = lambda: False  # the backbone downloads ImageNet weights on the main process
        importlib.import_module("models.backbone").is_main_process = lambda: False
        main = importlib.import_module("main")
        args = main.get_args_parser().parse_args(list(flags) + ["--device", "cpu"])
        _use_official_pytorch_path("models.ops")
        if hasattr(args, "pretrained_backbone_path"):
            args.pretrained_backbone_path = None  # Plain-DETR's SwinV2 loads it otherwise
        model, criterion, _ = importlib.import_module("models").build_model(args)
        return model, criterion, misc.nested_tensor_from_tensor_list


class _PlainDETROfficialModel(torch.nn.Module):
    """The official Plain-DETR as its engine runs it: evaluation decodes the one-to-one queries only."""

    def __init__(self, detr):
        super().__init__()
        self.detr = detr
        self.num_queries_train = detr.num_queries  # one-to-one + one-to-many

    def forward(self, samples):
        detr = self.detr
        detr.num_queries = self.num_queries_train if self.training else detr.num_queries_one2one
        detr.transformer.two_stage_num_proposals = detr.num_queries
        return detr(samples)


class _PlainDETROfficialLosses:
    """The official engine's `train_hybrid`: the one-to-one losses and the one-to-many ones on every
    image's targets repeated `k_one2many` times."""

    def __init__(self, criterion, train_hybrid, args):
        self.criterion, self.train_hybrid, self.args = criterion, train_hybrid, args
        self.weight_dict = criterion.weight_dict

    def __call__(self, outputs, targets):
        a = self.args
        return self.train_hybrid(outputs, targets, a.k_one2many, self.criterion, a.lambda_one2many)


def official_plain_detr(repository: str, flags: Sequence[str]):
    """impiga/Plain-DETR's model (without its pretrained backbone) and hybrid losses, on the CPU."""
    model, criterion, nested = official_detr_family(repository, flags)
    with _official_imports(repository):
        main = importlib.import_module("main")
        args = main.get_args_parser().parse_args(list(flags) + ["--device", "cpu"])
        engine = importlib.import_module("engine")
    return _PlainDETROfficialModel(model), _PlainDETROfficialLosses(criterion, engine.train_hybrid, args), nested


def _dino_config(path: str) -> Dict:
    """An IDEA-Research/DINO config file's settings, its `_base_` files' first (what its SLConfig merges;
    read here without SLConfig, which needs addict and yapf)."""
    import runpy

    settings = runpy.run_path(path)
    merged = {}
    for base in settings.get("_base_", []):
        merged.update(_dino_config(os.path.join(os.path.dirname(path), base)))
    merged.update({k: v for k, v in settings.items() if not k.startswith("_") and not isinstance(v, types.ModuleType)})
    return merged


@contextmanager
def _cuda_calls_on_cpu():
    """DINO's denoising queries and criterion create tensors with `.cuda()` / `.to("cuda")`; on the CPU those
    calls leave them where they are."""
    cuda, to = torch.Tensor.cuda, torch.Tensor.to

    def cpu(where):
        is_cuda = isinstance(where, (str, torch.device)) and torch.device(where).type == "cuda"
        return "cpu" if is_cuda else where

    torch.Tensor.cuda = lambda t, *args, **kwargs: t
    torch.Tensor.to = lambda t, *args, **kwargs: to(t, *map(cpu, args), **{k: cpu(v) for k, v in kwargs.items()})
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.Tensor.to = cuda, to


class _DINOOfficialModel(torch.nn.Module):
    """The official DINO as its engine runs it: the targets go into the training forward (its denoising
    queries)."""

    def __init__(self, dino):
        super().__init__()
        self.dino = dino

    def forward(self, samples, targets=None):
        with _cuda_calls_on_cpu():
            return self.dino(samples, targets)


class _DINOOfficialLosses:
    """DINO's SetCriterion, whose denoising terms place their indices with `.cuda()`."""

    def __init__(self, criterion):
        self.criterion, self.weight_dict = criterion, criterion.weight_dict

    def __call__(self, outputs, targets):
        with _cuda_calls_on_cpu():
            return self.criterion(outputs, targets)


def official_dino(repository: str, flags: Sequence[str]):
    """IDEA-Research/DINO's model and SetCriterion (its denoising losses included), built by its registered
    builder from a config file (`flags`: [the file, relative to the repository]), on the CPU, without the
    pretrained backbone."""
    with _official_imports(repository):
        misc = importlib.import_module("util.misc")
        misc.is_main_process = lambda: False  # the backbone downloads ImageNet weights on the main process
        importlib.import_module("models.dino.backbone").is_main_process = lambda: False
        (config,) = flags
        settings = _dino_config(os.path.join(repository, config))
        args = argparse.Namespace(**settings, dataset_file="coco", device="cpu")
        _use_official_pytorch_path("models.dino.ops")
        build = importlib.import_module("models.registry").MODULE_BUILD_FUNCS.get(args.modelname)
        model, criterion, _ = build(args)
        return _DINOOfficialModel(model), _DINOOfficialLosses(criterion), misc.nested_tensor_from_tensor_list


# ------------------------------------------------------------------------------------- HuggingFace
def hf_deformable_detr(num_feature_levels=4, dilation=False, with_box_refine=False, two_stage=False):
    """transformers' DeformableDetrForObjectDetection with a torchvision-like ResNet-50 (timm's, frozen up to
    layer1 as the official one), random weights, the auxiliary losses on."""
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection, TimmBackboneConfig

    out_indices = (2, 3, 4) if num_feature_levels > 1 else (4,)
    backbone = TimmBackboneConfig(
        backbone="resnet50", out_indices=out_indices, output_stride=16 if dilation else 32,
        use_pretrained_backbone=False,
    )
    config = DeformableDetrConfig(
        backbone_config=backbone, num_labels=NUM_CLASSES, num_feature_levels=num_feature_levels,
        with_box_refine=with_box_refine, two_stage=two_stage, auxiliary_loss=True,
    )
    model = DeformableDetrForObjectDetection(config)
    for name, p in model.model.backbone.named_parameters():
        if not any(f"layer{i}" in name for i in (2, 3, 4)):
            p.requires_grad_(False)
    return model


def hf_conditional_detr(dilation=False):
    """transformers' ConditionalDetrForObjectDetection with timm's ResNet-50 (frozen up to layer1 as the official
    one), random weights, the auxiliary losses on, and the official model's dropouts: 0.1 also on the attention
    weights and after the FFN's activation (transformers' defaults leave those two out, which trains another
    model, and at DC5's 1200 tokens a much cheaper one: 4.62 s against 6.08 s per step at 480x640)."""
    from transformers import ConditionalDetrConfig, ConditionalDetrForObjectDetection, TimmBackboneConfig

    backbone = TimmBackboneConfig(
        backbone="resnet50", out_indices=(4,), output_stride=16 if dilation else 32, use_pretrained_backbone=False
    )
    config = ConditionalDetrConfig(
        backbone_config=backbone, num_labels=NUM_CLASSES, auxiliary_loss=True, dropout=0.1, attention_dropout=0.1,
        activation_dropout=0.1,
    )
    model = ConditionalDetrForObjectDetection(config)
    for name, p in model.model.backbone.named_parameters():
        if not any(f"layer{i}" in name for i in (2, 3, 4)):
            p.requires_grad_(False)
    return model


MS_DETR_FLAGS = ["--with_box_refine", "--two_stage", "--dim_feedforward", "2048", "--use_ms_detr", "--use_aux_ffn"]
# the official scripts' flags (impiga/Plain-DETR configs/swinv2_small_sup_pt_*.sh) without the pretrained weights
PLAIN_DETR_FLAGS = [
    "--with_box_refine", "--two_stage", "--mixed_selection", "--look_forward_twice", "--num_queries_one2one", "300",
    "--num_queries_one2many", "1500", "--k_one2many", "6", "--lambda_one2many", "1.0", "--dropout", "0.0",
    "--norm_type", "pre_norm", "--drop_path_rate", "0.1", "--upsample_backbone_output", "--upsample_stride", "16",
    "--num_feature_levels", "1", "--proposal_feature_levels", "4", "--proposal_in_stride", "16",
    "--backbone", "swin_v2_small_window16_2global",
]

METHODS = {
    "detr": Method(
        rows={"r50": Row("detr_r50_500ep.py", [])},  # HuggingFace's DETR is not wired here
        official=official_detr_family,
    ),
    "sam_detr": Method(
        rows={"r50": Row("sam_detr_r50_12ep.py", [])},  # the official defaults: SAM-DETR-R50, 300 queries; no HF model
        official=official_detr_family,
    ),
    "deformable_detr": Method(
        rows={
            "single_scale": Row("deformable_detr_r50_single_scale_50ep.py", ["--num_feature_levels", "1"],
                                {"num_feature_levels": 1}),
            "single_scale_dc5": Row("deformable_detr_r50_single_scale_dc5_50ep.py",
                                    ["--num_feature_levels", "1", "--dilation"],
                                    {"num_feature_levels": 1, "dilation": True}),
            "multi_scale": Row("deformable_detr_r50_50ep.py", [], {}),
            "refine": Row("deformable_detr_r50_refine_50ep.py", ["--with_box_refine"], {"with_box_refine": True}),
            "two_stage": Row("deformable_detr_r50_two_stage_50ep.py", ["--with_box_refine", "--two_stage"],
                             {"with_box_refine": True, "two_stage": True}),
        },
        official=official_detr_family,
        hf=hf_deformable_detr,
    ),
    "conditional_detr": Method(
        rows={
            "r50": Row("conditional_detr_r50_50ep.py", [], {}),
            "dc5_r50": Row("conditional_detr_r50_dc5_50ep.py", ["--dilation"], {"dilation": True}),
        },
        official=official_detr_family,
        hf=hf_conditional_detr,
    ),
    "ms_detr": Method(
        rows={  # the official scripts' flags (Atten4Vis/MS-DETR scripts/train_ms_detr_*.sh); no HF model
            "ms_detr_300": Row("ms_detr_r50_12ep.py", MS_DETR_FLAGS + ["--num_queries", "300", "--topk_eval", "100"]),
            "ms_detr_pp_300": Row(
                "ms_detr_pp_r50_12ep.py",
                MS_DETR_FLAGS + ["--num_queries", "300", "--topk_eval", "100", "--dropout", "0.0", "--mixed_selection",
                                 "--look_forward_twice"],
            ),
        },
        official=official_detr_family,
    ),
    "plain_detr": Method(
        rows={  # no HF model
            "ape": Row("plain_detr_swinv2_small_sup_pt_ape.py", PLAIN_DETR_FLAGS + ["--decoder_type", "global_ape"]),
            "boxrpe": Row(
                "plain_detr_swinv2_small_sup_pt_boxrpe.py",
                PLAIN_DETR_FLAGS + ["--decoder_type", "global_rpe_decomp", "--decoder_rpe_type", "linear"],
            ),
        },
        official=official_plain_detr,
    ),
    "dino": Method(
        rows={  # the official configs (IDEA-Research/DINO config/DINO)
            "4scale": Row("dino_r50_4scale_12ep.py", ["config/DINO/DINO_4scale.py"]),
            "5scale": Row("dino_r50_5scale_12ep.py", ["config/DINO/DINO_5scale.py"]),
        },
        official=official_dino,
        official_forward_takes_targets=True,
        notes=["HF: transformers (5.23.0) has no DINO detector: its dinov2 / dinov3 are self-supervised ViT "
               "backbones, grounding_dino and mm_grounding_dino open-vocabulary detectors with a text encoder"],
    ),
}


# -------------------------------------------------------------------------------------- the input
def sample(height: int, width: int):
    """A fixed uint8 RGB image and three boxes (xyxy pixels) with their COCO category ids."""
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[0.10, 0.20, 0.45, 0.70], [0.50, 0.10, 0.90, 0.50], [0.30, 0.55, 0.80, 0.95]])
    boxes = boxes * torch.tensor([width, height, width, height])
    return image, boxes, torch.tensor([1, 18, 62])


def normalised(image):
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    return (image.float() - mean) / std


def cxcywh(boxes, height, width):
    b = boxes / torch.tensor([width, height, width, height])
    return torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], -1)


# ---------------------------------------------------------------------- one step of each implementation
def _train_step(model, loss_fn):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)

    def step():
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_MAX_NORM)
        optimizer.step()

    return step


def steps_ours(row: Row, height: int, width: int, task: str):
    from detectron2.config import LazyConfig, instantiate
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs", row.config))
    cfg.model.criterion.num_classes = NUM_CLASSES
    model = instantiate(cfg.model)
    image, boxes, labels = sample(height, width)
    inputs = [{"image": image, "instances": Instances((height, width), gt_boxes=Boxes(boxes), gt_classes=labels)}]
    if task == "inference":
        model.eval()
        return lambda: model(inputs)
    model.train()
    storage = EventStorage()
    storage.__enter__()  # the criterion logs its metrics there, as under the trainer
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)

    def step():
        loss = sum(model(inputs).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_MAX_NORM)
        optimizer.step()

    return step


def steps_onnx(row: Row, height: int, width: int, threads: int, directory: str):
    """Our model exported to ONNX (`sam_detr.export`, random weights), run by ONNX Runtime on the CPU with
    `threads` intra-op threads: the padded batch of one image in, the final detections out."""
    from detectron2.config import LazyConfig, instantiate

    from sam_detr.export import OnnxDetector, export_onnx

    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs", row.config))
    cfg.model.criterion.num_classes = NUM_CLASSES
    path = export_onnx(instantiate(cfg.model).eval(), os.path.join(directory, "model.onnx"))
    detector = OnnxDetector(path, num_threads=threads)
    image, _, _ = sample(height, width)
    images, sizes = image[None].numpy(), np.array([[height, width]])
    return lambda: detector.run(images, sizes)


def steps_official(method: Method, repository: str, row: Row, height: int, width: int, task: str):
    model, criterion, nested = method.official(repository, row.official_args)
    image, boxes, labels = sample(height, width)
    samples = nested([normalised(image)])
    targets = [{"labels": labels, "boxes": cxcywh(boxes, height, width)}]
    if task == "inference":
        model.eval()
        return lambda: model(samples)
    model.train()
    weights = criterion.weight_dict

    def loss():
        outputs = model(samples, targets) if method.official_forward_takes_targets else model(samples)
        losses = criterion(outputs, targets)
        return sum(losses[k] * weights[k] for k in losses if k in weights)

    return _train_step(model, loss)


def steps_hf(method: Method, row: Row, height: int, width: int, task: str):
    model = method.hf(**row.hf)
    image, boxes, labels = sample(height, width)
    pixels = normalised(image)[None]
    mask = torch.ones((1, height, width), dtype=torch.long)
    if task == "inference":
        model.eval()
        return lambda: model(pixel_values=pixels, pixel_mask=mask)
    model.train()
    targets = [{method.hf_label_key: labels, "boxes": cxcywh(boxes, height, width)}]
    return _train_step(model, lambda: model(pixel_values=pixels, pixel_mask=mask, labels=targets).loss)


def measure(args) -> Dict:
    """One (implementation, row, size, task) in this process: seconds per step and peak memory."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    method = METHODS[args.method]
    row = method.rows[args.row]
    height, width = args.size
    directory = tempfile.TemporaryDirectory()
    if args.impl == "ours":
        step = steps_ours(row, height, width, args.task)
    elif args.impl == "onnx":
        step = steps_onnx(row, height, width, args.threads, directory.name)
    elif args.impl == "official":
        step = steps_official(method, args.official, row, height, width, args.task)
    else:
        step = steps_hf(method, row, height, width, args.task)
    grad = torch.enable_grad() if args.task == "train" else torch.no_grad()
    with grad:
        timing = time_calls(step, args.iters, args.warmup, "cpu")
    directory.cleanup()
    return {"seconds": timing.seconds("wall"), "cpu_seconds": timing.seconds("cpu"), "peak_mib": timing.memory.rise_mib}


# ------------------------------------------------------------------------------------------- driver
def run_child(args, impl: str, row: str, size, task: str) -> Optional[Dict]:
    command = [
        sys.executable, os.path.abspath(__file__), "--method", args.method, "--official", args.official or "",
        "--threads", str(args.threads), "--iters", str(args.iters), "--warmup", str(args.warmup),
        "--_measure", impl, row, f"{size[0]}x{size[1]}", task,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        print(f"  {impl} {row} {size[0]}x{size[1]} {task}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument("--official", help="clone of the official repository (omit to leave the official code out)")
    parser.add_argument("--rows", nargs="+", help="rows of the method (default: all)")
    parser.add_argument("--sizes", nargs="+", type=image_size, default=[(480, 640), (800, 1333)], metavar="HxW")
    parser.add_argument("--tasks", nargs="+", choices=["train", "inference"], default=["train", "inference"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every implementation")
    parser.add_argument("--iters", type=int, default=3, help="timed steps of each measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall",
        help="wall: elapsed seconds per step; cpu: the process's CPU seconds per step (all its threads), which "
        "other load on the machine changes far less",
    )
    parser.add_argument("--no-hf", action="store_true", help="leave HuggingFace transformers' model out")
    parser.add_argument("--onnx", action="store_true", help="add our model exported to ONNX, run by ONNX Runtime "
                        "(inference; needs the deploy extra; the export before the timing takes a while)")
    parser.add_argument("--_measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._measure:
        args.impl, args.row, size, args.task = args._measure
        args.size = image_size(size)
        print(json.dumps(measure(args)))
        return
    method = METHODS[args.method]
    rows = args.rows or list(method.rows)
    unknown = [r for r in rows if r not in method.rows]
    if unknown:
        parser.error(f"unknown rows {unknown} of {args.method}; its rows: {list(method.rows)}")
    if args.official and not os.path.isdir(args.official):
        parser.error(f"--official {args.official} is not a directory")
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be positive and --warmup not negative")
    impls = ["ours"] + (["official"] if args.official else [])
    if not args.no_hf and method.hf is not None:
        if importlib.util.find_spec("transformers") is None:
            print("transformers is not installed: HuggingFace's model is left out", file=sys.stderr)
        else:
            impls.append("hf")

    if args.onnx:
        try:
            from sam_detr.export import require_deploy_extra

            require_deploy_extra("onnx", "onnxscript", "onnxruntime")
        except ImportError as e:
            parser.error(f"--onnx: {e}")
        impls.append("onnx")

    print(f"{args.method} on the CPU, {args.threads} threads, batch 1, {args.warmup} warm-up + {args.iters} timed "
          f"step(s) in a fresh process each; {args.clock} seconds per step, peak memory: rise of the peak RSS (MiB)")
    for note in method.notes:
        print(note)
    for size in args.sizes:
        table = []
        for row in rows:
            for task in args.tasks:
                result = {impl: run_child(args, impl, row, size, task) for impl in impls
                          if impl != "onnx" or task == "inference"}
                if method.rows[row].hf is None:
                    result["hf"] = None
                key = "seconds" if args.clock == "wall" else "cpu_seconds"
                seconds = {i: r[key] for i, r in result.items() if r is not None}
                peers = [seconds[i] for i in ("official", "hf") if i in seconds]
                speedup = min(peers) / seconds["ours"] if peers and "ours" in seconds else None
                onnx = [seconds[i] / seconds["onnx"] if "onnx" in seconds and i in seconds else None
                        for i in ("ours", "official")]
                table.append([row, task] + [fmt(seconds.get(i), ".2f") for i in IMPLEMENTATIONS]
                             + [fmt(v, ".1f") for v in [speedup, *onnx]]
                             + [fmt((result.get(i) or {}).get("peak_mib"), ".0f") for i in IMPLEMENTATIONS])
                print(f"  done: {size[0]}x{size[1]} {row} {task}", file=sys.stderr, flush=True)
        print(f"\n{size[0]}x{size[1]}")
        print("| row | task | ours (s) | official (s) | HF (s) | ONNX Runtime (s) | speed-up vs the faster peer "
              "| ONNX Runtime vs ours | ONNX Runtime vs official | peak ours | peak official | peak HF | peak ONNX "
              "Runtime |")
        print("|---" * 13 + "|")
        for line in table:
            print("| " + " | ".join(line) + " |")


if __name__ == "__main__":
    main()
