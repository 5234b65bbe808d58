from .checkpointer import IMAGENET_BACKBONE, CheckpointError, StrictCheckpointer
from .hooks import GradientClipHook, TrainingStateHook
from .trainers import NonFiniteLossError
