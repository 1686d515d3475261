"""The result of an LLM attribution, its plots, and readable tokens.

* :class:`LLMAttributionResult` — ``seq_attr`` (one number per input feature, for the whole answer),
  ``token_attr`` (one row per answer token), the token labels, and matplotlib plots.
* :func:`pretty_tokens` — token ids as the text they stand for (``"Ġcat"`` -> ``"cat"``).
* :func:`merge_subword_tokens` — subword tokens and their attributions merged into words.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

_WORD_START = ("Ġ", "▁", " ")  # GPT-2 style byte-level BPE, SentencePiece, plain
_SPECIAL = (("<", ">"), ("[", "]"))


def _clean(token: str) -> str:
    return token.replace("\n", "\\n").strip()


def pretty_tokens(ids: Tensor | Sequence[int], tokenizer: Any) -> list[str]:
    """The text each token id stands for, without the tokenizer's space markers: the ids are decoded
    together, re-encoded with character offsets, and cut at the offsets; when that does not reproduce the
    ids, each id is decoded on its own.

    Example:
        >>> from attrkit.llm.result import pretty_tokens
        >>> from attrkit.llm.testing import WordTokenizer
        >>> pretty_tokens([3, 4], WordTokenizer(["a", "b"], pad=False))
        ['a', 'b']
    """
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
    text = tokenizer.decode(ids)
    try:
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        re_ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    except (TypeError, KeyError, NotImplementedError, ValueError):
        re_ids, offsets = [], []
    if re_ids == ids:
        out = []
        for i, (start, end) in enumerate(offsets):
            if start == end:  # some tokenizers leave empty spans: run to the next token's start
                end = offsets[i + 1][0] if i + 1 < len(offsets) else len(text)
            out.append(_clean(text[start:end]))
        return out
    return [_clean(tokenizer.decode([i])) for i in ids]


def _is_special(token: str) -> bool:
    return any(token.startswith(a) and token.endswith(b) and len(token) > 2 for a, b in _SPECIAL)


def merge_subword_tokens(tokens: Sequence[str], attributions: Tensor | None = None
                         ) -> tuple[list[str], Tensor | None]:
    """Merge subword tokens into words for display, adding up their attributions (last dimension).

    A new word starts at a token with a space marker (``Ġ``, ``▁``, a leading space) when the tokens use
    such markers; with WordPiece (``##`` continuations) every token but a ``##`` one starts a word;
    otherwise every token is a word. Special tokens (``<s>``, ``[CLS]``) stay on their own. Attributions
    are additive over features (ablation of a group, Integrated Gradients' completeness), so the sum is the
    word's share (Sundararajan et al. 2017, https://arxiv.org/abs/1703.01365).

    Example:
        >>> import torch
        >>> from attrkit import merge_subword_tokens
        >>> tokens = ["<s>", "▁Par", "is", "▁is", "▁big"]
        >>> words, attr = merge_subword_tokens(tokens, torch.tensor([0., 1., 2., 3., 4.]))
        >>> words, attr
        (['<s>', 'Paris', 'is', 'big'], tensor([0., 3., 3., 4.]))
    """
    tokens = list(tokens)
    if attributions is not None and attributions.shape[-1] != len(tokens):
        raise ValueError(f"`attributions` must have one entry per token ({len(tokens)}) in its last dimension, "
                         f"got shape {tuple(attributions.shape)}.")
    markers = any(t.startswith(_WORD_START) for t in tokens)
    wordpiece = not markers and any(t.startswith("##") for t in tokens)
    words: list[str] = []
    groups: list[int] = []
    previous_special = True
    for t in tokens:
        special = _is_special(t)
        if wordpiece:
            starts = not t.startswith("##")
        elif markers:
            starts = t.startswith(_WORD_START)
        else:
            starts = True
        starts = starts or special or previous_special or not words
        piece = t[2:] if wordpiece and t.startswith("##") else t.lstrip("".join(_WORD_START)) if markers else t
        if starts:
            words.append(piece if piece else t)
        else:
            words[-1] += piece
        groups.append(len(words) - 1)
        previous_special = special
    if attributions is None:
        return words, None
    index = torch.tensor(groups, dtype=torch.long, device=attributions.device)
    merged = torch.zeros(*attributions.shape[:-1], len(words), dtype=attributions.dtype, device=attributions.device)
    return words, merged.index_add_(-1, index, attributions)


def _as_tensor(x: Any) -> Tensor | None:
    return None if x is None else (x if isinstance(x, Tensor) else torch.tensor(x))


class LLMAttributionResult:
    """What :class:`~attrkit.LLMAttribution` and :class:`~attrkit.LLMGradientAttribution` return.

    Attributes:
        seq_attr: ``(n_input_features,)`` attributions for the whole answer.
        token_attr: ``(n_output_tokens, n_input_features)`` per answer token, or None (Lime, KernelShap).
        input_tokens / output_tokens: labels of the input features and the answer tokens.
        output_probs: ``(n_output_tokens,)`` probability of each answer token, or None.
        inp: the interpretable input (used by :meth:`plot_image_heatmap`).

    Sundararajan et al. (2017), https://arxiv.org/abs/1703.01365; Captum's ``LLMAttributionResult``.

    Example:
        >>> from attrkit import LLMAttributionResult
        >>> res = LLMAttributionResult(seq_attr=[0.5, -0.25], input_tokens=["Hi", "there"],
        ...                            output_tokens=["Hello"], token_attr=[[0.5, -0.25]])
        >>> res.seq_attr_dict
        {'Hi': 0.5, 'there': -0.25}
        >>> fig, ax = res.plot_token_attr()
    """

    def __init__(self, *, input_tokens: list[str], output_tokens: list[str], seq_attr: Any,
                 token_attr: Any = None, output_probs: Any = None, inp: Any = None) -> None:
        self.input_tokens, self.output_tokens, self.inp = list(input_tokens), list(output_tokens), inp
        self.seq_attr, self.token_attr, self.output_probs = seq_attr, token_attr, output_probs
        self.convergence_delta: Tensor | None = None

    @property
    def seq_attr(self) -> Tensor:
        return self._seq_attr

    @seq_attr.setter
    def seq_attr(self, value: Any) -> None:
        value = _as_tensor(value)
        if value is None or value.dim() != 1 or value.shape[0] != len(self.input_tokens):
            raise ValueError(f"`seq_attr` must be 1-D with one entry per input token ({len(self.input_tokens)}), "
                             f"got {None if value is None else tuple(value.shape)}.")
        self._seq_attr = value

    @property
    def token_attr(self) -> Tensor | None:
        return self._token_attr

    @token_attr.setter
    def token_attr(self, value: Any) -> None:
        value = _as_tensor(value)
        expected = (len(self.output_tokens), len(self.input_tokens))
        if value is not None and tuple(value.shape) != expected:
            raise ValueError(f"`token_attr` must have shape (n_output_tokens, n_input_tokens) = {expected}, "
                             f"got {tuple(value.shape)}.")
        self._token_attr = value

    @property
    def output_probs(self) -> Tensor | None:
        return self._output_probs

    @output_probs.setter
    def output_probs(self, value: Any) -> None:
        value = _as_tensor(value)
        if value is not None and tuple(value.shape) != (len(self.output_tokens),):
            raise ValueError(f"`output_probs` must be 1-D with one entry per output token ({len(self.output_tokens)}), "
                             f"got {tuple(value.shape)}.")
        self._output_probs = value

    @property
    def seq_attr_dict(self) -> dict[str, float]:
        """``{input token: attribution}`` (a repeated token keeps its last value, as in Captum)."""
        return dict(zip(self.input_tokens, self.seq_attr.detach().cpu().tolist()))

    def merge_subwords(self) -> "LLMAttributionResult":
        """A copy with subword input tokens merged into words (see :func:`merge_subword_tokens`)."""
        words, seq = merge_subword_tokens(self.input_tokens, self.seq_attr)
        token = None if self.token_attr is None else merge_subword_tokens(self.input_tokens, self.token_attr)[1]
        return LLMAttributionResult(input_tokens=words, output_tokens=self.output_tokens, seq_attr=seq,
                                    token_attr=token, output_probs=self.output_probs, inp=self.inp)

    # plots (colours from attrkit.visualization.colors) -----------------------------------------
    @staticmethod
    def _finish(fig, ax, show: bool):
        if show:
            import matplotlib.pyplot as plt
            plt.show()
            return None
        return fig, ax

    @staticmethod
    def _labels(tokens: list[str]) -> list[str]:
        """Tick labels: the tokens without the tokenizer's word-start markers (``"Ġcat"`` -> ``"cat"``,
        ``"▁Par"`` -> ``"Par"``, ``"Ċ"`` -> ``"\\n"``), escaped, at most 40 characters."""
        shown = []
        for t in tokens:
            t = str(t).replace("Ċ", "\n")
            t = t[1:] if t[:1] in _WORD_START[:2] else t
            shown.append(repr(t.strip() or t)[1:-1][:40] or "␣")
        return shown

    def plot_token_attr(self, show: bool = False):
        """Heat map of ``token_attr``: answer tokens down, input tokens across, zero white, values with two
        significant digits. The figure stops growing at 16 x 12 inches (long prompts get narrower cells
        and every k-th label; see :func:`attrkit.visualization.text.token_heatmap`). Returns ``(fig, ax)``,
        or None with ``show=True``."""
        if self.token_attr is None:
            raise ValueError("token_attr is None (this method gives sequence attributions only): use plot_seq_attr.")
        if self.token_attr.numel() == 0:
            raise ValueError(f"token_attr is empty (shape {tuple(self.token_attr.shape)}): `input_tokens` and "
                             "`output_tokens` must each hold at least one token to draw a heat map.")
        from ..visualization.text import token_heatmap

        fig, ax = token_heatmap(self.token_attr, self._labels(self.output_tokens), self._labels(self.input_tokens))
        return self._finish(fig, ax, show)

    def plot_seq_attr(self, show: bool = False):
        """Bar chart of ``seq_attr`` (positive green, negative red). Returns ``(fig, ax)``."""
        import matplotlib.pyplot as plt

        from ..visualization import colors

        from ..visualization.text import _ticks

        data = self.seq_attr.detach().float().cpu().numpy()
        width = min(6.8, max(4.0, 0.3 * len(data) + 1.2))  # within a book's column
        fig, ax = plt.subplots(figsize=(width, 3.5), layout="constrained")
        ax.bar(range(len(data)), data, color=[colors.POSITIVE if v >= 0 else colors.NEGATIVE for v in data])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(*_ticks(self._labels(self.input_tokens), (width - 1.2) / max(len(data), 1), 0))
        ax.tick_params(axis="x", labelsize=9)
        plt.setp(ax.get_xticklabels(), rotation=90, ha="center")
        ax.set_ylabel("sequence attribution")
        return self._finish(fig, ax, show)

    def plot_image_heatmap(self, show: bool = False, target_token_pos: int | tuple[int, int] | None = None,
                           border_width: int = 2, show_legends: bool = True):
        """The input image in grey with the attribution of each segment on top (only for an
        :class:`~attrkit.ImageMaskInput`). ``target_token_pos``: None (whole answer), an answer token's
        index, or ``(start, stop)`` to add up a span of answer tokens. Segment outlines are drawn when
        ``border_width > 0``; ``show_legends`` writes the segment ids."""
        from .inputs import ImageMaskInput

        if not isinstance(self.inp, ImageMaskInput):
            raise ValueError("plot_image_heatmap needs a result computed on an ImageMaskInput.")
        if target_token_pos is None:
            attr = self.seq_attr
        elif self.token_attr is None:
            raise ValueError("`target_token_pos` needs token_attr, which this method did not compute; use None.")
        elif isinstance(target_token_pos, int):
            attr = self.token_attr[target_token_pos]
        else:
            attr = self.token_attr[target_token_pos[0]:target_token_pos[1]].sum(0)
        import matplotlib.pyplot as plt
        import numpy as np

        from ..visualization import colors

        pixels = self.inp.format_pixel_attr(attr.detach().float().unsqueeze(0))[0].cpu().numpy()
        bound = float(np.abs(pixels).max()) or 1.0
        fig, ax = plt.subplots()
        ax.imshow(np.asarray(self.inp.image.convert("L")), cmap="gray")
        im = ax.imshow(pixels, cmap=colors.colormap("all"), vmin=-bound, vmax=bound, alpha=0.7)
        fig.colorbar(im, ax=ax).ax.set_ylabel("attribution", rotation=-90, va="bottom")
        ids = list(self.inp.mask_id_to_idx)
        for k, m in enumerate(self.inp.get_mask_list()):
            m = m.cpu().numpy().astype(bool)
            if not m.any():
                continue
            if border_width > 0:
                ax.contour(m.astype(float), levels=[0.5], colors="black", linewidths=border_width / 2)
            if show_legends:
                ys, xs = np.nonzero(m)
                ax.text(xs.mean(), ys.mean(), str(ids[k]), ha="center", va="center", fontsize=9,
                        bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0})
        ax.axis("off")
        return self._finish(fig, ax, show)

    def __repr__(self) -> str:
        return (f"LLMAttributionResult(input_tokens={self.input_tokens!r}, output_tokens={self.output_tokens!r}, "
                f"seq_attr={self.seq_attr!r})")

