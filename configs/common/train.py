# Training options read by tools/lazyconfig_train_net.py (sam_detr.engine.train_net).
import torch

train = dict(
    output_dir="./output",
    init_checkpoint="",
    # None: init_checkpoint must fit the model exactly. For a partial initialisation, the keys it may leave
    # unfilled or hold unused: {"missing": [regex, ...], "unexpected": [regex, ...]} (sam_detr.engine.checkpointer)
    init_checkpoint_partial=None,
    # True: init_checkpoint may have other classes than the train dataset (fine-tuning on your own data): its
    # class-dependent weights are re-initialised for the dataset's classes, the rows of the classes it also has
    # (by name) kept (sam_detr.engine.class_init). False: a checkpoint of another class count is refused
    reinit_classes=False,
    # 0, or the number of workers (GPUs) that dataloader.train.total_batch_size and optimizer.lr are for: trained
    # on another number, both are scaled to it and the iteration counts inversely (Detectron2's
    # DefaultTrainer.auto_scale_workers; sam_detr.engine.train_net.auto_scale_workers)
    reference_world_size=0,
    # epochs become iterations: epochs * (dataloader.train_images // dataloader.train.total_batch_size);
    # max_iter, when set, counts iterations directly and wins over epochs
    epochs=None,
    max_iter=None,
    amp=dict(enabled=False, precision="float16"),
    # the official models clip the gradient norm of all parameters at 0.1
    clip_grad=dict(enabled=True, max_norm=0.1, norm_type=2.0),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=5000,
    log_period=20,
    device="cuda" if torch.cuda.is_available() else "cpu",
    seed=-1,
)
