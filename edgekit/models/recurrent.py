"""Recurrent models with one output per step: (B, T, F) features or (B, T) token ids -> (B, T, K).

    rnn / lstm / gru   nn.RNN / nn.LSTM / nn.GRU (batch first) + a Linear head on every step
    rnncell            an nn.RNNCell stepped in a loop (scripted for TorchScript, unrolled in
                       ONNX for the data's fixed length)

Options: `hidden` (state size), `layers` (stacked layers), `embed` (an Embedding of the token
ids first; the data then give indices, e.g. data.encoding: index), `stateful` (the hidden state
is a second input and output, so consecutive windows of one long series continue each other:
the training loop and the runtime carry it).
"""

from __future__ import annotations

import torch
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.models.registry import register_model

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class Recurrent(nn.Module):
    """An RNN/LSTM/GRU over the steps and a Linear head applied to each step's state.

    Attributes:
        stateful: forward takes and returns the state (layers x S, B, hidden), S = 2 for an
            LSTM (h and c stacked, so every cell carries one tensor) and 1 otherwise.
    """

    def __init__(self, cell: str, features: int, hidden: int, layers: int, num_outputs: int,
                 vocab_size: int = 0, embed: int = 0, stateful: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed) if embed else None
        self.rnn = CELLS[cell](embed or features, hidden, num_layers=layers, batch_first=True,
                               dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(hidden, num_outputs)
        self.is_lstm = cell == "lstm"
        self.stateful = stateful
        self.state_shape = ((2 if self.is_lstm else 1) * layers, hidden)  # (L*S, B, H) w/o B

    def initial_state(self, batch: int) -> torch.Tensor:
        """Zeros of the state's shape (L*S, batch, hidden): where every stream starts."""
        return torch.zeros(self.state_shape[0], batch, self.state_shape[1])

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        """(B, T, F) float or (B, T) int64 -> (B, T, K); stateful: (outputs, new state)."""
        if self.embedding is not None:
            x = self.embedding(x)  # (B, T, E)
        if not self.stateful:
            y, _ = self.rnn(x)  # (B, T, H)
            return self.head(y)
        if state is None:
            state = self.initial_state(x.shape[0]).to(x.device)
        if self.is_lstm:
            h, c = state.chunk(2)  # each (L, B, H)
            y, (h, c) = self.rnn(x, (h.contiguous(), c.contiguous()))
            new = torch.cat([h, c])
        else:
            y, new = self.rnn(x, state)
        return self.head(y), new


class CellLoop(nn.Module):
    """An nn.RNNCell applied step by step in Python, as the handbooks write it.

    The loop is control flow: TorchScript scripts it (`script = True`: any length runs), ONNX
    export unrolls it for the data's fixed length (recorded in the manifest's input shape).
    """

    script = True

    def __init__(self, features: int, hidden: int, num_outputs: int):
        super().__init__()
        self.hidden = hidden
        self.cell = nn.RNNCell(features, hidden)
        self.head = nn.Linear(hidden, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T, K)."""
        h = torch.zeros(x.shape[0], self.hidden, dtype=x.dtype, device=x.device)  # (B, H)
        steps: list[torch.Tensor] = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            steps.append(h)
        return self.head(torch.stack(steps, 1))  # (B, T, H) -> (B, T, K)


def _sequence_shape(name: str, input_shape: tuple[int, ...], vocab_size: int,
                    embed: int) -> int:
    """The features per step, checking the input is (T, F) features or (T,) token ids."""
    if embed:
        if len(input_shape) != 1 or not vocab_size:
            raise EdgekitError(f"{name} with model.embed takes token ids (T,), got input shape "
                               f"{input_shape}; set data.encoding=index")
        return 0
    if len(input_shape) != 2:
        hint = "; set model.embed for token ids" if len(input_shape) == 1 else ""
        raise EdgekitError(f"{name} takes sequences of shape (T, F), got {input_shape}{hint}")
    return input_shape[1]


def _recurrent(cell: str):
    def build(input_shape: tuple[int, ...], num_outputs: int, dropout: float = 0.0,
              hidden: int = 16, layers: int = 1, embed: int = 0, stateful: bool = False,
              vocab_size: int = 0) -> nn.Module:
        features = _sequence_shape(cell, input_shape, vocab_size, embed)
        return Recurrent(cell, features, hidden, layers, num_outputs, vocab_size, embed,
                         stateful, dropout)

    build.__doc__ = f"nn.{CELLS[cell].__name__} + Linear: (B, T, F) or (B, T) -> (B, T, K)."
    return build


for _cell in CELLS:
    register_model(_cell)(_recurrent(_cell))


@register_model("rnncell")
def rnncell(input_shape: tuple[int, ...], num_outputs: int, dropout: float = 0.0,
            hidden: int = 16) -> nn.Module:
    """nn.RNNCell stepped in a loop + Linear: (B, T, F) -> (B, T, K)."""
    if dropout:
        raise EdgekitError(f"rnncell has no dropout (one layer), got model.dropout={dropout}")
    return CellLoop(_sequence_shape("rnncell", input_shape, 0, 0), hidden, num_outputs)
