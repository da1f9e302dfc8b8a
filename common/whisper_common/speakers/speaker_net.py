"""resemblyzer's d-vector network (GE2E: a 3-layer LSTM over 40 mel channels, then linear + ReLU + L2 norm) run in
numpy on the weights shipped inside the resemblyzer package, so the embedded diarizer never imports torch.

Same arithmetic as `torch.nn.LSTM` (gates in torch's order: input, forget, cell, output; both biases added), in
float32; the outputs match resemblyzer's `VoiceEncoder` to float rounding (tested).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_common.speakers.torch_checkpoint import load_legacy_checkpoint

HIDDEN = 256
LAYERS = 3


def resemblyzer_weights_path() -> Path:
    """`pretrained.pt` inside the installed resemblyzer package (found without importing it: its __init__ imports
    torch)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the resemblyzer package (which ships the speaker encoder's weights) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


@dataclass(frozen=True)
class _Layer:
    weights_t: np.ndarray  # (inputs + hidden) × 4·hidden: input and recurrent weights stacked, one matmul a step
    bias: np.ndarray  # 4·hidden (input and hidden biases summed)


def _sigmoid_(values: np.ndarray) -> np.ndarray:
    """In place: σ(x) = (1 + tanh(x/2)) / 2, one ufunc pass that cannot overflow."""
    values *= 0.5
    np.tanh(values, out=values)
    values += 1.0
    values *= 0.5
    return values


class SpeakerNet:
    def __init__(self, weights_path: Path | None = None) -> None:
        state = load_legacy_checkpoint(weights_path or resemblyzer_weights_path())["model_state"]
        self.layers = [
            _Layer(
                np.ascontiguousarray(
                    np.concatenate([state[f"lstm.weight_ih_l{k}"], state[f"lstm.weight_hh_l{k}"]], axis=1).T,
                    dtype=np.float32,
                ),
                (state[f"lstm.bias_ih_l{k}"] + state[f"lstm.bias_hh_l{k}"]).astype(np.float32),
            )
            for k in range(LAYERS)
        ]
        self.linear_t = np.ascontiguousarray(state["linear.weight"].T, dtype=np.float32)
        self.linear_bias = state["linear.bias"].astype(np.float32)

    def __call__(self, mels: np.ndarray) -> np.ndarray:
        """Unit-length d-vectors (batch × 256) of a batch of mel windows (batch × frames × 40)."""
        sequence = np.ascontiguousarray(np.asarray(mels, dtype=np.float32).transpose(1, 0, 2))  # time-major
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            sequence = self._run_layer(layer, sequence, keep_outputs=not last)
        raw = np.maximum(sequence @ self.linear_t + self.linear_bias, 0.0)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return raw / np.maximum(norms, 1e-12)

    @staticmethod
    def _run_layer(layer: _Layer, inputs: np.ndarray, keep_outputs: bool) -> np.ndarray:
        """inputs: time × batch × features. Returns every step's hidden state, or only the last one."""
        steps, batch, features = inputs.shape
        joined = np.zeros((batch, features + HIDDEN), dtype=np.float32)  # [x_t, h_(t-1)]
        hidden = joined[:, features:]
        cell = np.zeros((batch, HIDDEN), dtype=np.float32)
        gates = np.empty((batch, 4 * HIDDEN), dtype=np.float32)
        scratch = np.empty((batch, HIDDEN), dtype=np.float32)
        outputs = np.empty((steps, batch, HIDDEN), dtype=np.float32) if keep_outputs else None
        for t in range(steps):
            joined[:, :features] = inputs[t]
            np.matmul(joined, layer.weights_t, out=gates)
            gates += layer.bias
            _sigmoid_(gates[:, : 2 * HIDDEN])  # input, forget
            np.tanh(gates[:, 2 * HIDDEN : 3 * HIDDEN], out=gates[:, 2 * HIDDEN : 3 * HIDDEN])  # cell candidate
            _sigmoid_(gates[:, 3 * HIDDEN :])  # output
            cell *= gates[:, HIDDEN : 2 * HIDDEN]
            np.multiply(gates[:, :HIDDEN], gates[:, 2 * HIDDEN : 3 * HIDDEN], out=scratch)
            cell += scratch
            np.tanh(cell, out=scratch)
            np.multiply(gates[:, 3 * HIDDEN :], scratch, out=hidden)
            if outputs is not None:
                outputs[t] = hidden
        return outputs if outputs is not None else hidden.copy()
