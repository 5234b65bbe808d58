#!/usr/bin/env python
"""Converts torchvision ImageNet ResNet weights into a checkpoint that initialises our backbones.

    python tools/convert_torchvision_resnet.py --source resnet50-0676ba61.pth --output r50_torchvision.pth
    ... train.init_checkpoint=r50_torchvision.pth

The keys become `backbone.<d2 name>` (`stem.conv1`, `res2.0.conv1.norm`, ...), so that d2's
DetectionCheckpointer loads them into any model here whose backbone is `build_resnet_backbone`.
"""
import argparse

import torch

from sam_detr.checkpoint.resnet import convert_torchvision_resnet


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="torchvision state_dict (.pth)")
    parser.add_argument("--output", required=True, help="where to write the converted checkpoint (.pth)")
    parser.add_argument("--prefix", default="backbone.", help="prefix of the backbone in the model")
    args = parser.parse_args()
    state = torch.load(args.source, map_location="cpu", weights_only=True)
    state = state.get("model", state.get("state_dict", state))
    converted = {args.prefix + k: v for k, v in convert_torchvision_resnet(state).items()}
    torch.save({"model": converted, "__author__": "torchvision", "matching_heuristics": False}, args.output)
    print(f"wrote {len(converted)} tensors to {args.output}")


if __name__ == "__main__":
    main()
