"""Interpretable inputs: what a "feature" is when the model reads text or looks at an image.

A perturbation method works on a tensor of *interpretable features* — a row of ones, "every feature
present" — and each perturbation switches some of them off (to 0). An :class:`InterpretableInput` turns
such a row back into what the model actually reads (a prompt string, token ids, a processed image):

* :class:`TextTemplateInput` — segments of a prompt filled into a template (``"{} lives in {}"``);
  an absent segment is replaced by its baseline (by default the empty string).
* :class:`TextTokenInput` — the tokens of a text; an absent token becomes a baseline token id.
* :class:`ImageMaskInput` — segments of an image (a mask of ids, or a list of boolean masks); an absent
  segment is painted with a baseline colour.

This is the "interpretable representation" :math:`x = h_x(x')` of LIME (Ribeiro et al. 2016,
https://arxiv.org/abs/1602.04938) and SHAP (Lundberg & Lee 2017, https://arxiv.org/abs/1705.07874).
Names, arguments and behaviour follow Captum 0.9; bad input raises ``ValueError``/``TypeError``.
"""
from __future__ import annotations

import string
from abc import ABC, abstractmethod
from typing import Any, Callable

import torch
from torch import Tensor

from ..text import _as_int


class InterpretableInput(ABC):
    """The interface: ``n_itp_features``, ``values`` (one label per feature, for plots),
    :meth:`to_tensor` (the all-present row, shape ``(1, n_itp_features)``), :meth:`to_model_input`
    (a perturbed row -> the model's input) and :meth:`format_attr` (attributions per interpretable feature
    -> per displayed value). Subclass it for other kinds of input (Ribeiro et al. 2016,
    https://arxiv.org/abs/1602.04938).

    Example:
        >>> import torch
        >>> from attrkit import InterpretableInput
        >>> class Words(InterpretableInput):
        ...     def __init__(self, words):
        ...         self.values, self.n_itp_features = list(words), len(words)
        ...     def to_tensor(self):
        ...         return torch.ones(1, self.n_itp_features)
        ...     def to_model_input(self, perturbed_tensor=None):
        ...         keep = [True] * len(self.values) if perturbed_tensor is None else perturbed_tensor[0].bool()
        ...         return " ".join(w for w, k in zip(self.values, keep) if k)
        >>> Words(["a", "b", "c"]).to_model_input(torch.tensor([[1, 0, 1]]))
        'a c'
    """

    n_itp_features: int
    values: list[str]

    @abstractmethod
    def to_tensor(self) -> Tensor:
        """The interpretable representation with every feature present, shape ``(1, n_itp_features)``."""

    @abstractmethod
    def to_model_input(self, perturbed_tensor: Tensor | None = None) -> Any:
        """What the model reads for a perturbed row (None: the original input)."""

    def format_attr(self, itp_attr: Tensor) -> Tensor:
        """Attributions ``(..., n_itp_features)`` -> as displayed (by default unchanged)."""
        return itp_attr


def token_ids(tokens: Any, tokenizer: Any, name: str) -> list[int]:
    """Token ids from ids or token strings (``["<s>", 1]``), each checked to be in the tokenizer's
    vocabulary: a token string it does not know, a negative id or one past ``len(tokenizer)`` raises
    ``ValueError`` naming ``name``."""
    if isinstance(tokens, (str, Tensor)) or not isinstance(tokens, (list, tuple)):
        tokens = tokens.tolist() if isinstance(tokens, Tensor) and tokens.dim() else [tokens]
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    unknown = (getattr(tokenizer, "unk_token_id", None), getattr(tokenizer, "unk_token", None))
    out = []
    for token in tokens:
        if isinstance(token, str):
            ids = tokenizer.convert_tokens_to_ids([token])
            if not ids or ids[0] is None or (ids[0] == unknown[0] and token != unknown[1]):
                raise ValueError(f"`{name}`: the token {token!r} is not in the tokenizer's vocabulary.")
            out.append(int(ids[0]))
            continue
        index = _as_int(token)
        if index is None:
            raise TypeError(f"`{name}` must hold token ids or token strings, got {type(token).__name__}.")
        if index < 0 or (size is not None and index >= size):
            raise ValueError(f"`{name}`: token id {index} is outside the tokenizer's vocabulary"
                             + (f" of {size} tokens." if size is not None else "."))
        out.append(index)
    return out


