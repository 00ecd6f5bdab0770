"""Choices of the command line, derived from the library's registries so the two never differ."""

from enum import Enum

from ensemble.data.metrics import list_metrics
from ensemble.data.sources import SPLITS
from ensemble.fitting.settings import WEIGHTS_PER
from ensemble.inference.cleanup import CONNECTIVITIES
from ensemble.runs.resumable import ENGINES
from ensemble.submission.convention import LAYOUTS, ORDERS, STARTS
from ensemble.submission.formats import list_formats


def choices(name: str, values) -> type[Enum]:
    """A str-Enum whose members are `values` (Typer shows them as the allowed choices)."""
    return Enum(name, {value: value for value in values}, type=str)


FormatName = choices("FormatName", list_formats())
SplitName = choices("SplitName", SPLITS)
MetricName = choices("MetricName", list_metrics())
Connectivity = choices("Connectivity", map(str, CONNECTIVITIES))
WeightsPer = choices("WeightsPer", WEIGHTS_PER)
RleOrder = choices("RleOrder", ORDERS)
RleStart = choices("RleStart", map(str, STARTS))
RleLayout = choices("RleLayout", LAYOUTS)
EngineName = choices("EngineName", ENGINES)
