"""Saving and loading physically shrunk models (:func:`kaviz.train.structured_shrink.shrink`): transformers 5
has no ``prune_heads`` / ``config.pruned_heads``, so the per-layer shapes recorded in
``config.kaviz_structured`` rebuild the smaller modules before the weights are read."""

from __future__ import annotations

from torch import nn

from kaviz.train.structured import CONFIG_KEY, _layers
from kaviz.train.structured_shrink import _resize


def apply_recorded_shapes(model: nn.Module) -> nn.Module:
    """Shrink a freshly built full-size model to the shapes in ``config.kaviz_structured`` (keeping
    the leading units; the weights are meant to be overwritten by a checkpoint). No record: no-op."""
    record = getattr(model.config, CONFIG_KEY, None)
    if not record:
        return model
    layers = _layers(model)
    if len(record["heads"]) != len(layers):
        raise ValueError(f"{CONFIG_KEY} describes {len(record['heads'])} layers; the model has {len(layers)}")
    for lay, nh, ni in zip(layers, record["heads"], record["intermediate"]):
        _resize(lay, list(range(nh)), list(range(ni)))
    return model


def shrunk_class(cls: type) -> type:
    """A subclass of a transformers model class whose constructor applies
    :func:`apply_recorded_shapes`, so ``shrunk_class(cls).from_pretrained(folder, ...)`` loads a
    shrunk checkpoint with transformers' own loader (dtype, devices, shards, strict size checks)."""

    def __init__(self, config, *args, **kwargs):
        cls.__init__(self, config, *args, **kwargs)
        apply_recorded_shapes(self)

    return type(f"Shrunk{cls.__name__}", (cls,), {"__init__": __init__, "__module__": __name__})


def load_shrunk(source: str, cls: type | None = None, **kwargs) -> nn.Module:
    """``cls.from_pretrained(source, **kwargs)`` for a folder / hub id saved after :func:`shrink`
    (a dense one loads as usual). ``cls`` defaults to the class named by ``config.architectures``;
    the model returned is a plain ``cls`` instance (it saves under its own class name)."""
    import transformers

    if cls is None:
        config = transformers.AutoConfig.from_pretrained(
            source, **{k: v for k, v in kwargs.items() if k in ("revision", "trust_remote_code")}
        )
        arch = (getattr(config, "architectures", None) or [None])[0]
        if arch is None or not hasattr(transformers, arch):
            raise ValueError(f"{source}: config.architectures names {arch!r}, not a transformers model class; pass cls")
        cls = getattr(transformers, arch)
    model = shrunk_class(cls).from_pretrained(source, **kwargs)
    model.__class__ = cls  # the subclass only changed construction
    return model
