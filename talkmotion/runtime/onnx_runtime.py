"""An exported model in ONNX Runtime: onnxruntime and numpy only, never torch.

The exported model (written by `talkmotion export`, see runtime/export.py) is a folder:
  model.json    the header: name, dims, label spec, predicted channels, post-processing
                defaults, stream timing, the streaming source's spec, each graph's state
                with its initial value, and "weights": "float32", or "int8-dynamic" where
                the large matrices are 8-bit (runtime/quantize.py)
  encode.onnx   source, <encoder state> → new_kv, new_q, next_<encoder state>
  decode.onnx   new_kv, new_q, hidden, window_kv, window_valid, cache, cache_valid, newest_q →
                frames, next_window_kv, next_window_valid, next_cache, next_cache_valid, next_newest_q
  frame.onnx    (optional) source, window_kv, window_valid, cache, cache_valid, <encoder state> →
                frames, next_<decode state>, next_<encoder state>: both graphs in one call for a
                step of one frame that brings new features (a live stream's pushes), with
                constant shapes (torch_runtime.FrameStep); exports without it run the two graphs.
                Loaded when a stream first steps one frame: animating a file never does, and
                the load is a third of the model's start-up
  (external data files a graph names, e.g. large frozen weights fetched at set-up)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from .. import labels
from ..postprocess import PostOptions
from ..timing import StreamTiming
from . import ExportError, is_one_frame
from .sources import source_from_spec

FORMAT = "talkmotion.exported"
VERSION = 2
GRAPHS = ("encode", "decode")
OPTIONAL_GRAPHS = ("frame",)


class OnnxRuntime:
    """The exported model's two graphs in ONNX Runtime (one thread by default)."""

    def __init__(self, header: dict, graphs: dict, threads: int = 1, where: str = "exported model"):
        """header: model.json's content; graphs: {"encode": path or bytes, "decode": ...}."""
        import onnxruntime as ort

        check_header(header, where)
        self.header = header
        self.name = header["name"]
        self.timing = StreamTiming.from_json(header["timing"])
        self.predicted = frozenset(header["predicted"])
        fields = {f.name for f in dataclasses.fields(PostOptions)}
        self.post_defaults = PostOptions(**{k: v for k, v in header["post"].items() if k in fields})
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # A streaming step is a few hundred microseconds: spinning threads only steal the core.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions, self.names, self.initial = {}, {}, {}
        for graph in GRAPHS:
            session = _session(ort, graphs[graph], opts, f"{where}: {graph} graph")
            state = header["state"][graph]
            inputs = [i.name for i in session.get_inputs()]
            if inputs[-len(state):] != [s["name"] for s in state]:
                raise ExportError(f"{where}: {graph} graph has inputs {inputs}, not the state its header names")
            self.sessions[graph], self.names[graph] = session, inputs
            self.initial[graph] = [initial_value(s) for s in state]
        self._frame_source, self._opts, self._where = graphs.get("frame"), opts, where
        self.frame_feed: list[tuple[str, int]] | None = None    # set when the frame graph is loaded
        self.n_channels = labels.NUM_CHANNELS

    @property
    def has_frame_graph(self) -> bool:
        return self._frame_source is not None

    def frame_graph(self):
        """The one-frame graph's session and feed, loading it on first use: the feed is
        (input name, index into [source, *state]) for each of its inputs (it drops the state
        it never reads)."""
        if self.frame_feed is None:
            import onnxruntime as ort

            self.frame_feed = self._load_frame_graph(ort)
        return self.sessions["frame"], self.frame_feed

    def _load_frame_graph(self, ort) -> list[tuple[str, int]]:
        where = self._where
        session = _session(ort, self._frame_source, self._opts, f"{where}: frame graph")
        state = [s["name"] for s in self.header["state"]["decode"] + self.header["state"]["encode"]]
        position = {name: k for k, name in enumerate(["source", *state])}
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if any(name not in position for name in inputs) or outputs != ["frames", *("next_" + n for n in state)]:
            raise ExportError(f"{where}: frame graph has inputs {inputs} and outputs {outputs}, not the state "
                              f"its header names")
        self.sessions["frame"] = session
        return [(name, position[name]) for name in inputs]

    @classmethod
    def load(cls, folder: str | Path, threads: int = 1) -> "OnnxRuntime":
        folder = Path(folder)
        try:
            header = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ExportError(f"{folder}: not an exported talkmotion model (model.json: {err})") from err
        if not isinstance(header, dict) or not isinstance(header.get("graphs"), dict):
            raise ExportError(f"{folder}: model.json is not a talkmotion exported-model header")
        graphs = {g: folder / str(header["graphs"].get(g, "")) for g in GRAPHS + OPTIONAL_GRAPHS
                  if g in GRAPHS or g in header["graphs"]}
        sizes = header.get("graph_bytes", {})
        for graph, path in graphs.items():
            if not path.is_file():
                raise ExportError(f"{folder}: its {graph} graph {path.name!r} is missing")
            if graph in sizes and path.stat().st_size != sizes[graph]:
                raise ExportError(f"{folder}: its {graph} graph {path.name!r} is {path.stat().st_size} bytes, "
                                  f"not the {sizes[graph]} it was written with (truncated or replaced)")
        return cls(header, graphs, threads, where=str(folder))

    def new_source(self):
        return source_from_spec(self.header["source"])

    def initial_state(self) -> "OnnxStreamState":
        return OnnxStreamState(self.initial["decode"] + self.initial["encode"])

    def step(self, source: np.ndarray, added: np.ndarray, state: "OnnxStreamState"):
        """source for sum(added) features → frames (k, C) float32 and the next state (the same
        object: its arrays are updated in place)."""
        if self._frame_source is not None and is_one_frame(added):
            if state.bindings is None:
                state.bind(*self.frame_graph())
            return state.run_frame(self.sessions["frame"], source), state
        split = len(self.initial["decode"])
        decode_state, encode_state = state.arrays[:split], state.arrays[split:]
        if source.shape[1]:
            new_kv, new_q, *encode_state = self.sessions["encode"].run(
                None, dict(zip(self.names["encode"], [source, *encode_state])))
        else:    # no new features (a frame rate above the feature rate): the encoder has nothing to do
            window, newest = self.initial["decode"][0], self.initial["decode"][-1]
            new_kv = np.zeros(window.shape[:3] + (0,) + window.shape[4:], np.float32)
            new_q = np.zeros((1, 0, newest.shape[-1]), np.float32)
        hidden = self.timing.features_hidden(added)
        frames, *decode_state = self.sessions["decode"].run(
            None, dict(zip(self.names["decode"], [new_kv, new_q, hidden, *decode_state])))
        state.store([*decode_state, *encode_state])
        return frames[0], state


