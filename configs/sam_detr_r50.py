# SAM-DETR-R50: the 12-epoch model (see sam_detr_r50_12ep.py).
from .sam_detr_r50_12ep import dataloader, lr_multiplier, model, optimizer, train
