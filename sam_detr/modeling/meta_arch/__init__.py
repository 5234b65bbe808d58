from .detr import DETR
from .detr_base import DETRBase