class OnnxStreamState:
    """One stream's state for an exported model: the decode state's arrays then the encoder's.

    The frame graph reads one of two sets of these arrays and writes the other, bound once
    (ONNX Runtime I/O binding): a live frame then allocates nothing and converts no state
    between numpy and ONNX Runtime, which was a tenth of its cost. The two-graph path
    copies its results into the current set. Iterating gives the current arrays.
    """

    def __init__(self, initial: list[np.ndarray]):
        self.sets = [[x.copy() for x in initial], [x.copy() for x in initial]]
        self.current = 0
        self.bindings = None

    def bind(self, frame_session, frame_feed) -> None:
        """Bind both sets to the frame graph (once, at the stream's first one-frame step)."""
        channels = frame_session.get_outputs()[0].shape[-1]
        self.frames = np.zeros((1, 1, channels), np.float32)
        self.bindings = [self._bind(frame_session, frame_feed, reads) for reads in (0, 1)]

    def _bind(self, session, feed, reads: int):
        """The binding that reads set `reads` and writes the other (and the frame's values)."""
        binding = session.io_binding()
        for name, k in feed:
            if k:                  # k = 0 is the source, bound on every call
                _bind_array(binding.bind_input, name, self.sets[reads][k - 1])
        _bind_array(binding.bind_output, "frames", self.frames)
        names = [o.name for o in session.get_outputs()][1:]
        for name, array in zip(names, self.sets[1 - reads]):
            _bind_array(binding.bind_output, name, array)
        return binding

    @property
    def arrays(self) -> list[np.ndarray]:
        return self.sets[self.current]

    def __iter__(self):
        return iter(self.arrays)

    def run_frame(self, session, source: np.ndarray) -> np.ndarray:
        """One frame through the frame graph: (1, C) float32; the state advances."""
        binding = self.bindings[self.current]
        binding.bind_cpu_input("source", np.ascontiguousarray(source, np.float32))
        session.run_with_iobinding(binding)
        self.current = 1 - self.current
        return self.frames[0].copy()

    def store(self, arrays: list[np.ndarray]) -> None:
        """Make `arrays` (the two-graph path's results) the current state, in place."""
        for buffer, array in zip(self.arrays, arrays):
            buffer[...] = array


def _bind_array(bind, name: str, array: np.ndarray) -> None:
    bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)


def _session(ort, source, opts, what: str):
    try:
        # MatMulAddFusion wraps every 3-D Linear in Reshapes, which cost more than they save here.
        return ort.InferenceSession(source if isinstance(source, bytes) else str(source), opts,
                                    providers=["CPUExecutionProvider"], disabled_optimizers=["MatMulAddFusion"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        raise ExportError(f"{what} cannot be loaded ({str(err)[:300]})") from err


def check_header(header: dict, where: str) -> None:
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ExportError(f"{where}: not a talkmotion exported model v{VERSION} "
                          f"(format={header.get('format')!r}, version={header.get('version')!r})")
    if header.get("spec") != labels.SPEC_ID or header.get("channels") != list(labels.CHANNELS):
        raise ExportError(f"{where}: made for label spec {header.get('spec')!r}; this talkmotion uses "
                          f"{labels.SPEC_ID!r}")


def initial_value(spec: dict) -> np.ndarray:
    """A state's initial value from its header entry: {"shape", "dtype", "fill" or "values"}."""
    if "values" in spec:
        return np.asarray(spec["values"], spec["dtype"]).reshape(spec["shape"])
    return np.full(spec["shape"], spec["fill"], spec["dtype"])


def state_entry(name: str, value: np.ndarray) -> dict:
    """The header entry of a state's initial value (a constant is stored as one number)."""
    entry = {"name": name, "shape": list(value.shape), "dtype": str(value.dtype)}
    flat = value.reshape(-1)
    if flat.size == 0 or np.all(flat == flat[0]):
        entry["fill"] = flat[0].item() if flat.size else 0
    else:
        entry["values"] = flat.tolist()
    return entry
