from .defaults import add_deformable_detr_config, add_detr_config, add_sam_detr_config
