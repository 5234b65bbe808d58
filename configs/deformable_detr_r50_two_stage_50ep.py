# Deformable DETR-R50 ++ two-stage (with iterative box refinement), 50 epochs
# (fundamentalvision/Deformable-DETR: 46.9 AP).
from detectron2.config import LazyCall as L

from sam_detr.modeling.transformer import TwoStageProposals

from .deformable_detr_r50_refine_50ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.proposals = L(TwoStageProposals)(d_model=256)
train.output_dir = "./output/deformable_detr_r50_two_stage_50ep"
