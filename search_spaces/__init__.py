"""Optuna define-by-run search spaces, one per algorithm (and three for RUM), with the paper's configs first.

This package imports optuna only (never torch, ray or unlearn_core), so the tuner's driver and the GPU
machine can each use it alone. The contract every space follows is in `search_spaces.search_space`; each
space's module docstring says what it searches and where its paper configs come from.

.. code-block:: python

    import optuna
    import search_spaces

    space = search_spaces.get_space("neggrad_plus")
    study = optuna.create_study()
    study.enqueue_trial(search_spaces.paper_config("neggrad_plus", "cifar100", "resnet18"))
    trial = study.ask()
    config = {**trial.params, **space.define(trial)}           # what Ray puts in a trial's config
    kwargs = search_spaces.to_config_params(space.name, config)  # NegGradPlusConfig(**kwargs); beta 0.95

**Adding a space** is one file that builds a `SearchSpace` and passes it to `search_space.register`, and its
name in the import list below. `space_names()` (the tuner's choices) then lists it, and a flat space with a
`Stage` becomes a stage choice of the full `rum` space (`search_spaces.rum.stage_algorithms()`).

Paper configs are what the paper ran: SCRUB rows (and RUM-SCRUB stages) carry Table C.2's max steps + 1, the
RUM code's msteps + 1 passes (`search_spaces.scrub`); the RUM NegGrad+ plan is Table C.3's β and lr in every
stage with Table C.4's epochs, the RUM script's plan an extra point (`search_spaces.rum`).
"""
from __future__ import annotations

from .search_space import SPACES, SearchSpace, space_config_params

# The registration: importing a space file registers its spaces (no hand-kept table of names).
from . import finetune, l1_sparse, neggrad, neggrad_plus, random_label, rum, salun, scrub  # noqa: E402,F401,I001
from .rum import flatten_rum, unflatten_rum  # noqa: E402

__all__ = ["SPACES", "SearchSpace", "flatten_rum", "get_space", "paper_config", "space_names",
           "to_config_params", "unflatten_rum"]


def space_names() -> list[str]:
    """The names of all spaces, sorted."""
    return sorted(SPACES)


def get_space(name: str) -> SearchSpace:
    """The space called `name`.

    Raises:
        ValueError: `name` is not a space; the message lists the valid names, sorted.
    """
    try:
        return SPACES[name]
    except KeyError:
        raise ValueError(f"unknown search space {name!r}; valid: {', '.join(space_names())}") from None


def paper_config(space_name: str, dataset: str, arch: str) -> dict:
    """The paper's config for `(dataset, arch)` as a point of the space (suggested names; a copy).

    Unknown pairs (e.g. `("digits", "mlp")`) get the CIFAR-10 ResNet-18 row. Pass the result to
    `study.enqueue_trial` / OptunaSearch `points_to_evaluate`, or to `to_config_params` for config kwargs.
    """
    return get_space(space_name).paper_config(dataset, arch)


def to_config_params(space: str | SearchSpace, params) -> dict:
    """Config kwargs for the algorithm from a trial's params (a space or its name; see
    `search_space.space_config_params`)."""
    return space_config_params(get_space(space) if isinstance(space, str) else space, params)
