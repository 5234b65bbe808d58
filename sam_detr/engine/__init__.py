from .hooks import GradientClipHook
