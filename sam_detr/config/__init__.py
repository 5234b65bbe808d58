from .defaults import add_detr_config, add_sam_detr_config
