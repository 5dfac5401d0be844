"""Checkpoints: one file with everything needed to generate, safe to load.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` can read it: loading never runs code from the file.
It holds the weights, the model config, the codec (with its fitted bin edges), the training
config and history, free-form parameters, the seed, hashes of the training data and the
library versions. It is written atomically.
"""
from __future__ import annotations

import io
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .codec import EventCodec
from .files import write_bytes_atomic
from .model import ModelConfig, NoteLSTM

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model: NoteLSTM
    codec: EventCodec
    train_config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    best_epoch: int = -1
    params: dict = field(default_factory=dict)  # whatever the caller wants kept (run knobs)
    data_hashes: list = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    optimizer_state: dict | None = None  # to resume training

    def save(self, path) -> Path:
        payload = {
            "format_version": FORMAT_VERSION,
            "model_config": self.model.config.to_dict(),
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "codec": self.codec.to_dict(),
            "train_config": self.train_config,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "params": self.params,
            "data_hashes": list(self.data_hashes),
            "versions": self.versions or library_versions(),
            "optimizer_state": self.optimizer_state,
        }
        buffer = io.BytesIO()
        torch.save(_plain(payload), buffer)
        return write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load with ``weights_only=True``; the model comes back in eval mode."""
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown checkpoint format {payload.get('format_version')!r}")
    model = NoteLSTM(ModelConfig(**payload["model_config"])).to(device)
    model.load_state_dict(payload["model_state"])
    model.eval()
    return Checkpoint(model=model, codec=EventCodec.from_dict(payload["codec"]),
                      train_config=payload["train_config"], history=payload["history"],
                      best_epoch=payload["best_epoch"], params=payload["params"],
                      data_hashes=payload["data_hashes"], versions=payload["versions"],
                      optimizer_state=payload["optimizer_state"])


def library_versions() -> dict:
    """Versions that decide whether a run can be reproduced bit for bit."""
    from importlib.metadata import version

    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "numpy": version("numpy"), "mido": version("mido"), "platform": platform.platform()}


def _plain(obj):
    """Numpy scalars and arrays become Python numbers and lists (weights_only cannot load them)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if hasattr(obj, "tolist") and not torch.is_tensor(obj):
        return obj.tolist()
    return obj
