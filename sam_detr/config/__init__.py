from .defaults import (
    add_conditional_detr_config, add_deformable_detr_config, add_detr_config, add_plain_detr_config, add_sam_detr_config,
)
from .dataset_classes import train_dataset_num_classes