def _present(perturbed_tensor: Tensor, name: str = "perturbed_tensor") -> list[bool]:
    """The single row of a perturbation as Python booleans (non-zero = present)."""
    if perturbed_tensor.dim() != 2 or perturbed_tensor.shape[0] != 1:
        raise ValueError(f"`{name}` must have shape (1, n_itp_features), got {tuple(perturbed_tensor.shape)}.")
    return [bool(v) for v in perturbed_tensor[0].tolist()]


def _as_list(x: Any, keys: list[str], name: str, what: str = "str") -> list:
    """``x`` (a list, or a dict when the values were a dict) as a list in the order of ``keys``."""
    if keys:
        if not isinstance(x, dict):
            raise TypeError(f"`{name}` must be a dict (as `values` is), got {type(x).__name__}.")
        if set(x) != set(keys):
            raise ValueError(f"`{name}` must have the keys of `values` {sorted(keys)}, got {sorted(x)}.")
        return [x[k] for k in keys]
    if not isinstance(x, (list, tuple)):
        raise TypeError(f"`{name}` must be a list (as `values` is), got {type(x).__name__}.")
    return list(x)


def _template_fields(template: str) -> tuple[int, set[str]]:
    """The number of positional fields (``{}`` or ``{0}``...) and the names of the named fields."""
    auto, numbered, named = 0, set(), set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        head = field.split(".")[0].split("[")[0]
        if head == "":
            auto += 1
        elif head.isdigit():
            numbered.add(int(head))
        else:
            named.add(head)
    n_positional = auto if auto else (max(numbered) + 1 if numbered else 0)
    return n_positional, named


