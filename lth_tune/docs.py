"""Generate ``docs/study-files.md`` — every study key with its type, default and meaning — from the
pydantic models in :mod:`lth_tune.config` (``python -m lth_tune.docs > docs/study-files.md``)."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from lth_tune.config import StudyConfig
from lth_tune.data import DATASETS
from lth_tune.models import MODELS


def _type_name(annotation) -> str:
    text = str(annotation).replace("typing.", "")
    if getattr(annotation, "__origin__", None) is typing.Literal:
        return " \\| ".join(repr(a) for a in annotation.__args__)
    return getattr(annotation, "__name__", text).replace("|", "\\|")


def rows(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        key = f"{prefix}{name}"
        if sub is not None and name != "space":
            yield from rows(sub, key + ".")
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = "…"
        yield key, _type_name(ann), "required" if field.is_required() else repr(default), field.description or ""


def render() -> str:
    lines = [
        "# Study file reference",
        "",
        "Generated from `lth_tune/config.py` by `python -m lth_tune.docs`; every key can be set in the YAML",
        "file or overridden with `--set KEY=VALUE`. Unknown keys are errors. Searched keys go under",
        "`search.space.<experiment key>` as `{choice: [...]}`, `{log: [lo, hi], points: N, include_zero: bool}`,",
        "`{linear: [lo, hi], points: N}` or `{exponent: [lo, hi], base: e|10|2, points: N}`.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, typ, default, desc in rows(StudyConfig):
        lines.append(f"| `{key}` | {typ} | `{default}` | {desc} |")
    lines += ["", "## Models", "", "`experiment.model.name` (registry `lth_tune.models.MODELS`).", "",
              "| name | size options | description |", "|---|---|---|"]
    for name, spec in MODELS.items():
        lines.append(f"| `{name}` | {', '.join(spec.options) or '-'} | {spec.description} |")
    lines += ["", "## Datasets", "", "`experiment.data.dataset` (registry `lth_tune.data.DATASETS`).", "",
              "| name | augmented by default | description |", "|---|---|---|"]
    for name, spec in DATASETS.items():
        lines.append(f"| `{name}` | {'yes' if spec.augment else 'no'} | {spec.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
