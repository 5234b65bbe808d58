from .lazy_model import CONFIGS_DIR, add_detr_config, lazy_model_arguments
