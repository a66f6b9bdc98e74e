"""One catalogue row: the data that names a model (family, kind, published size, limits, config keywords).

A row is data. Its `kind` names the builder (`mbbench.models.builders.BUILDERS`) that turns it into a config, a
module and an encoder; `mbbench.models.registry` holds the rows and is the one place that looks a name up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable


@dataclass(frozen=True)
class ModelSpec:
    """One catalogue row. Sources for every number are in shared/reference/backends-and-competitors.md."""

    name: str
    family: str
    kind: str  # the builder: "reference", "neobert", "hf" (transformers, padded), "hf-packed"
    published_parameters: float  # millions, as published
    max_length: int
    source: str
    make_config: Callable[[], object] | None = None  # our own modules' config
    hf_class: str | None = None  # transformers model class name (hf kinds)
    config_kwargs: dict = field(default_factory=dict)  # keyword arguments of the transformers config
    requires: str = ""  # the software version the row needs, shown when it is unavailable
    window: int | None = None  # sliding half-window the attention needs (ModernBERT: 64)
    gated_ffn: bool = False  # GLU feed-forward (transformers rows; ours are gated by construction)
    notes: str = ""
    group: str = "base"  # "base" or "large": the paper's table groups
    tiny: bool = False  # the family's tiny variant (tests, smoke runs): resolved once, read by every builder

    def tiny_variant(self, tiny: bool = True) -> "ModelSpec":
        """This row as its family's tiny variant (`tiny`), or as published (`tiny=False`)."""
        return self if self.tiny == tiny else replace(self, tiny=tiny)

    @property
    def unpadded(self) -> bool:
        return self.kind != "hf"

    @property
    def layout(self) -> str:
        return "packed" if self.unpadded else "padded"

    @property
    def is_reference_modernbert(self) -> bool:
        """Our ModernBERT-architecture model (what `verify` checks against transformers)."""
        return self.kind == "reference"
