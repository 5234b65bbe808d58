from .resnet import build_resnet_backbone
from .swin import SwinTransformer
from .swin_v2 import SwinTransformerV2, build_swinv2_backbone
from .upsample import UpsampleBackbone
