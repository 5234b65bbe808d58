# SAM-DETR with DINO's contrastive denoising on the main job: configs/quickstart/sam_detr.py plus the denoising
# switch (sam_detr.config.denoising.add_denoising), as DINO's quickstart has it (label flips 0.5, box noise 1.0,
# dn_number 10: 20 groups of noised copies of every target, besides the 10 matching queries, which never see
# them). The noised boxes enter as SAM-DETR's reference-box logits, the noised labels as its content queries.
#   python tools/lazyconfig_train_net.py --config-file configs/quickstart/sam_detr_dn.py
from sam_detr.config.denoising import add_denoising

from .detr import model as detr
from .sam_detr import dataloader, lr_multiplier, model, optimizer, train

add_denoising(model, d_model=detr.transformer.d_model, dn_number=10)

train.output_dir = "./output/quickstart_sam_detr_dn"