class TextTemplateInput(InterpretableInput):
    """A prompt built from a template and segment values; each segment (or group of segments, via
    ``mask``) is one interpretable feature. Absent segments take their ``baselines`` value.

    Args:
        template: a format string (``"{} lives in {}"`` or ``"{name} lives in {city}"``) or a callable
            taking the values (positionally, or as keywords when ``values`` is a dict).
        values: the segments, a list (positional fields) or a dict (named fields).
        baselines: replacements, in the same form as ``values`` (default: the empty string for each), or a
            callable returning one such list/dict per call (e.g. :class:`attrkit.ProductBaselines`).
        mask: a group id per value (same form as ``values``); values with the same id are switched
            together and share one attribution.

    Features are numbered by ascending ``mask`` id (Captum numbers them in Python's set order; the
    attributions per value returned by :meth:`format_attr` are the same either way). A string template
    whose fields do not match ``values`` raises ``ValueError`` (Captum fails later, inside ``format``).
    (Ribeiro et al. 2016, https://arxiv.org/abs/1602.04938: segments as interpretable features.)

    Example:
        >>> import torch
        >>> from attrkit import TextTemplateInput
        >>> inp = TextTemplateInput("{} feels {} today", values=["He", "tired"], baselines=["It", "fine"])
        >>> inp.to_tensor()
        tensor([[1., 1.]])
        >>> inp.to_model_input(torch.tensor([[0, 1]]))
        'It feels tired today'
    """

    def __init__(self, template: str | Callable[..., str], values: list[str] | dict[str, str],
                 baselines: list[str] | dict[str, str] | Callable[[], Any] | None = None,
                 mask: list[int] | dict[str, int] | None = None) -> None:
        if isinstance(values, dict):
            self.dict_keys = list(values)
            self.values = [values[k] for k in self.dict_keys]
        elif isinstance(values, (list, tuple)):
            self.dict_keys, self.values = [], list(values)
        else:
            raise TypeError(f"`values` must be a list or a dict of strings, got {type(values).__name__}.")
        self.n_features = len(self.values)
        if baselines is None:
            baselines = [""] * self.n_features
        elif not callable(baselines):
            baselines = _as_list(baselines, self.dict_keys, "baselines")
            if len(baselines) != self.n_features:
                raise ValueError(f"`baselines` must have one entry per value ({self.n_features}), "
                                 f"got {len(baselines)}.")
        self.baselines = baselines
        self.mask = mask
        if mask is None:
            self.formatted_mask = list(range(self.n_features))
        else:
            ids = _as_list(mask, self.dict_keys, "mask")
            if len(ids) != self.n_features:
                raise ValueError(f"`mask` must have one id per value ({self.n_features}), got {len(ids)}.")
            order = {m: i for i, m in enumerate(sorted(set(ids)))}
            self.formatted_mask = [order[m] for m in ids]
        self.n_itp_features = len(set(self.formatted_mask))
        self.template = template
        if isinstance(template, str):
            self._check_fields(template)
            self.format_fn = template.format
        elif callable(template):
            self.format_fn = template
        else:
            raise TypeError(f"`template` must be a format string or a callable, got {type(template).__name__}.")

    def _check_fields(self, template: str) -> None:
        n_positional, named = _template_fields(template)
        if self.dict_keys:
            if n_positional or named != set(self.dict_keys):
                raise ValueError(f"`values` keys {sorted(self.dict_keys)} do not match the fields of `template` "
                                 f"{template!r} (named fields {sorted(named)}, positional {n_positional}).")
        elif named or n_positional != self.n_features:
            raise ValueError(f"`values` has {self.n_features} entries but `template` {template!r} has "
                             f"{n_positional} positional field(s)" + (f" and named {sorted(named)}" if named else "")
                             + "; give one value per field (a dict for named fields).")

    def to_tensor(self) -> Tensor:
        return torch.ones(1, self.n_itp_features)

    def _current_baselines(self) -> list:
        if not callable(self.baselines):
            return self.baselines
        drawn = _as_list(self.baselines(), self.dict_keys, "baselines() result")
        if len(drawn) != self.n_features:
            raise ValueError(f"`baselines` returned {len(drawn)} entries; expected {self.n_features}.")
        return drawn

    def to_model_input(self, perturbed_tensor: Tensor | None = None) -> str:
        """The prompt with absent segments replaced by their baselines."""
        values = list(self.values)
        if perturbed_tensor is not None:
            present = _present(perturbed_tensor)
            baselines = self._current_baselines()
            values = [v if present[g] else b for v, b, g in zip(values, baselines, self.formatted_mask)]
        if self.dict_keys:
            return self.format_fn(**dict(zip(self.dict_keys, values)))
        return self.format_fn(*values)

    def format_attr(self, itp_attr: Tensor) -> Tensor:
        """Per-feature attributions -> one per value (grouped values share their group's)."""
        if self.mask is None:
            return itp_attr
        index = torch.tensor(self.formatted_mask, device=itp_attr.device)
        return itp_attr.index_select(-1, index)


