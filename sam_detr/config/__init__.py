from .defaults import add_detr_config
