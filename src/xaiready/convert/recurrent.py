"""Converters for ONNX's recurrent ops (LSTM, GRU, RNN), which onnx2torch has none of.

Each is written once, from the ONNX operator definition, as an explicit loop over time steps, so every
attribute ONNX allows is honoured (directions, ``layout``, ``sequence_lens``, initial states, peepholes,
``clip``, ``input_forget``, ``linear_before_reset``, the activation functions) and gradients flow
through plain tensor ops. ``nn.LSTM`` is not used: its gate order, bias split and lack of sequence
lengths, clipping and custom activations differ from ONNX's.

Sequence lengths: a batch entry of length L runs steps 0..L-1 only; its outputs beyond are zero and
its final state is the one after its last valid step (for the reverse direction, after step 0, having
started at step L-1). Both follow from masking each step, which is what ONNX Runtime computes.
"""

from __future__ import annotations

import torch
from torch import nn

# Activation name -> (function of (x, alpha, beta), how many of activation_alpha / activation_beta it takes)
_ACTIVATIONS = {
    "Sigmoid": (lambda x, a, b: torch.sigmoid(x), 0, 0),
    "Tanh": (lambda x, a, b: torch.tanh(x), 0, 0),
    "Relu": (lambda x, a, b: torch.relu(x), 0, 0),
    "Affine": (lambda x, a, b: a * x + b, 1, 1),
    "LeakyRelu": (lambda x, a, b: torch.nn.functional.leaky_relu(x, a), 1, 0),
    "ThresholdedRelu": (lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x)), 1, 0),
    "ScaledTanh": (lambda x, a, b: a * torch.tanh(b * x), 1, 1),
    "HardSigmoid": (lambda x, a, b: torch.clamp(a * x + b, 0.0, 1.0), 1, 1),
    "Elu": (lambda x, a, b: torch.nn.functional.elu(x, a), 1, 0),
    "Softsign": (lambda x, a, b: torch.nn.functional.softsign(x), 0, 0),
    "Softplus": (lambda x, a, b: torch.nn.functional.softplus(x), 0, 0),
}
# ONNX's default alpha/beta where the attribute lists run out (the spec's defaults per function)
_DEFAULT_PARAMS = {"Affine": (1.0, 0.0), "LeakyRelu": (0.01, 0.0), "ThresholdedRelu": (1.0, 0.0),
                   "ScaledTanh": (1.0, 1.0), "HardSigmoid": (0.2, 0.5), "Elu": (1.0, 0.0)}
_GATES = {"LSTM": (4, ("Sigmoid", "Tanh", "Tanh")), "GRU": (3, ("Sigmoid", "Tanh")), "RNN": (1, ("Tanh",))}


class _Activation:
    def __init__(self, name: str, alpha: float, beta: float):
        self.name, self.alpha, self.beta = name, alpha, beta
        self.fn = _ACTIVATIONS[name][0]

    def __call__(self, x):
        return self.fn(x, self.alpha, self.beta)


def _activations(op: str, attrs: dict, directions: int) -> list[list[_Activation]]:
    """Per direction, the op's activation functions with their alpha/beta, as the attributes give them."""
    default = _GATES[op][1]
    names = [n.decode() if isinstance(n, bytes) else n for n in attrs.get("activations", [])]
    names = names or list(default) * directions
    if len(names) != len(default) * directions:
        raise NotImplementedError(f"{op} with {len(names)} activations for {directions} direction(s)")
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    out = []
    for name in names:
        if name not in _ACTIVATIONS:
            raise NotImplementedError(f"{op} with activation '{name}'")
        _, takes_alpha, takes_beta = _ACTIVATIONS[name]
        alpha, beta = _DEFAULT_PARAMS.get(name, (0.0, 0.0))
        if takes_alpha and alphas:
            alpha = float(alphas.pop(0))
        if takes_beta and betas:
            beta = float(betas.pop(0))
        out.append(_Activation(name, alpha, beta))
    return [out[i * len(default):(i + 1) * len(default)] for i in range(directions)]


