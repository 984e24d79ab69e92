"""A TalkModel's streaming steps in PyTorch, and the two step modules ONNX export also uses.

A stream's work is split where its cost is: the encoder runs once per call on every audio
feature that arrived, the decoder once per call on every frame that became due (a second
of audio at once when animating a file). Both are modules with every piece of state a
named input and output:

  EncodeStep  source, <encoder state...>  →  new_kv, new_q, <next encoder state...>
              source: what the encoder kind's streaming source gives for m features;
              new_kv (L, 1, H, m, 2*dh), new_q (1, m, d): the decoder's view of the features
  DecodeStep  new_kv, new_q, hidden, window_kv, window_valid, cache, cache_valid, newest_q
              →  frames, next_window_kv, next_window_valid, next_cache, next_cache_valid, next_newest_q
              k output frames (TalkModel.step); hidden (k,): how many of the m new features
              frame q may not hear yet
  FrameStep   source, window_kv, window_valid, cache, cache_valid, newest_q, <encoder state...>
              →  frames, <next decode state...>, <next encoder state...>
              both in one call for a step of one frame that brings m >= 1 features (a live
              stream's 20 ms pushes): TalkModel.step_frame, so constant shapes but m's, and one
              graph call instead of two; newest_q is taken and never read (ONNX export drops it)
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from ..postprocess import PostOptions
from . import is_one_frame

DECODE_STATE = ["window_kv", "window_valid", "cache", "cache_valid", "newest_q"]


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
        return (*self.model.decoder.encode_features(features), *state)


class DecodeStep(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def state_names(self) -> list[str]:
        return DECODE_STATE

    def initial_state(self) -> list[torch.Tensor]:
        return self.model.initial_decode_state(1)

    def forward(self, new_kv, new_q, hidden, window_kv, window_valid, cache, cache_valid, newest_q):
        return self.model.step(new_kv, new_q, hidden, window_kv, window_valid, cache, cache_valid, newest_q)


class FrameStep(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def state_names(self) -> list[str]:
        return DECODE_STATE + self.model.encoder.state_names()

    def forward(self, source, window_kv, window_valid, cache, cache_valid, newest_q, *encoder_state):
        features, *encoder_state = self.model.encoder.step(source, *encoder_state)
        new_kv, new_q = self.model.decoder.encode_features(features)
        return (*self.model.step_frame(new_kv, new_q, window_kv, window_valid, cache, cache_valid), *encoder_state)


def example_source(model) -> torch.Tensor:
    """A step input of two features, to trace and export with."""
    source, features = model.encoder.make_source(), model.timing.features
    source.push(np.zeros(features.need(2 * features.block - 1), np.float32))
    if source.available() < 2:
        raise RuntimeError("an encoder source gave fewer features than its timing promised")
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
        self.encode_step, self.decode_step = EncodeStep(self.model), DecodeStep(self.model)
        self.encode, self.decode, self.frame = self.encode_step, self.decode_step, FrameStep(self.model)
        self.traced = traced
        if traced:
            source = example_source(model)
            with torch.inference_mode():
                new_kv, new_q = self.encode_step(source, *self.encode_step.initial_state())[:2]
            self.encode = _trace(self.encode_step, (source, *self.encode_step.initial_state()))
            hidden = torch.tensor([1, 0])
            self.decode = _trace(self.decode_step, (new_kv, new_q, hidden, *self.decode_step.initial_state()))

    def frame_step(self):
        """The one-frame step, traced when a stream first needs it (animating a file never does)."""
        if self.traced and isinstance(self.frame, FrameStep):
            self.frame = _trace(self.frame, (example_source(self.model), *self.initial_state()))
        return self.frame

    def new_source(self):
        return self.model.encoder.make_source()

    def initial_state(self) -> list[torch.Tensor]:
        return self.decode_step.initial_state() + self.encode_step.initial_state()

    def step(self, source: np.ndarray, added: np.ndarray, state):
        """source for sum(added) features → frames (k, C) float32 and the next state."""
        if is_one_frame(added):
            with torch.inference_mode():
                frames, *state = self.frame_step()(torch.from_numpy(np.ascontiguousarray(source)), *state)
            return frames[0].numpy(), state
        decode_state, encode_state = state[:len(DECODE_STATE)], state[len(DECODE_STATE):]
        with torch.inference_mode():
            new_kv, new_q, *encode_state = self.encode(torch.from_numpy(np.ascontiguousarray(source)),
                                                       *encode_state)
            frames, *decode_state = self.decode(new_kv, new_q, torch.from_numpy(self.timing.features_hidden(added)),
                                                *decode_state)
        return frames[0].numpy(), [*decode_state, *encode_state]


def _trace(module: nn.Module, example: tuple):
    with warnings.catch_warnings(), torch.inference_mode():
        # TorchScript is deprecated in favour of torch.compile, which needs a C++
        # toolchain and seconds of compiling; tracing is instant and exact here.
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
        return torch.jit.freeze(traced.eval())
