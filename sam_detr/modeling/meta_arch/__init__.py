from .conditional_detr import ConditionalDETR
from .deformable_detr import DeformableDETR
from .detr import DETR
from .detr_base import DETRBase
from .ms_detr import MSDETR
from .sam_detr import SAMDETR
from .plain_detr import PlainDETR