class OnnxRecurrent(nn.Module):
    """ONNX LSTM / GRU / RNN. Inputs as ONNX orders them; returns (Y, Y_h[, Y_c]) cut to ``n_outputs``."""

    def __init__(self, op: str, attrs: dict, n_outputs: int):
        super().__init__()
        self.op = op
        self.direction = attrs.get("direction", "forward")
        if isinstance(self.direction, bytes):
            self.direction = self.direction.decode()
        if self.direction not in ("forward", "reverse", "bidirectional"):
            raise NotImplementedError(f"{op} with direction '{self.direction}'")
        self.directions = 2 if self.direction == "bidirectional" else 1
        self.hidden = int(attrs["hidden_size"])
        self.layout = int(attrs.get("layout", 0))
        self.clip = attrs.get("clip")
        self.input_forget = bool(attrs.get("input_forget", 0))
        self.linear_before_reset = bool(attrs.get("linear_before_reset", 0))
        self.acts = _activations(op, attrs, self.directions)
        self.n_outputs = n_outputs

    def forward(self, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None):  # noqa: PLR0913
        if self.layout == 1:  # [batch, seq, input] -> [seq, batch, input]; states [batch, dir, hidden]
            x = x.transpose(0, 1)
            initial_h = None if initial_h is None else initial_h.transpose(0, 1)
            initial_c = None if initial_c is None else initial_c.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        gates, hidden = _GATES[self.op][0], self.hidden
        if sequence_lens is not None:  # mask[t, b]: step t is valid for entry b
            lens = sequence_lens.to(torch.int64).reshape(1, batch)
            mask = (torch.arange(steps, device=x.device).reshape(steps, 1) < lens).to(x.dtype).unsqueeze(-1)
        else:
            mask = None
        ys, hs, cs = [], [], []
        for d in range(self.directions):
            reverse = self.direction == "reverse" or d == 1
            bias = b[d] if b is not None else torch.zeros(2 * gates * hidden, dtype=x.dtype, device=x.device)
            h = initial_h[d] if initial_h is not None else x.new_zeros(batch, hidden)
            c = initial_c[d] if initial_c is not None else x.new_zeros(batch, hidden)
            peep = p[d] if p is not None else None
            # The input projection of every step at once; the recurrence needs the loop.
            xw = torch.matmul(x, w[d].transpose(0, 1)) + bias[:gates * hidden]
            rb = bias[gates * hidden:]
            out = [None] * steps
            for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
                h_new, c_new = self._step(xw[t], h, c, r[d], rb, peep, self.acts[d])
                if mask is not None:
                    m = mask[t]
                    h_new = m * h_new + (1 - m) * h
                    c_new = m * c_new + (1 - m) * c
                    out[t] = m * h_new
                else:
                    out[t] = h_new
                h, c = h_new, c_new
            ys.append(torch.stack(out))
            hs.append(h)
            cs.append(c)
        y = torch.stack(ys, dim=1)  # [seq, dir, batch, hidden]
        y_h, y_c = torch.stack(hs), torch.stack(cs)  # [dir, batch, hidden]
        if self.layout == 1:
            y, y_h, y_c = y.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
        results = (y, y_h, y_c)[:self.n_outputs]
        return results[0] if self.n_outputs == 1 else results

    def _clip(self, v):
        return v if self.clip is None else torch.clamp(v, -float(self.clip), float(self.clip))

    def _step(self, xw, h, c, r, rb, peep, acts):  # noqa: PLR0913
        n = self.hidden
        if self.op == "RNN":
            return acts[0](self._clip(xw + torch.matmul(h, r.transpose(0, 1)) + rb)), c
        if self.op == "GRU":
            f, g = acts
            hr = torch.matmul(h, r[:2 * n].transpose(0, 1)) + rb[:2 * n]
            z = f(self._clip(xw[:, :n] + hr[:, :n]))
            rr = f(self._clip(xw[:, n:2 * n] + hr[:, n:]))
            if self.linear_before_reset:
                cand = xw[:, 2 * n:] + rr * (torch.matmul(h, r[2 * n:].transpose(0, 1)) + rb[2 * n:])
            else:
                cand = xw[:, 2 * n:] + torch.matmul(rr * h, r[2 * n:].transpose(0, 1)) + rb[2 * n:]
            cand = g(self._clip(cand))
            return (1 - z) * cand + z * h, c
        f, g, hf = acts  # LSTM, gates in ONNX order i, o, f, c
        pre = xw + torch.matmul(h, r.transpose(0, 1)) + rb
        pi, po, pf, pc = pre[:, :n], pre[:, n:2 * n], pre[:, 2 * n:3 * n], pre[:, 3 * n:]
        if peep is not None:
            pi = pi + peep[:n] * c
            pf = pf + peep[2 * n:] * c
        i = f(self._clip(pi))
        forget = 1 - i if self.input_forget else f(self._clip(pf))
        c_new = forget * c + i * g(self._clip(pc))
        if peep is not None:
            po = po + peep[n:2 * n] * c_new
        o = f(self._clip(po))
        return o * hf(c_new), c_new


def convert(node, graph):
    """onnx2torch converter for LSTM, GRU and RNN (versions 7, 14 and 22)."""
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    op = node.operation_type
    outputs = tuple(node.output_values)
    module = OnnxRecurrent(op, dict(node.attributes), len(outputs))
    mapping = OnnxMapping(inputs=tuple(node.input_values), outputs=outputs)
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping)


REGISTERED = [(op, version) for op in _GATES for version in (7, 14, 22)]  # 22 adds bfloat16 only
