"""What the command-line tools under tools/ share: a bad path or option ends the tool with one line on stderr
(`tool.py: error: <what is wrong>`, exit status 2), not a traceback. SAM_DETR_TRACEBACK=1 shows the traceback.
"""
import contextlib
import os
from argparse import ArgumentParser
from typing import Optional, Sequence, Tuple, Type

from detectron2.config import LazyConfig

__all__ = ["INPUT_ERRORS", "one_line_errors", "load_config"]

# what bad input raises here: a missing or unreadable file (OSError, CheckpointError and BadImageError are
# ValueErrors), a value that cannot be right (ValueError), an unknown key (KeyError)
INPUT_ERRORS: Tuple[Type[BaseException], ...] = (OSError, ValueError, KeyError)


@contextlib.contextmanager
def one_line_errors(parser: ArgumentParser, also: Sequence[Type[BaseException]] = ()):
    """Turns the INPUT_ERRORS (and `also`) raised in the block into `parser`'s one-line error."""
    try:
        yield
    except (*INPUT_ERRORS, *also) as e:
        if os.environ.get("SAM_DETR_TRACEBACK"):
            raise
        # a KeyError's str() is the repr of its message
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        lines = message.strip().splitlines() or [type(e).__name__]
        more = " [the rest with SAM_DETR_TRACEBACK=1]" if len(lines) > 1 else ""
        parser.exit(2, f"{parser.prog}: error: {lines[0]}{more}\n")


def load_config(
    parser: ArgumentParser, config_file: str, overrides: Sequence[str] = (), checkpoint: Optional[str] = None
):
    """The LazyConfig of `config_file` with the `key=value` overrides and, if given, `checkpoint` as its
    train.init_checkpoint; or the parser's error naming the missing file or the override that cannot be
    applied."""
    if not os.path.isfile(config_file):
        parser.error(f"--config-file {config_file}: no such file")
    if checkpoint is not None and not os.path.isfile(checkpoint):
        parser.error(f"--checkpoint {checkpoint}: no such file")
    cfg = LazyConfig.load(config_file)
    for override in overrides:
        if "=" not in override:
            parser.error(f"override {override!r} is not key=value")
        try:
            cfg = LazyConfig.apply_overrides(cfg, [override])
        except INPUT_ERRORS as e:
            parser.error(f"override {override!r}: {e}")
    if checkpoint is not None:
        cfg.train.init_checkpoint = checkpoint
    return cfg
