"""A TalkModel's streaming steps in PyTorch, and the two step modules ONNX export also uses.

A stream's work is split where its cost is: the encoder runs once per call on every audio
feature that arrived (a second of audio at once when animating a file), the decoder once
per output frame (it feeds its own output back). Both are modules with every piece of
state a named input and output:

  EncodeStep  source, <encoder state...>  →  new_kv, <next encoder state...>
              source: what the encoder kind's streaming source gives for m features;
              new_kv (L, 1, H, m, 2*dh): the features' cross-attention keys/values
  FrameStep   new_kv, prev, window_kv, window_valid, cache, cache_valid
              →  frame, next_window_kv, next_window_valid, next_cache, next_cache_valid
              one output frame (TalkModel.step); the frame is the next prev
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from ..postprocess import PostOptions

DECODE_STATE = ["prev", "window_kv", "window_valid", "cache", "cache_valid"]


class EncodeStep(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def state_names(self) -> list[str]:
        return self.model.encoder.state_names()

    def initial_state(self) -> list[torch.Tensor]:
        return self.model.encoder.initial_state(1)

    def forward(self, source, *state):
        features, *state = self.model.encoder.step(source, *state)
        return (self.model.decoder.memory_kv(features), *state)


class FrameStep(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def state_names(self) -> list[str]:
        return DECODE_STATE

    def initial_state(self) -> list[torch.Tensor]:
        return [torch.zeros(1, 1, self.model.dims.n_channels)] + self.model.initial_decode_state(1)

    def forward(self, new_kv, prev, window_kv, window_valid, cache, cache_valid):
        return self.model.step(prev, new_kv, window_kv, window_valid, cache, cache_valid)


def example_source(model) -> torch.Tensor:
    """A step input of two features, to trace and export with."""
    source, features = model.encoder.make_source(), model.timing.features
    source.push(np.zeros(features.need(2 * features.block - 1), np.float32))
    return torch.from_numpy(np.ascontiguousarray(source.take(2)))


class TorchRuntime:
    """The model's streaming steps in PyTorch, batch 1, traced once into TorchScript.

    At a few frames per call eager PyTorch spends most of its time in Python between
    operators; the traced graphs run the same operators ~2× faster (BENCHMARKS.md).
    `traced=False` runs eager.
    """

    def __init__(self, model, threads: int | None = None, traced: bool = True):
        if threads is not None:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.name = model.name
        self.timing = model.timing
        self.predicted = frozenset(model.predicted())
        self.post_defaults = PostOptions()
        self.encode_step, self.frame_step = EncodeStep(self.model), FrameStep(self.model)
        self.encode, self.decode = self.encode_step, self.frame_step
        if traced:
            source = example_source(model)
            with torch.inference_mode():
                new_kv = self.encode_step(source, *self.encode_step.initial_state())[0]
            self.encode = _trace(self.encode_step, (source, *self.encode_step.initial_state()))
            self.decode = _trace(self.frame_step, (new_kv[:, :, :, :1], *self.frame_step.initial_state()))

    def new_source(self):
        return self.model.encoder.make_source()

    def initial_state(self) -> list[torch.Tensor]:
        return self.frame_step.initial_state() + self.encode_step.initial_state()

    def step(self, source: np.ndarray, added: np.ndarray, state):
        """source for sum(added) features → frames (k, C) float32 and the next state."""
        decode_state, encode_state = state[:len(DECODE_STATE)], state[len(DECODE_STATE):]
        frames = np.empty((len(added), self.model.dims.n_channels), np.float32)
        with torch.inference_mode():
            new_kv, *encode_state = self.encode(torch.from_numpy(np.ascontiguousarray(source)), *encode_state)
            start = 0
            for q, count in enumerate(added.tolist()):
                decode_state = self.decode(new_kv[:, :, :, start:start + count], *decode_state)
                frames[q] = decode_state[0][0, 0].numpy()
                start += count
        return frames, [*decode_state, *encode_state]


def _trace(module: nn.Module, example: tuple):
    with warnings.catch_warnings(), torch.inference_mode():
        # TorchScript is deprecated in favour of torch.compile, which needs a C++
        # toolchain and seconds of compiling; tracing is instant and exact here.
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated")
        # The frame count of a step is fixed per trace (one frame): branching on it is intended.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
        return torch.jit.freeze(traced.eval())
