"""Sampling settings: every knob of how tokens are drawn, defined once (the CLI builds its options from these
fields). Imports nothing heavy, so the CLI starts fast."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from thinkdraw.errors import ThinkdrawError

DEFAULT_CFG = 5.0  # Janus-Pro's and GoT-R1's guidance scale
DEFAULT_TEMPERATURE = 1.0  # Janus-Pro's image-token temperature


@dataclass(frozen=True)
class SamplingSettings:
    """How tokens are drawn. Image and text tokens have their own temperature and top-k."""

    cfg_scale: float | None = field(
        default=None,
        metadata={"help": "classifier-free guidance on image tokens; 1 = none [default: the model's own, else 5]"},
    )
    temperature: float | None = field(
        default=None, metadata={"help": "image-token temperature; 0 = greedy [default: the model's own, else 1]"}
    )
    top_k: int = field(default=0, metadata={"help": "image-token top-k; 0 = off"})
    text_temperature: float = field(default=1.0, metadata={"help": "plan-token temperature; 0 = greedy"})
    text_top_k: int = field(default=0, metadata={"help": "plan-token top-k; 0 = off"})
    max_think_tokens: int = field(default=128, metadata={"help": "plan length at which [boi] is forced"})

    def __post_init__(self):
        if self.cfg_scale is not None and self.cfg_scale < 1:
            raise ThinkdrawError(f"cfg_scale is {self.cfg_scale}: it must be >= 1 (1 = no guidance)")
        for name in ("temperature", "text_temperature"):
            if (getattr(self, name) or 0) < 0:
                raise ThinkdrawError(f"{name} is {getattr(self, name)}: use 0 for greedy or a positive value")
        for name in ("top_k", "text_top_k", "max_think_tokens"):
            if getattr(self, name) < 0:
                raise ThinkdrawError(f"{name} is {getattr(self, name)}: it must be >= 0 (top-k 0 = off)")

    def resolved(self, cfg_scale: float | None = None, temperature: float | None = None) -> SamplingSettings:
        """These settings with the model's defaults where they ask for none: the guidance scale and image
        temperature its checkpoint gives (Policy.resolve reads them from its generation config: what it was tuned
        for), else Janus-Pro's 5 and 1."""
        settings = self
        if settings.cfg_scale is None:
            settings = replace(settings, cfg_scale=float(cfg_scale) if cfg_scale else DEFAULT_CFG)
        if settings.temperature is None:
            fallback = DEFAULT_TEMPERATURE if temperature is None else float(temperature)
            settings = replace(settings, temperature=fallback)
        return settings