class TextTokenInput(InterpretableInput):
    """The tokens of ``text`` (as ``tokenizer.encode`` gives them) as interpretable features; an absent
    token is replaced by the ``baselines`` token (an id, or a token string). Tokens in ``skip_tokens``
    (ids or strings, e.g. the BOS token) stay in the model input but are not features.
    (Sundararajan et al. 2017, https://arxiv.org/abs/1703.01365: a baseline token per position.)

    ``values`` are the raw tokenizer tokens (``"▁Paris"``, ``"Ġthe"``); see
    :func:`attrkit.merge_subword_tokens` for words. A ``baselines`` token string that the tokenizer does
    not know raises ``ValueError`` (Captum silently uses the unknown-token id), and so does an unknown
    ``skip_tokens`` string (Captum ignores it) or a baseline id outside the vocabulary; ids may be Python,
    NumPy or 0-d tensor integers.

    Example:
        >>> import torch
        >>> from attrkit import TextTokenInput
        >>> from attrkit.llm.testing import WordTokenizer
        >>> tok = WordTokenizer("the cat sat on the mat".split())
        >>> inp = TextTokenInput("the cat sat", tok, baselines="<unk>", skip_tokens=["<s>"])
        >>> inp.values, inp.to_tensor()
        (['the', 'cat', 'sat'], tensor([[1, 1, 1]]))
        >>> tok.decode(inp.to_model_input(torch.tensor([[1, 0, 1]]))[0])
        '<s> the <unk> sat'
    """

    def __init__(self, text: str, tokenizer: Any, baselines: int | str = 0,
                 skip_tokens: list[int] | list[str] | None = None) -> None:
        if not isinstance(text, str):
            raise TypeError(f"`text` must be a string, got {type(text).__name__}.")
        self.tokenizer = tokenizer
        self.inp_tensor = torch.as_tensor(tokenizer.encode(text, return_tensors="pt")).reshape(1, -1)
        if self.inp_tensor.shape[1] == 0:
            raise ValueError(f"`text` {text!r} tokenizes to no tokens.")
        if skip_tokens:
            skip_tokens = token_ids(skip_tokens, tokenizer, "skip_tokens")
            skip = set(skip_tokens)
            self.itp_mask = torch.tensor([[int(t) not in skip for t in self.inp_tensor[0].tolist()]])
            self.itp_tensor = self.inp_tensor[self.itp_mask].unsqueeze(0)
            if self.itp_tensor.numel() == 0:
                raise ValueError(f"`skip_tokens` leaves no token of `text` {text!r} to attribute.")
        else:
            self.itp_mask, self.itp_tensor = None, self.inp_tensor
        self.skip_tokens = skip_tokens
        self.values = list(tokenizer.convert_ids_to_tokens(self.itp_tensor[0].tolist()))
        self.n_itp_features = len(self.values)
        self.baselines = self._baseline_id(baselines, tokenizer)

    @staticmethod
    def _baseline_id(baselines: Any, tokenizer: Any) -> int:
        if baselines is None:
            raise ValueError("`baselines` is None (a tokenizer without a pad token gives tokenizer.pad_token = None): "
                             "give a token id or a token string, e.g. tokenizer.unk_token or tokenizer.eos_token.")
        if not isinstance(baselines, str) and _as_int(baselines) is None:
            raise TypeError(f"`baselines` must be a token id or a token string, got {type(baselines).__name__}.")
        return token_ids([baselines], tokenizer, "baselines")[0]

    def to_tensor(self) -> Tensor:
        return torch.ones_like(self.itp_tensor)

    def to_model_input(self, perturbed_tensor: Tensor | None = None) -> Tensor:
        """Token ids ``(batch, n_tokens)``; every row of ``perturbed_tensor`` is one perturbed copy (gradient
        methods send many at once)."""
        if perturbed_tensor is None:
            return self.inp_tensor
        device, rows = perturbed_tensor.device, perturbed_tensor.shape[0]
        tokens = self.itp_tensor.to(device).expand(rows, -1).clone()
        tokens[perturbed_tensor != 1] = self.baselines
        if self.itp_mask is None:
            return tokens
        full = self.inp_tensor.to(device).expand(rows, -1).clone()
        full[self.itp_mask.to(device).expand(rows, -1)] = tokens.reshape(-1)
        return full


