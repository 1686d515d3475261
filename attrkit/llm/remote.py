"""Attribution for a model behind an API that returns log-probabilities (a vLLM server, say).

:class:`RemoteLLMProvider` is the interface (a ``typing.Protocol``: any object with ``generate`` and
``get_logprobs`` will do, and subclassing it works too); :class:`RemoteLLMAttribution` is
:class:`~attrkit.LLMAttribution` with the provider as the model. Captum's ``VLLMProvider`` (an OpenAI
client) is not included.
"""
from __future__ import annotations

from copy import copy
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor

from .attribution import DEFAULT_GEN_ARGS, LLMAttribution
from .inputs import InterpretableInput
from .result import LLMAttributionResult


@runtime_checkable
class RemoteLLMProvider(Protocol):
    """A served model that can generate text and score a given continuation.

    ``generate(prompt, **gen_args) -> str`` and ``get_logprobs(input_prompt, target_str, tokenizer=None)
    -> list[float]``: the log-probability of each token of ``target_str`` after ``input_prompt`` (as the
    tokenizer splits it; the list must have one entry per target token). Kwon et al. (2023), *Efficient
    Memory Management for Large Language Model Serving with PagedAttention* (vLLM),
    https://arxiv.org/abs/2309.06180.

    Example:
        >>> from attrkit import RemoteLLMProvider
        >>> class Constant:
        ...     def generate(self, prompt, **gen_args):
        ...         return "yes"
        ...     def get_logprobs(self, input_prompt, target_str, tokenizer=None):
        ...         return [-0.5] * len(target_str.split())
        >>> isinstance(Constant(), RemoteLLMProvider)
        True
    """

    def generate(self, prompt: str, **gen_args: Any) -> str:
        ...

    def get_logprobs(self, input_prompt: str, target_str: str, tokenizer: Any = None) -> list[float]:
        ...


class _NoModel(torch.nn.Module):
    """Stands in for the model of the wrapped method (the provider does the work): on the CPU, returns 0."""

    device = torch.device("cpu")

    def forward(self, *args: Any, **kwargs: Any) -> int:
        return 0


