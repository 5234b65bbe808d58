# SAM-DETR-R50-MS as ZhangGongjie/SAM-DETR (--multiscale): C3-C5 (strides 8/16/32), each projected with
# GroupNorm; a deformable encoder (3 levels, 4 points, FFN 1024); decoder layers 0-1, 2-3, 4-5 attend to
# the stride-32, 16 and 8 levels.
from detectron2.config import LazyCall as L

from sam_detr.modeling.transformer import (
    DeformableTransformerEncoder,
    DeformableTransformerEncoderLayer,
    SAMDETRMultiScaleTransformer,
)

from .sam_detr_r50 import model

model.backbone.out_features = ["res3", "res4", "res5"]
model.in_features = ["res3", "res4", "res5"]
model.transformer = L(SAMDETRMultiScaleTransformer)(
    encoder=L(DeformableTransformerEncoder)(
        layer=L(DeformableTransformerEncoderLayer)(
            d_model=256, nhead=8, dim_feedforward=1024, dropout=0.1, n_levels=3, n_points=4
        ),
        num_layers=6,
    ),
    decoder=model.transformer.decoder,
)
model.transformer.decoder.layer_levels = [2, 2, 1, 1, 0, 0]
