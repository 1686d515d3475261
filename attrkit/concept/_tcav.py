"""TCAV: how much a class's prediction moves along a concept's direction at a layer."""
from __future__ import annotations

import copy
import os

import torch
from torch import Tensor

from .. import _plumbing as plumbing
from .._hooks import layer_gradients
from ..base import LayerAttribution
from ..layer import LayerActivation, LayerGradientXActivation
from ._cav import CAV, data_fingerprint, model_fingerprint, model_version, _digest
from ._classifier import Classifier, DefaultClassifier
from ._concept import Concept, ConceptInterpreter, concepts_to_str

__all__ = ["TCAV"]


class TCAV(ConceptInterpreter):
    r"""Testing with Concept Activation Vectors.

    Kim et al. (2018), *Interpretability Beyond Feature Attribution: Quantitative Testing with Concept
    Activation Vectors (TCAV)*, https://arxiv.org/abs/1711.11279

    For each experimental set (a list of concepts, e.g. ``[stripes, random_0]``) and each layer, a linear
    classifier separates the concepts' activations at the layer; its weight rows are the concepts' CAVs.
    For each input, the layer attribution of the target output (by default the gradient,
    ``LayerGradientXActivation(multiply_by_inputs=False)``) is dotted with every CAV:

    * ``sign_count`` — the fraction of inputs whose score along the concept's CAV is positive (the paper's
      TCAV score);
    * ``magnitude`` — the mean of those scores. (Captum's docstring states a normalised formula; its code,
      and therefore this one, returns the mean, so that results move across.)

    One TCAV score means little by itself: the paper tests a concept against *many* random concept sets
    (:func:`attrkit.concept.tcav_significance`).

    Args:
        model: the model.
        layers: a module name (``"blocks.3"``) or a list of them.
        model_id: the sub-directory of ``save_path`` for this model.
        classifier: a :class:`Classifier`; default :class:`DefaultClassifier`.
        layer_attr_method: any attrkit layer attribution; TCAV points it at each layer in turn, so it may be
            built with any layer (Captum's tutorial builds it with ``None``).
        attribute_to_layer_input: use the layers' inputs instead of their outputs.
        save_path: a directory for activations and CAVs. ``None`` (the default, unlike Captum's ``"./cav/"``)
            keeps them in memory. On disk, files are keyed by the model's weights, the layer and the
            concepts' examples, so a changed model or concept set is recomputed, never read back.
        **classifier_kwargs: passed to ``classifier.train_and_eval`` (e.g. ``test_split_ratio``).

    Example:
        >>> import torch
        >>> from attrkit.concept import TCAV, Concept
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> g = torch.Generator().manual_seed(0)
        >>> bright = Concept(0, "bright", [torch.rand(10, 1, 8, 8, generator=g) + 1])
        >>> dark = Concept(1, "dark", [torch.rand(10, 1, 8, 8, generator=g) - 1])
        >>> scores = TCAV(model, ["conv2"]).interpret(torch.rand(4, 1, 8, 8), [[bright, dark]], target=0)
        >>> sorted(scores["0-1"]["conv2"])
        ['magnitude', 'sign_count']
    """

    def __init__(self, model: torch.nn.Module, layers, model_id: str = "default_model_id",
                 classifier: Classifier | None = None, layer_attr_method: LayerAttribution | None = None,
                 attribute_to_layer_input: bool = False, save_path: str | None = None, **classifier_kwargs) -> None:
        super().__init__(model)
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        if not self.layers or not all(isinstance(n, str) for n in self.layers):
            raise TypeError(f"`layers` must be a module name or a non-empty list of them, got {layers!r}.")
        self._modules = {name: _submodule(model, name) for name in self.layers}
        if not model_id:
            raise ValueError("`model_id` must be a non-empty string.")
        if classifier is not None and not isinstance(classifier, Classifier):
            raise TypeError(f"`classifier` must be a attrkit.concept.Classifier, got {type(classifier).__name__}.")
        if layer_attr_method is not None and not isinstance(layer_attr_method, LayerAttribution):
            raise TypeError("`layer_attr_method` must be a layer attribution (e.g. LayerIntegratedGradients), "
                            f"got {type(layer_attr_method).__name__}.")
        self.model_id, self.save_path = model_id, save_path
        self.classifier = classifier if classifier is not None else DefaultClassifier()
        self.classifier_kwargs = classifier_kwargs
        self.layer_attr_method = layer_attr_method
        self.attribute_to_layer_input = attribute_to_layer_input
        self.concepts: set[Concept] = set()
        self.cavs: dict[str, dict[str, CAV]] = {}
        self._activations: dict[tuple, Tensor] = {}
        self._fresh_cavs: set[tuple] = set()     # (experimental set, layer, model version, classifier) trained
        if save_path is not None:
            CAV.create_cav_dir_if_missing(save_path, model_id)

    # ------------------------------------------------------------------ activations
    def generate_activation(self, layers, concept: Concept) -> None:
        """Compute (or read back from ``save_path``) ``concept``'s activations at ``layers``."""
        layers = [layers] if isinstance(layers, str) else list(layers)
        for layer, acts in zip(layers, self._concept_activations(concept, layers)):
            self._activations[self._memory_key(concept, layer)] = acts

    def generate_activations(self, concept_layers: dict) -> None:
        """``{concept: [layer names]}`` -> :meth:`generate_activation` for each entry."""
        for concept, layers in concept_layers.items():
            self.generate_activation(layers, concept)

    def generate_all_activations(self) -> None:
        for concept in self.concepts:
            self.generate_activation(self.layers, concept)

    def _concept_activations(self, concept: Concept, layers: list[str]) -> list[Tensor]:
        _check_concept(concept)
        keys = {layer: self._disk_key(concept, layer) for layer in layers} if self.save_path else {}
        cached = {layer: self._read(keys[layer]) for layer in keys}
        todo = [layer for layer in layers if cached.get(layer) is None]
        if todo:
            fresh = _activations_of(self.model, [self._modules[n] for n in todo], concept,
                                    self.attribute_to_layer_input)
            for layer, acts in zip(todo, fresh):
                cached[layer] = acts
                if self.save_path:
                    self._write(keys[layer], acts)
        return [cached[layer] for layer in layers]

    def _activations_for(self, concept: Concept, layer: str) -> Tensor:
        key = self._memory_key(concept, layer)
        if key not in self._activations:
            self.generate_activation([layer], concept)
        return self._activations[key]

    # ------------------------------------------------------------------ CAVs
    def load_cavs(self, concepts: list[Concept]):
        """Load the CAVs of ``concepts`` that are cached (in memory, or on disk under the current key);
        returns the layers still to train and ``{concept: layers}`` whose activations are missing."""
        key = concepts_to_str(concepts)
        missing_layers, concept_layers = [], {}
        for layer in self.layers:
            cav = self._cached_cav(concepts, layer)
            if cav is None:
                missing_layers.append(layer)
                for c in concepts:
                    if self._memory_key(c, layer) not in self._activations:
                        concept_layers.setdefault(c, []).append(layer)
            else:
                self.cavs.setdefault(key, {})[layer] = cav
        return missing_layers, concept_layers

    def compute_cavs(self, experimental_sets: list[list[Concept]], force_train: bool = False,
                     processes: int | None = None) -> dict[str, dict[str, CAV]]:
        """Train (or load) the CAV of every experimental set at every layer. ``processes`` is accepted for
        Captum compatibility; training runs in this process (each classifier is small)."""
        _check_sets(experimental_sets, self.concepts)
        for concepts in experimental_sets:
            self.concepts.update(concepts)
        for concepts in experimental_sets:
            layers = self.layers if force_train else self.load_cavs(concepts)[0]
            for layer in layers:
                self.cavs.setdefault(concepts_to_str(concepts), {})[layer] = self._train_cav(concepts, layer)
        return self.cavs

    def _cached_cav(self, concepts, layer) -> CAV | None:
        if self._set_memory_key(concepts, layer) in self._fresh_cavs:
            return self.cavs[concepts_to_str(concepts)][layer]
        if self.save_path is None:
            return None
        cav = CAV.load(self.save_path, self.model_id, concepts, layer, self._cav_disk_key(concepts, layer))
        if cav is not None:
            self._fresh_cavs.add(self._set_memory_key(concepts, layer))
        return cav

    def _train_cav(self, concepts: list[Concept], layer: str) -> CAV:
        acts = [self._activations_for(c, layer) for c in concepts]
        widths = {a.shape[1] for a in acts}
        if len(widths) != 1:
            raise ValueError(f"`experimental_sets`: the concepts {[c.name for c in concepts]} give activations "
                             f"of different sizes at layer {layer!r}: {[a.shape[1] for a in acts]}; their "
                             "examples must have the same shape.")
        batches = [(a, torch.full((len(a),), c.id, dtype=torch.long, device=a.device)) for a, c in zip(acts, concepts)]
        stats = dict(self.classifier.train_and_eval(batches, **self.classifier_kwargs) or {})
        weights, classes = self.classifier.weights(), self.classifier.classes()
        classes = classes.tolist() if hasattr(classes, "tolist") else list(classes)
        _check_classifier_output(weights, classes, concepts, widths.pop())
        key = self._cav_disk_key(concepts, layer) if self.save_path else ""
        cav = CAV(concepts, layer, {"weights": weights.detach(), "classes": classes, **stats},
                  self.save_path, self.model_id, key)
        cav.save()
        self._fresh_cavs.add(self._set_memory_key(concepts, layer))
        return cav

    # ------------------------------------------------------------------ scores
    def interpret(self, inputs, experimental_sets: list[list[Concept]], target=None,
                  additional_forward_args=None, processes: int | None = None, **kwargs) -> dict:
        """TCAV scores ``{concept ids: {layer: {"sign_count": (C,), "magnitude": (C,)}}}``, the values in the
        order of the concepts in each set. ``**kwargs`` go to the layer method's ``attribute`` (``n_steps``)."""
        if "attribute_to_layer_input" in kwargs:
            raise ValueError("`attribute_to_layer_input` belongs to TCAV's constructor (it must apply to the "
                             "activations and the attributions alike), not to interpret().")
        self.compute_cavs(experimental_sets, processes=processes)
        scores: dict[str, dict[str, dict[str, Tensor]]] = {}
        every_layer = self._one_pass_attributions(inputs, target, additional_forward_args, kwargs)
        for layer in self.layers:
            grads = every_layer[layer] if every_layer else self._layer_attributions(
                layer, inputs, target, additional_forward_args, kwargs)
            for concepts in experimental_sets:
                key = concepts_to_str(concepts)
                scores.setdefault(key, {})[layer] = _scores(grads, self.cavs[key][layer], concepts, layer)
        return scores

    def _layer_method(self, layer: str) -> LayerAttribution:
        module = self._modules[layer]
        if self.layer_attr_method is None:
            return LayerGradientXActivation(self.model, module, multiply_by_inputs=False)
        method = copy.copy(self.layer_attr_method)
        method.layer = module
        return method

    def _one_pass_attributions(self, inputs, target, additional_forward_args, kwargs) -> dict | None:
        """The default method (the layer gradient, or LayerGradientXActivation) at every layer from one
        forward and one backward pass: the same values as one layer at a time."""
        method = self.layer_attr_method
        if (method is not None and type(method) is not LayerGradientXActivation) or kwargs or len(self.layers) < 2:
            return None
        forward_func = self.model if method is None else method.forward_func
        times_activation = method is not None and method.multiplies_by_inputs
        xs, _ = plumbing.as_tuple(inputs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        try:
            grads, acts = layer_gradients(forward_func, [self._modules[n] for n in self.layers], xs, target, args,
                                          self.attribute_to_layer_input)
        except RuntimeError as e:
            raise ValueError(f"`inputs` (shape {_shape(inputs)}): the layer gradients failed: {e}") from e
        flat = lambda ts: torch.cat([t.reshape(len(t), -1) for t in ts], dim=1)      # noqa: E731
        return {name: flat(tuple(g * a for g, a in zip(gs, vs)) if times_activation else gs)
                for name, gs, vs in zip(self.layers, grads, acts)}

    def _layer_attributions(self, layer, inputs, target, additional_forward_args, kwargs) -> Tensor:
        try:
            attrs = self._layer_method(layer).attribute(inputs, target=target,
                                                        additional_forward_args=additional_forward_args,
                                                        attribute_to_layer_input=self.attribute_to_layer_input,
                                                        **kwargs)
        except RuntimeError as e:
            raise ValueError(f"`inputs` (shape {_shape(inputs)}): the layer attribution at {layer!r} failed: {e}") from e
        attrs = attrs if isinstance(attrs, (tuple, list)) else (attrs,)
        return torch.cat([a.reshape(len(a), -1) for a in attrs], dim=1)

    # ------------------------------------------------------------------ cache keys
    def _memory_key(self, concept: Concept, layer: str) -> tuple:
        return (id(concept), concept.identifier, layer, self.attribute_to_layer_input, model_version(self.model))

    def _set_memory_key(self, concepts, layer) -> tuple:
        return (tuple((id(c), c.identifier) for c in concepts), layer, self.attribute_to_layer_input,
                model_version(self.model), id(self.classifier))

    def _disk_key(self, concept: Concept, layer: str) -> str:
        return _digest(model_fingerprint(self.model), layer, self.attribute_to_layer_input, concept.id,
                       concept.name, data_fingerprint(concept.data_iter))

    def _cav_disk_key(self, concepts, layer) -> str:
        return _digest(*(self._disk_key(c, layer) for c in concepts), type(self.classifier).__qualname__,
                       sorted(self.classifier_kwargs.items()))

    def _av_file(self, key: str) -> str:
        return os.path.join(self.save_path, self.model_id, "av", f"{key[:32]}.pt")

    def _read(self, key: str) -> Tensor | None:
        file = self._av_file(key)
        return torch.load(file, weights_only=True) if os.path.exists(file) else None

    def _write(self, key: str, acts: Tensor) -> None:
        os.makedirs(os.path.dirname(self._av_file(key)), exist_ok=True)
        torch.save(acts.detach().cpu(), self._av_file(key))


# ---------------------------------------------------------------------------------------------- helpers
def _submodule(model: torch.nn.Module, name: str) -> torch.nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        near = [n for n, _ in model.named_modules() if n][:8]
        raise ValueError(f"`layers`: the model has no module named {name!r} (its modules include {near}).") from None


def _check_concept(concept: Concept) -> None:
    if not isinstance(concept, Concept):
        raise TypeError(f"`experimental_sets` must hold Concept objects, got {type(concept).__name__}.")
    if concept.data_iter is None:
        raise ValueError(f"concept {concept.name!r} (id {concept.id}) has no examples: its `data_iter` is None.")


def _check_sets(experimental_sets, known: set) -> None:
    if not isinstance(experimental_sets, (list, tuple)) or not experimental_sets:
        raise ValueError("`experimental_sets` must be a non-empty list of lists of Concepts.")
    by_id = {c.id: c for c in known}
    for concepts in experimental_sets:
        if not isinstance(concepts, (list, tuple)) or len(concepts) < 2:
            raise ValueError(f"`experimental_sets`: each set needs at least two concepts, got {concepts!r}.")
        for c in concepts:
            _check_concept(c)
            if by_id.setdefault(c.id, c) is not c:
                raise ValueError(f"`experimental_sets`: two different concepts share id {c.id} "
                                 f"({by_id[c.id].name!r} and {c.name!r}); reuse one Concept object per id.")
        if len({c.id for c in concepts}) != len(concepts):
            raise ValueError(f"`experimental_sets`: a set repeats a concept: {list(concepts)}.")


def _activations_of(model, modules: list, concept: Concept, to_input: bool) -> list[Tensor]:
    """Each module's activations on every batch of ``concept``, flattened to ``N x F``."""
    per_layer: list[list[Tensor]] = [[] for _ in modules]
    capture = LayerActivation(model, list(modules))
    for batch in concept.data_iter:
        try:
            values = capture.attribute(tuple(batch) if isinstance(batch, list) else batch,
                                       attribute_to_layer_input=to_input)
        except (RuntimeError, ValueError, TypeError) as e:
            raise ValueError(f"concept {concept.name!r} (id {concept.id}): the model failed on its examples "
                             f"(shape {_shape(batch)}): {e}") from e
        for store, v in zip(per_layer, values):
            v = torch.cat([t.reshape(len(t), -1) for t in v], 1) if isinstance(v, tuple) else v.reshape(len(v), -1)
            store.append(v.detach())
    if not per_layer[0]:
        raise ValueError(f"concept {concept.name!r} (id {concept.id}) is empty: its `data_iter` yields no batch.")
    return [torch.cat(store) for store in per_layer]


def _shape(batch):
    return tuple(batch.shape) if isinstance(batch, Tensor) else [tuple(getattr(b, "shape", ())) for b in batch]


def _check_classifier_output(weights, classes, concepts, width: int) -> None:
    if not isinstance(weights, Tensor) or weights.dim() != 2 or weights.shape[1] != width:
        raise ValueError(f"the classifier's `weights()` must be a C x {width} tensor, got "
                         f"{getattr(weights, 'shape', type(weights).__name__)}.")
    if len(classes) != weights.shape[0] or sorted(classes) != sorted(c.id for c in concepts):
        raise ValueError(f"the classifier's `classes()` {classes} must list the concept ids "
                         f"{[c.id for c in concepts]}, one per row of `weights()`.")


def _scores(grads: Tensor, cav: CAV, concepts, layer: str) -> dict[str, Tensor]:
    weights = cav.stats["weights"].to(device=grads.device, dtype=torch.float32)
    if weights.shape[1] != grads.shape[1]:
        raise ValueError(f"`inputs`: the attributions at layer {layer!r} have {grads.shape[1]} values per "
                         f"example but the CAV of {concepts_to_str(concepts)} has {weights.shape[1]}; the inputs "
                         "and the concept examples must give activations of the same shape.")
    along = grads.float() @ weights.T                                   # n_inputs x n_classes
    row = {int(c): i for i, c in enumerate(cav.stats["classes"])}
    order = torch.tensor([row[c.id] for c in concepts], device=grads.device)
    return {"sign_count": (along > 0).float().mean(0).index_select(0, order),
            "magnitude": along.mean(0).index_select(0, order)}