class RemoteLLMAttribution(LLMAttribution):
    """:class:`~attrkit.LLMAttribution` for a model served remotely: each perturbed prompt is sent to
    ``provider.get_logprobs`` with the target text, and ``target=None`` asks ``provider.generate``.
    Create the wrapped method on :attr:`placeholder_model` (as in Captum) or on any callable (its model is
    not used), e.g. ``FeatureAblation(RemoteLLMAttribution.placeholder_model)``.

    Example:
        >>> from attrkit import FeatureAblation, RemoteLLMAttribution, TextTemplateInput
        >>> from attrkit.llm.testing import WordTokenizer
        >>> class Counts:  # a "server" whose answer gets likelier with every word of the prompt
        ...     def generate(self, prompt, **gen_args):
        ...         return "yes"
        ...     def get_logprobs(self, input_prompt, target_str, tokenizer=None):
        ...         return [-1.0 / (1 + len(input_prompt.split()))]
        >>> tok = WordTokenizer(["yes", "no"])
        >>> attr = RemoteLLMAttribution(FeatureAblation(lambda *a: 0), tok, Counts())
        >>> res = attr.attribute(TextTemplateInput("{} {}", ["a", "b"]), target="yes")
        >>> [round(v, 4) for v in res.seq_attr.tolist()]
        [0.1667, 0.1667]
    """

    #: a stand-in model to create the wrapped method with (on the CPU; calling it returns 0)
    placeholder_model = _NoModel()

    def __init__(self, attr_method, tokenizer: Any, provider: RemoteLLMProvider,
                 attr_target: str | Callable[[Tensor], Tensor] = "log_prob"):
        if not isinstance(provider, RemoteLLMProvider):
            raise TypeError("`provider` must have generate(prompt, **gen_args) and get_logprobs(input_prompt, "
                            f"target_str, tokenizer), got {type(provider).__name__}.")
        method = attr_method
        if not isinstance(getattr(attr_method, "forward_func", None), torch.nn.Module):
            method = copy(attr_method)
            method.forward_func = self.placeholder_model
        super().__init__(method, tokenizer, attr_target)
        self.provider = provider

    def attribute(self, inp: InterpretableInput, target: str | Tensor | list | None = None, num_trials: int = 1,
                  gen_args: dict | None = None, use_cached_outputs: bool = True,
                  _inspect_forward: Callable | None = None, forward_in_tokens: bool = True,
                  skip_tokens: list[int] | list[str] | None = None, **kwargs: Any) -> LLMAttributionResult:
        """Attribute the target answer's score to the features of ``inp``, scoring every perturbed prompt
        with ``provider.get_logprobs``.

        Args:
            inp: the prompt (an :class:`~attrkit.InterpretableInput` that gives text or token ids).
            target: the answer, a string or 1-D token ids; None asks ``provider.generate`` for it.
            num_trials: average over this many runs (for sampling methods and random baselines).
            gen_args: keyword arguments of ``provider.generate`` when ``target`` is None.
            use_cached_outputs: accepted for :class:`~attrkit.LLMAttribution`'s signature; the provider scores.
            forward_in_tokens: accepted likewise; the provider scores the whole answer in one request.
            skip_tokens: token ids or strings left out of the target.
            **kwargs: passed to the wrapped method's ``attribute`` (``n_samples``, ``feature_mask``...).

        Returns:
            An :class:`~attrkit.LLMAttributionResult`, as :meth:`LLMAttribution.attribute` returns it.

        Example:
            >>> from attrkit import RemoteLLMAttribution, ShapleyValues, TextTemplateInput
            >>> from attrkit.llm.testing import WordTokenizer
            >>> class Echo:  # a "server": the answer is likelier the more prompt words it repeats
            ...     def generate(self, prompt, **gen_args):
            ...         return "cat"
            ...     def get_logprobs(self, input_prompt, target_str, tokenizer=None):
            ...         return [-2.0 + input_prompt.split().count(word) for word in target_str.split()]
            >>> tok = WordTokenizer(["the", "cat", "sat"])
            >>> remote = RemoteLLMAttribution(ShapleyValues(RemoteLLMAttribution.placeholder_model), tok, Echo())
            >>> res = remote.attribute(TextTemplateInput("{} {} sat", ["the", "cat"]))  # target generated: "cat"
            >>> res.output_tokens, res.seq_attr.tolist()
            (['cat'], [0.0, 1.0])
        """
        return super().attribute(inp, target, num_trials, gen_args, use_cached_outputs, _inspect_forward,
                                 forward_in_tokens, skip_tokens, **kwargs)

    def _prompt_text(self, model_input: Any) -> str:
        if isinstance(model_input, Tensor):
            return self.tokenizer.decode(model_input.flatten())
        if isinstance(model_input, str):
            return model_input
        raise TypeError(f"RemoteLLMAttribution needs a text prompt (or token ids); got {type(model_input).__name__}.")

    def _get_target_tokens(self, inp: InterpretableInput, target=None, gen_args: dict | None = None,
                           skip_tokens: list | None = None) -> Tensor:
        if target is not None:
            return super()._get_target_tokens(inp, target, gen_args, skip_tokens)
        self._check_input(inp)
        text = self.provider.generate(self._prompt_text(inp.to_model_input()), **(gen_args or DEFAULT_GEN_ARGS))
        ids = torch.as_tensor(self.tokenizer.encode(text, add_special_tokens=False), dtype=torch.long).reshape(-1)
        if ids.numel() == 0:
            raise ValueError("the provider generated an empty answer; give the `target`.")
        return super()._get_target_tokens(inp, ids, None, skip_tokens)

    def _log_probs(self, model_input: Any, target_tokens: Tensor, use_cached_outputs: bool,
                   forward_in_tokens: bool) -> Tensor:
        """The provider's log-probabilities of the target's tokens after the (perturbed) prompt."""
        target_str = self.tokenizer.decode(target_tokens)
        values = self.provider.get_logprobs(input_prompt=self._prompt_text(model_input), target_str=target_str,
                                            tokenizer=self.tokenizer)
        if len(values) != len(target_tokens):
            raise ValueError(f"the provider returned {len(values)} log-probabilities for a target of "
                             f"{len(target_tokens)} tokens ({target_str!r}).")
        return torch.as_tensor([float(v) for v in values], dtype=torch.float32)
