"""Turning a config.json dict into a typed, validated model config."""
import dataclasses
import typing

from xlagen.kernels.errors import CheckpointFormatError, UnsupportedModelError


def _check(name, value, annotation, source):
    """Raise CheckpointFormatError unless `value` fits the field's annotation."""
    allowed = typing.get_args(annotation) or (annotation,)
    ok = False
    for t in allowed:
        if t is type(None):
            ok |= value is None
        elif t is bool:
            ok |= isinstance(value, bool)
        elif t is int:
            ok |= isinstance(value, int) and not isinstance(value, bool)
        elif t is float:
            ok |= isinstance(value, (int, float)) and not isinstance(value, bool)
        elif typing.get_origin(t) is list or t is list:
            ok |= isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        else:
            ok |= isinstance(value, t)
    if not ok:
        raise CheckpointFormatError(f"{source}: field {name!r} is {value!r}, expected {annotation}")


def from_dict(cls, data, source, aliases=None):
    """Build dataclass `cls` from a config.json dict.

    Known fields are type-checked; unknown ones are kept in `raw` for the record.
    `aliases` maps other spellings transformers accepts (e.g. hidden_size) to field names.
    """
    data = dict(data)
    for alias, field in (aliases or {}).items():
        if alias in data and field not in data:
            data[field] = data[alias]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name != "raw" and f.name in data:
            _check(f.name, data[f.name], hints[f.name], source)
            kwargs[f.name] = data[f.name]
    config = cls(raw=data, **kwargs)
    config.validate(source)
    return config


def require_positive(config, source, *names):
    """Raise CheckpointFormatError for the first named field that is not a positive int."""
    for n in names:
        v = getattr(config, n)
        if v is not None and v <= 0:
            raise CheckpointFormatError(f"{source}: field {n!r} must be positive, got {v}")


def require_activation(name, source, field="activation_function"):
    """Raise UnsupportedModelError unless `name` is an activation kernels.layers knows."""
    from xlagen.kernels import layers
    if name not in layers.ACTIVATIONS:
        raise UnsupportedModelError(f"{source}: {field} {name!r} is not supported; "
                                    f"supported: {', '.join(sorted(layers.ACTIVATIONS))}")
