# Plain-DETR on Detectron2's ResNet-50 (torchvision ImageNet weights) at stride 16 (res4, 1024 channels),
# with BoxRPB, 12 epochs; not a published row. The optimisation of the SwinV2 rows, the backbone at 0.1 x lr
# as the official `--lr_backbone` (its stem and res2 frozen, FrozenBN, as the DETR-family ResNets).
from sam_detr.engine import checkpointer
from sam_detr.modeling import build_resnet_backbone

from detectron2.config import LazyCall as L

from .plain_detr_swinv2_small_sup_pt_boxrpe import dataloader, lr_multiplier, model, optimizer, train

model.backbone = L(build_resnet_backbone)(depth=50, out_features=["res4"], freeze_at=2, norm="FrozenBN", dc5=False)
model.in_features = ["res4"]
optimizer.params.lr_factor_func.factors = {"backbone.": 0.1}
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.init_checkpoint_partial = checkpointer.IMAGENET_BACKBONE
train.output_dir = "./output/plain_detr_r50_12ep"
