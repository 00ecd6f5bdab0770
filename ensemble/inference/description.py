"""What an ensemble is, apart from how it runs: its members, normalised weights, class gains, the
fusion weights they make, cleanup areas, TTA views and decoding options. Plain and frozen, built
by a pure function without sessions, so every engine (pipeline, compiled graph, Ray actor) reads
the same resolved settings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ensemble.data.sources import Source
from ensemble.data.tta import View, get_views
from ensemble.errors import EnsError
from ensemble.inference.cleanup import min_area_array
from ensemble.inference.fusion import gain_array, normalise_weights, scaled_weights
from ensemble.inference.options import PredictOptions
from ensemble.members.channels import check_channels
from ensemble.members.member import Member
from ensemble.members.padding import check_fits
from ensemble.members.store import NO_MEMBERS


@dataclass(frozen=True, eq=False)
class EnsembleDescription:
    """Members with their resolved fusion, decoding and cleanup settings (no sessions)."""

    members: tuple[Member, ...]
    options: PredictOptions
    weights: np.ndarray  # (members, classes), normalised per class
    class_gain: np.ndarray  # (classes,)
    merge_weights: np.ndarray  # weights times gains: what fusion multiplies each member by
    min_area: np.ndarray  # (classes,)
    views: tuple[View, ...]

    @property
    def n_classes(self) -> int:
        return self.members[0].n_classes

    @property
    def channels(self) -> int:
        """Input channels of the members (1 grayscale, 3 RGB); all members take the same."""
        return self.members[0].channels

    def check_image_shape(self, shape: tuple[int, int]) -> None:
        """Refuse images larger than a fixed-size member (smaller ones are padded to it)."""
        for member in self.members:
            check_fits(member, shape)

    def check_source(self, source: Source) -> None:
        """Refuse a source whose image sizes or channels the members cannot take, before any work."""
        check_channels(self.channels, source.channels, self.options.gray_to_rgb)
        for group in source.groups:
            self.check_image_shape(group.shape)


def describe_ensemble(
    members: list[Member] | tuple[Member, ...], options: PredictOptions
) -> EnsembleDescription:
    """The description of `members` under `options`: weights normalised, gains and areas per class."""
    if not members:
        raise EnsError(NO_MEMBERS)
    n_members, n_classes = len(members), members[0].n_classes
    weights = np.ones(n_members) if options.weights is None else options.weights
    weights = normalise_weights(weights, n_members, n_classes)
    class_gain = gain_array(options.class_gain, n_classes)
    return EnsembleDescription(
        members=tuple(members),
        options=options,
        weights=weights,
        class_gain=class_gain,
        merge_weights=scaled_weights(weights, class_gain),
        min_area=min_area_array(options.min_area, n_classes),
        views=get_views(options.tta),
    )


class Described:
    """Read access to an engine's `description`, for the code that reads an ensemble's settings
    (manifest, run key, summary, API) whichever engine runs it."""

    description: EnsembleDescription

    @property
    def members(self) -> list[Member]:
        return list(self.description.members)

    @property
    def options(self) -> PredictOptions:
        return self.description.options

    @property
    def weights(self) -> np.ndarray:
        return self.description.weights

    @property
    def class_gain(self) -> np.ndarray:
        return self.description.class_gain

    @property
    def min_area(self) -> np.ndarray:
        return self.description.min_area

    @property
    def views(self) -> tuple[View, ...]:
        return self.description.views

    @property
    def n_classes(self) -> int:
        return self.description.n_classes

    @property
    def channels(self) -> int:
        return self.description.channels

    def check_source(self, source: Source) -> None:
        self.description.check_source(source)

    def check_image_shape(self, shape: tuple[int, int]) -> None:
        self.description.check_image_shape(shape)