class ImageMaskInput(InterpretableInput):
    """Segments of a PIL image as interpretable features: ``mask`` (an integer tensor ``(height, width)``,
    one segment per id; default: the whole image is one segment) or ``mask_list`` (boolean masks, which may
    overlap). An absent segment is painted with ``baseline`` (an RGB colour); ``processor_fn`` turns the
    (painted) image into the model's input (for a vision-language model, its processor with the prompt).
    (Ribeiro et al. 2016, https://arxiv.org/abs/1602.04938: superpixels as interpretable features.)

    Example:
        >>> import torch
        >>> from PIL import Image
        >>> from attrkit import ImageMaskInput
        >>> image = Image.new("RGB", (4, 2), (10, 20, 30))
        >>> mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
        >>> inp = ImageMaskInput(image, mask=mask, baseline=(0, 0, 0))
        >>> inp.values, inp.n_itp_features
        (['image_feature_0', 'image_feature_1'], 2)
        >>> inp.to_model_input(torch.tensor([[1, 0]])).getpixel((3, 0))
        (0, 0, 0)
    """

    def __init__(self, image: Any, mask: Tensor | None = None, mask_list: list[Tensor] | None = None,
                 baseline: tuple[int, int, int] = (255, 255, 255),
                 processor_fn: Callable[[Any], Any] = lambda x: x) -> None:
        if not (hasattr(image, "size") and hasattr(image, "convert")):
            raise TypeError(f"`image` must be a PIL image, got {type(image).__name__}.")
        self.image, self.baseline, self.processor_fn = image, tuple(baseline), processor_fn
        shape = (image.size[1], image.size[0])
        if mask_list is not None:
            if not mask_list:
                raise ValueError("`mask_list` must hold at least one mask.")
            for i, m in enumerate(mask_list):
                if tuple(m.shape) != shape:
                    raise ValueError(f"`mask_list[{i}]` must have the image's shape {shape}, got {tuple(m.shape)}.")
            self.mask, self.mask_list = torch.empty(0), [m.bool() for m in mask_list]
            ids = list(range(len(mask_list)))
        else:
            mask = torch.zeros(shape, dtype=torch.long) if mask is None else torch.as_tensor(mask)
            if tuple(mask.shape) != shape:
                raise ValueError(f"`mask` must have the image's shape (height, width) = {shape}, "
                                 f"got {tuple(mask.shape)}.")
            self.mask, self.mask_list = mask, []
            ids = [int(i) for i in torch.unique(mask).tolist()]
        self.mask_id_to_idx = {m: i for i, m in enumerate(ids)}
        self.n_itp_features = len(ids)
        self.values = [f"image_feature_{m}" for m in ids]
        self.original_model_inputs = processor_fn(image)

    def to_tensor(self) -> Tensor:
        return torch.ones(1, self.n_itp_features)

    def get_mask_list(self) -> list[Tensor]:
        """One boolean ``(height, width)`` mask per feature."""
        return self.mask_list or [self.mask == m for m in self.mask_id_to_idx]

    def to_model_input(self, perturbed_tensor: Tensor | None = None) -> Any:
        """``processor_fn`` of the image with absent segments painted in the baseline colour."""
        if perturbed_tensor is None:
            return self.original_model_inputs
        from PIL import Image
        import numpy as np

        present = _present(perturbed_tensor)
        pixels = np.array(self.image.convert("RGB"))
        for keep, m in zip(present, self.get_mask_list()):
            if not keep:
                pixels[m.cpu().numpy().astype(bool)] = self.baseline
        return self.processor_fn(Image.fromarray(pixels.astype("uint8")))

    def plot_mask_overlay(self, show: bool = False, border_width: int = 0, show_legends: bool = True):
        """The image with each segment tinted in its own colour (``tab20``, so the same every time; Captum
        draws random colours), optional outlines and segment ids. Returns ``(fig, ax)``, or None with
        ``show=True``."""
        import matplotlib.pyplot as plt
        import numpy as np

        fig, ax = plt.subplots()
        ax.imshow(self.image)
        colours = plt.get_cmap("tab20")
        for k, (m, mid) in enumerate(zip(self.get_mask_list(), self.mask_id_to_idx)):
            m = m.cpu().numpy().astype(bool)
            tint = np.zeros((*m.shape, 4))
            tint[m] = (*colours(k % 20)[:3], 0.55)
            ax.imshow(tint)
            if border_width > 0 and m.any():
                ax.contour(m.astype(float), levels=[0.5], colors=[colours(k % 20)], linewidths=border_width / 2)
            if show_legends and m.any():
                ys, xs = np.nonzero(m)
                ax.text(xs.mean(), ys.mean(), str(mid), ha="center", va="center", fontsize=9)
        ax.axis("off")
        if show:
            plt.show()
            return None
        return fig, ax

    def format_pixel_attr(self, itp_attr: Tensor) -> Tensor:
        """Per-feature attributions ``(..., n_itp_features)`` -> per pixel ``(..., height, width)`` (features
        that overlap add up)."""
        masks = torch.stack(self.get_mask_list()).to(device=itp_attr.device, dtype=itp_attr.dtype)
        return torch.einsum("...f,fhw->...hw", itp_attr, masks)
