"""What each element of a batch is for, and the one place that splits a batch by it.

Captum's :class:`DataLoaderAttribution` names three roles by integer (:class:`InputRole`): 0 the element goes to
the model and is attributed, 1 it goes to the model as it is, 2 it does not go to the model. attrkit accepts the
same integers everywhere, and also names: ``"input"`` (0), ``"forward"`` (1), ``"label"`` (2, and it is the label
that ``attribute_dataset(target="label")`` explains) and ``"ignore"`` (2, e.g. an example's index). So a loader
yielding ``(x, y, idx)`` is described by ``input_roles=("input", "label", "ignore")``.

The defaults differ on purpose, each being its entry point's established behaviour: ``DataLoaderAttribution``
attributes every element (as Captum does); ``attribute_dataset`` reads a lone tensor as the input and a pair as
``(input, label)``, and asks for roles when an example has more elements (it cannot tell an extra input from an
index).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence, Tuple

ROLE_NAMES = {"input": 0, "forward": 1, "label": 2, "ignore": 2}
_HINT = ("name each element's role, e.g. input_roles=('input', 'label', 'ignore') (names: 'input' attributed, "
         "'forward' passed to the model as it is, 'label', 'ignore'; or Captum's integers 0, 1, 2)")


class InputRole:
    """What each element of a batch is for: ``need_attr`` (0) goes to the model and is attributed,
    ``need_forward`` (1) goes to the model as it is, ``no_forward`` (2) does not go to the model (labels)."""

    need_attr = 0
    need_forward = 1
    no_forward = 2


class Roles(NamedTuple):
    """Checked roles of a batch's elements: Captum's integer per element, and the label's position (or None)."""

    codes: Tuple[int, ...]
    label: Optional[int]


class Split(NamedTuple):
    """One batch split by :class:`Roles`."""

    inputs: Tuple[Any, ...]          # the attributed elements
    forward_args: Tuple[Any, ...]    # passed to the model after the inputs, not attributed
    label: Any                       # the label element, or None
    inputs_tuple: bool               # several attributed elements (the method gets a tuple)


def elements(batch) -> Tuple[tuple, bool]:
    """The elements of a batch and whether it was a tuple or list; a dict is a ``TypeError`` that says what to do."""
    if isinstance(batch, dict):
        raise TypeError(f"each example is a dict (keys: {', '.join(map(str, batch))}); the dataset tools need a tensor "
                        "or a tuple per example: wrap the dataset so it returns e.g. (features, label), or give a "
                        "DataLoader whose collate_fn returns a tuple, then " + _HINT + ".")
    if isinstance(batch, (tuple, list)):
        return tuple(batch), True
    return (batch,), False


def every_element_attributed(n: int) -> Tuple[int, ...]:
    """DataLoaderAttribution's default (Captum's): every element is an attributed input."""
    return (InputRole.need_attr,) * n


def input_then_label(n: int) -> Tuple[Any, ...]:
    """attribute_dataset's default: a lone element is the input; a pair is (input, label); more is ambiguous."""
    if n == 1:
        return ("input",)
    if n == 2:
        return ("input", "label")
    raise ValueError(f"each example has {n} elements, and which are inputs, labels or other values (an index?) "
                     "cannot be guessed: " + _HINT + ".")


def parse_roles(input_roles: Optional[Sequence[Any]], n: int, default=every_element_attributed,
                find_label: bool = False) -> Roles:
    """Check ``input_roles`` (integers or names, one per element; None or empty: ``default(n)``) for a batch of
    ``n`` elements; with ``find_label``, also which element is the label (at most one)."""
    given = tuple(input_roles) if input_roles else tuple(default(n))
    if len(given) != n:
        raise ValueError(f"`input_roles` has {len(given)} entries but each batch has {n} elements.")
    codes, named_labels = [], []
    for i, r in enumerate(given):
        if isinstance(r, str) and r in ROLE_NAMES:
            codes.append(ROLE_NAMES[r])
            named_labels += [i] if r == "label" else []
        elif not isinstance(r, str) and r in (0, 1, 2):
            codes.append(int(r))
        else:
            raise ValueError(f"`input_roles` entries must be 0 (need_attr), 1 (need_forward), 2 (no_forward) or one "
                             f"of the names {tuple(ROLE_NAMES)}, got {given}.")
    if InputRole.need_attr not in codes:
        raise ValueError(f"`input_roles` must mark at least one element with role 0 (need_attr, 'input'), "
                         f"got {given}.")
    return Roles(tuple(codes), _label_position(given, codes, named_labels) if find_label else None)


def _label_position(given, codes, named_labels) -> Optional[int]:
    if len(named_labels) > 1:
        raise ValueError(f"`input_roles` {given} names {len(named_labels)} elements 'label'; at most one.")
    if named_labels:
        return named_labels[0]
    unnamed = [i for i, (r, c) in enumerate(zip(given, codes)) if c == InputRole.no_forward and not isinstance(r, str)]
    if len(unnamed) > 1:
        raise ValueError(f"`input_roles` {given} marks {len(unnamed)} elements with role 2 (no_forward): say which "
                         "one is the label with the names 'label' and 'ignore', e.g. ('input', 'label', 'ignore').")
    return unnamed[0] if unnamed else None


def split_batch(batch, roles: Roles) -> Split:
    """Split one batch (or its elements) into attributed inputs, forward-only arguments and the label."""
    elems = elements(batch)[0]
    if len(elems) != len(roles.codes):
        raise ValueError(f"every batch must have {len(roles.codes)} elements (as `input_roles`), got {len(elems)}.")
    inputs = tuple(x for x, r in zip(elems, roles.codes) if r == InputRole.need_attr)
    forward = tuple(x for x, r in zip(elems, roles.codes) if r == InputRole.need_forward)
    label = elems[roles.label] if roles.label is not None else None
    return Split(inputs, forward, label, len(inputs) > 1)
