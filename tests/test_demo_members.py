"""The demo members shipped in models/: contract members, small, both frameworks, with their sources
and an ensemble file that matches them, so a fresh clone predicts without training."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ensemble.members.ensemblefile import default_path, resolve_ensemble
from ensemble.members.store import list_member_files, resolve_members

MODELS = Path(__file__).resolve().parent.parent / "models"
MAX_BYTES = 2_200_000


def test_demo_members_follow_the_contract_and_are_small():
    members = resolve_members(None, MODELS)
    frameworks = [m.info.source_framework for m in members]
    assert frameworks.count("torch") >= 2 and frameworks.count("keras") >= 1, frameworks
    for member in members:
        assert member.size_bytes < MAX_BYTES, (member.name, member.size_bytes)
        assert member.info.parity_max_abs_err < 1e-4
        assert member.info.val_miou is not None and 0.3 < member.info.val_miou < 0.95


@pytest.mark.parametrize("name", sorted(list_member_files(MODELS)))
def test_each_member_ships_its_source(name):
    member = resolve_members([name], MODELS)[0]
    sources = list((MODELS / "sources").glob(f"{name}.*"))
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in sources if p.suffix != ".json"}
    assert member.info.source_sha256 in digests, f"models/sources/{name}.* does not hold the exported file"


def test_ensemble_file_matches_the_members():
    members, spec, path = resolve_ensemble(None, None, MODELS)
    assert path == default_path(MODELS) and spec is not None
    assert [m.name for m in members] == list(spec.members)
    assert spec.fit["cv"] is not None
