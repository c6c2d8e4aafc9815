"""What a world is: its size, seed, scene mix and noise rates (:class:`WorldConfig`,
:class:`NoiseConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


ROW_RATES = (
    "boilerplate", "filename", "too_short", "too_long", "gibberish",
    "misaligned", "small_image", "extreme_aspect",
)


@dataclass(frozen=True)
class NoiseConfig:
    """Fractions of rows that carry each kind of noise (the rest are clean).

    ``hub_rows`` is the fraction of rows that are alt-texts of "hub" images, logo-like pictures
    that each carry ``hub_alt_texts`` alt-texts (the paper drops images with > 1000 alt-texts);
    the number of hub images is ``round(hub_rows * n / hub_alt_texts)``.
    """

    boilerplate: float = 0.04
    filename: float = 0.03
    too_short: float = 0.03
    too_long: float = 0.03
    gibberish: float = 0.03
    misaligned: float = 0.05
    small_image: float = 0.03
    extreme_aspect: float = 0.02
    hub_rows: float = 0.0
    hub_alt_texts: int = 1001

    def __post_init__(self) -> None:
        for name in (*ROW_RATES, "hub_rows"):
            rate = getattr(self, name)
            if not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"NoiseConfig.{name} must be a fraction in [0, 1], got {rate!r}")
        if not isinstance(self.hub_alt_texts, int) or self.hub_alt_texts < 1:
            raise ValueError(
                f"NoiseConfig.hub_alt_texts must be an integer >= 1, got {self.hub_alt_texts!r}"
            )
        if self.total() > 1.0 + 1e-9:
            raise ValueError(
                f"NoiseConfig rates sum to {self.total():.4f} > 1: at most all rows can be noisy"
            )

    def total(self) -> float:
        """Sum of the row-level rates (every kind, hub rows included)."""
        return float(sum(getattr(self, name) for name in (*ROW_RATES, "hub_rows")))

    @classmethod
    def none(cls) -> NoiseConfig:
        """All rates zero: a clean world."""
        return cls(**{name: 0.0 for name in (*ROW_RATES, "hub_rows")})


@dataclass(frozen=True)
class WorldConfig:
    """Size, seed and look of a world; see :meth:`clean` and :meth:`noisy` for presets.

    Clean images have each side uniform in ``[min_side, max_side]``; ``min_side`` must exceed
    200 px and ``max_side`` stay below ``3 * min_side`` so that clean images pass the paper's
    image-size (shorter side > 200) and aspect-ratio (< 3) rules.
    """

    n: int = 1000
    seed: int = 0
    min_side: int = 224
    max_side: int = 320
    max_count: int = 4
    relation_rate: float = 0.25
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    def __post_init__(self) -> None:
        for name in ("n", "seed", "min_side", "max_side", "max_count"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError(f"WorldConfig.{name} must be an integer, got {value!r}")
        if self.n < 1:
            raise ValueError(f"WorldConfig.n must be >= 1, got {self.n}")
        if self.seed < 0:
            raise ValueError(f"WorldConfig.seed must be >= 0, got {self.seed}")
        if not 0 < self.min_side <= self.max_side:
            raise ValueError(
                f"WorldConfig needs 0 < min_side <= max_side, got {self.min_side}, {self.max_side}"
            )
        if self.min_side <= 200:
            raise ValueError(
                f"WorldConfig.min_side must be > 200 (got {self.min_side}) so that clean images "
                "pass the paper's image-size rule; small images are a noise kind (small_image)"
            )
        if self.max_side >= 3 * self.min_side:
            raise ValueError(
                f"WorldConfig.max_side must be < 3 * min_side (got {self.max_side} vs "
                f"{self.min_side}) so that clean images pass the paper's aspect-ratio rule"
            )
        if not 1 <= self.max_count <= 9:
            raise ValueError(f"WorldConfig.max_count must be in 1..9, got {self.max_count}")
        if not 0.0 <= float(self.relation_rate) <= 1.0:
            raise ValueError(
                f"WorldConfig.relation_rate must be in [0, 1], got {self.relation_rate}"
            )
        if not isinstance(self.noise, NoiseConfig):
            raise ValueError(f"WorldConfig.noise must be a NoiseConfig, got {self.noise!r}")

    @classmethod
    def clean(cls, n: int = 1000, seed: int = 0) -> WorldConfig:
        """Every row clean: faithful captions, paper-compliant image sizes."""
        return cls(n=n, seed=seed, noise=NoiseConfig.none())

    @classmethod
    def noisy(cls, n: int = 1000, seed: int = 0) -> WorldConfig:
        """The default noise mix; hub images (2% of rows) only from n >= 20000."""
        return cls(n=n, seed=seed, noise=NoiseConfig(hub_rows=0.02 if n >= 20000 else 0.0))
