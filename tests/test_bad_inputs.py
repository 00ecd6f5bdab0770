"""Bad data files, ensemble files and option values: each gives one `error:` line, exit 1 and leaves
every file as it was; odd but valid values give the right answer, never a silently wrong one."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot, write_npz
from onnx_members import make_member

from ensemble.members.ensemblefile import EnsembleSpec
from ensemble.members.store import get_member
from ensemble.submission.io import read_submission


@pytest.fixture
def store(tmp_path):
    for seed, name in enumerate(["a", "b", "c", "d"]):
        make_member(tmp_path / "models" / f"{name}.onnx", seed=seed)
    return tmp_path / "models"


def predict_args(tmp_path, data, store, *extra):
    return ["predict", "--data", data, "--models-dir", store, "--out", tmp_path / "out" / "sub.csv", *extra]


def refused(tmp_path, *args, fragments=()):
    """Run `ens *args`, expect one error line with `fragments`, and every file under tmp_path unchanged."""
    before = snapshot(tmp_path)
    line = one_line_error(ens(*args), *fragments)
    assert_unchanged(before, tmp_path)
    return line


# ---- npz files: damaged zips, lying headers, odd dtypes, empty arrays --------------------------------


def tiny_arrays(n_train=12, n_test=6):
    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 256, (n_train, 8, 12)),
        rng.integers(0, 5, (n_train, 8, 12)),
        rng.integers(0, 256, (n_test, 8, 12)),
    )


def _central_entry(data: bytes, name: str) -> int:
    """Offset of `name`'s central-directory record."""
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        length = int.from_bytes(data[pos + 28 : pos + 30], "little")
        if data[pos + 46 : pos + 46 + length] == name.encode():
            return pos
        pos = data.find(b"PK\x01\x02", pos + 1)
    raise AssertionError(f"{name} not found")


def _data_span(path, name: str) -> tuple[int, int, int]:
    """(local header offset, start of the entry's data, its compressed size)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    raw = path.read_bytes()
    local = info.header_offset
    start = local + 30 + int.from_bytes(raw[local + 26 : local + 28], "little")
    start += int.from_bytes(raw[local + 28 : local + 30], "little")
    return local, start, info.compress_size


def damage(path, kind: str):
    """Damage both arrays the commands read, in place: bad CRC, broken deflate, encrypted flag or an
    unknown compression method."""
    raw = bytearray(path.read_bytes())
    for name in ("training_set.npy", "test_set.npy"):
        local, start, size = _data_span(path, name)
        central = _central_entry(bytes(raw), name)
        if kind == "crc":  # last byte of the data: the header stays readable, the checksum does not match
            raw[start + size - 1] ^= 0x01
        elif kind == "deflate":
            raw[start + size // 2 : start + size // 2 + 16] = b"\xff" * 16
        elif kind == "encrypted":
            raw[local + 6] |= 0x01
            raw[central + 8] |= 0x01
        elif kind == "compression":
            raw[local + 8 : local + 10] = (99).to_bytes(2, "little")
            raw[central + 10 : central + 12] = (99).to_bytes(2, "little")
    path.write_bytes(bytes(raw))
    return path


@pytest.fixture(params=["crc", "deflate", "encrypted", "compression"])
def damaged_npz(request, tmp_path):
    images, masks, test = tiny_arrays()
    path = tmp_path / "damaged.npz"
    arrays = {"training_set": np.stack([images, masks], 1).astype(np.float64), "test_set": test.astype(float)}
    (np.savez_compressed if request.param == "deflate" else np.savez)(path, **arrays)
    return damage(path, request.param)


def test_damaged_zip_is_one_line_in_data_inspect(tmp_path, damaged_npz):
    refused(tmp_path, "data", "inspect", damaged_npz, fragments=["damaged.npz", "re-download"])


def test_damaged_zip_is_one_line_in_predict(tmp_path, damaged_npz, store):
    refused(
        tmp_path, *predict_args(tmp_path, damaged_npz, store, "--members", "a"), fragments=["damaged.npz"]
    )


def test_damaged_zip_is_one_line_in_export(tmp_path, damaged_npz):
    torch = pytest.importorskip("torch")
    from tiny_nets import TinyNet

    torch.save(TinyNet().state_dict(), tmp_path / "tiny.pt")
    args = ["export", tmp_path / "tiny.pt", "--name", "tiny", "--factory", "tiny_nets:TinyNet"]
    refused(
        tmp_path, *args, "--data", damaged_npz, "--out-dir", tmp_path / "models", fragments=["damaged.npz"]
    )


def _npy_with_shape(array: np.ndarray, shape: str) -> bytes:
    """The .npy bytes of `array` with its header's shape replaced by the text `shape`, same length."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    raw = buffer.getvalue()
    header_len = int.from_bytes(raw[8:10], "little")
    header = raw[10 : 10 + header_len].decode("latin1")
    true_shape = str(array.shape)
    edited = header.replace(true_shape, shape)
    grow = len(edited) - len(header)
    edited = edited.replace(" " * grow + "\n", "\n") if grow > 0 else edited
    assert len(edited) == len(header)
    return raw[:10] + edited.encode("latin1") + raw[10 + header_len :]


@pytest.mark.parametrize("rows", [10**7, 10**15])
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_header_claiming_more_rows_than_stored_is_refused(tmp_path, store, rows, compression):
    images, masks, test = tiny_arrays()
    path = tmp_path / "lying.npz"
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("training_set.npy", _npy(images, masks))
        archive.writestr("test_set.npy", _npy_with_shape(test.astype(np.float64), f"({rows}, 8, 12)"))
    for args in (["data", "inspect", path], predict_args(tmp_path, path, store, "--members", "a")):
        line = refused(tmp_path, *args, fragments=["'test_set'", f"({rows}, 8, 12)", "holds"])
        assert "MemoryError" not in line


def _npy(images, masks) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.stack([images, masks], 1).astype(np.float64))
    return buffer.getvalue()


def test_bool_test_set_is_not_taken_as_pixels(tmp_path, store):
    images, masks, test = tiny_arrays()
    path = tmp_path / "bool.npz"
    np.savez(path, training_set=np.stack([images, masks], 1).astype(float), test_set=test > 128)
    refused(
        tmp_path, *predict_args(tmp_path, path, store, "--members", "a"), fragments=["'test_set'", "bool"]
    )


def test_empty_test_set_is_an_error_not_a_header_only_csv(tmp_path, store):
    images, masks, _ = tiny_arrays()
    path = write_npz(tmp_path / "empty.npz", images, masks, np.zeros((0, 8, 12)))
    refused(
        tmp_path, *predict_args(tmp_path, path, store, "--members", "a"), fragments=["0 images", "test_set"]
    )


def test_empty_training_set_is_an_error_for_fit(tmp_path, store):
    _, _, test = tiny_arrays()
    path = write_npz(tmp_path / "empty.npz", np.zeros((0, 8, 12)), np.zeros((0, 8, 12)), test)
    args = ["fit", "--data", path, "--models-dir", store, "--cache-dir", tmp_path / "cache"]
    refused(tmp_path, *args, "--members", "a,b", fragments=["'training_set'", "0 images"])


def test_empty_validation_split_is_an_error(tmp_path, store, tiny_npz):
    args = predict_args(tmp_path, tiny_npz, store, "--members", "a", "--split", "val", "--val-fraction", "0")
    refused(tmp_path, *args, fragments=["validation split is empty"])


# ---- option values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--min-area", "99999999999999999999", "outside 0..2147483647"),
        ("--min-area", "1=99999999999999999999", "outside 0..2147483647"),
        ("--min-area", "²", "plain digits"),
        ("--min-area", "1=²", "plain digits"),
        ("--min-area", "8.9", "plain digits"),
        ("--min-area", "1_0", "plain digits"),
        ("--min-area", "1=5,1=7", "twice"),
        ("--min-area", "9=5", "outside 0..4"),
        ("--class-gain", "4=8,4=1", "twice"),
        ("--class-gain", "²=8", "plain digits"),
        ("--class-gain", "4=1e30", "outside"),
        ("--class-gain", "4=nan", "finite decimal"),
        ("--class-gain", "4=0", "outside"),
        ("--weights", "a=1,b=1,c=1,a=0", "twice"),
        ("--weights", "a=1,b=1,c=-1", "negative"),
        ("--weights", "a=1,b=1,c=nan", "finite decimal"),
        ("--weights", "a=1,b=1,c=inf", "finite decimal"),
        ("--weights", "a=1,b=1,c=1e999", "finite decimal"),
        ("--weights", "a=1,b=1,c=1_0", "finite decimal"),
        ("--weights", "a=0,b=0,c=0", "weight 0"),
        ("--weights", "", "no weight"),
    ],
)
def test_odd_option_values_are_refused(tmp_path, tiny_npz, store, option, value, fragment):
    args = predict_args(tmp_path, tiny_npz, store, "--members", "a,b,c", option, value)
    refused(tmp_path, *args, fragments=[option, fragment])


def test_overflowing_weights_do_not_zero_a_class(tmp_path, tiny_npz, store):
    out = tmp_path / "out" / "sub.csv"
    huge = ens(*predict_args(tmp_path, tiny_npz, store, "--members", "a,b,c", "--weights",
                             "a=1.7e308,b=1.7e308,c=1", "--format", "flat"))  # fmt: skip
    assert huge.exit_code == 0, huge.output
    _, labels, _ = read_submission(out, (8, 12), 5)
    plain = ens(*predict_args(tmp_path, tiny_npz, store, "--members", "a,b,c", "--weights",
                              "a=1,b=1,c=0", "--format", "flat"))  # fmt: skip
    assert plain.exit_code == 0, plain.output
    _, expected, _ = read_submission(out, (8, 12), 5)
    np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(labels)) > 1


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"1_0\n", "plain digits"),
        ("\u00b2\n".encode(), "plain digits"),
        (b"99999999999999999999999999\n", "outside"),
        (b"3\n12345678901234567890\n", "outside"),
        (b"-1\n", "outside 0..11"),
        (b"1\n\xff\xfe2\n", "not UTF-8"),
    ],
)
def test_odd_val_ids_files_are_refused(tmp_path, tiny_npz, store, content, fragment):
    ids = tmp_path / "ids.txt"
    ids.write_bytes(content)
    args = predict_args(tmp_path, tiny_npz, store, "--members", "a", "--split", "val", "--val-ids", ids)
    refused(tmp_path, *args, fragments=[fragment])


def test_negative_split_seed_is_refused(tmp_path, tiny_npz, store):
    args = predict_args(tmp_path, tiny_npz, store, "--members", "a", "--split", "val", "--split-seed", "-1")
    refused(tmp_path, *args, fragments=["--split-seed -1", "0..4294967295"])


def test_negative_demo_seed_is_refused(tmp_path):
    refused(tmp_path, "data", "demo", "--seed", "-1", "--out", tmp_path / "demo.npz", fragments=["--seed -1"])


# ---- ens fit ------------------------------------------------------------------------------------------


@pytest.fixture
def fit_args(tmp_path, tiny_npz, store):
    return ["fit", "--data", tiny_npz, "--models-dir", store, "--cache-dir", tmp_path / "cache",
            "--members", "a,b", "--val-fraction", "0.5", "--out", tmp_path / "fit.json"]  # fmt: skip


def test_more_folds_than_images_is_refused(tmp_path, fit_args):
    refused(tmp_path, *fit_args, "--folds", "1000", fragments=["--folds 1000", "0..6"])


def test_negative_folds_are_refused(tmp_path, fit_args):
    refused(tmp_path, *fit_args, "--folds", "-2", fragments=["--folds -2"])


# ---- the ensemble file ---------------------------------------------------------------------------------


def spec_dict(store, members=("a", "b", "c")) -> dict:
    spec = EnsembleSpec(
        members=tuple(members),
        member_sha256=tuple(get_member(m, store).sha256 for m in members),
        weights=((0.5,) * 5, (0.3,) * 5, (0.2,) * 5),
        tta="flip",
        min_area=(0, 6, 6, 6, 6),
        class_gain=(1.0, 1.0, 1.0, 1.0, 1.0),
        connectivity=4,
        metric="course",
        fit={"folds": 5},
    )
    return json.loads(spec.to_json())


def write_json(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def run_with_file(tmp_path, tiny_npz, store, raw):
    """Predict with the ensemble file `raw`; (CSV bytes, manifest) on success, else the result of a
    refusal that left every file as it was."""
    path = write_json(tmp_path / "ens.json", raw)
    out = tmp_path / "out" / "sub.csv"
    before = snapshot(tmp_path)
    result = ens(*predict_args(tmp_path, tiny_npz, store, "--ensemble", path, "--format", "flat"))
    if result.exit_code:
        assert_unchanged(before, tmp_path)
        return result
    manifest = json.loads(out.with_suffix(".manifest.json").read_text())
    data = out.read_bytes()
    out.unlink()
    out.with_suffix(".manifest.json").unlink()
    return data, manifest


def _swap_member(raw, store):
    raw = dict(raw, members=["a", "b", "d"])
    raw["member_sha256"] = [*raw["member_sha256"][:2], get_member("d", store).sha256]
    return raw


# each field: a change, and whether it must change the CSV ("csv"), be recorded in the manifest
# ("manifest", evidence of the fit that decides nothing) or be refused ("refused")
FIELD_CHANGES = {
    "format": (lambda raw, store: dict(raw, format="ens-ensemble/0"), "refused"),
    "members": (_swap_member, "csv"),
    "member_sha256": (lambda raw, store: dict(raw, member_sha256=["0" * 64] * 3), "refused"),
    "weights": (lambda raw, store: dict(raw, weights=[[0.0] * 5, [0.0] * 5, [1.0] * 5]), "csv"),
    "tta": (lambda raw, store: dict(raw, tta="none"), "csv"),
    "min_area": (lambda raw, store: dict(raw, min_area=[0, 0, 0, 0, 0]), "csv"),
    "class_gain": (lambda raw, store: dict(raw, class_gain=[1.0, 1.0, 1.0, 1.0, 50.0]), "csv"),
    "connectivity": (lambda raw, store: dict(raw, connectivity=8), "csv"),
    "metric": (lambda raw, store: dict(raw, metric="miou"), "manifest"),
    "fit": (lambda raw, store: dict(raw, fit={"folds": 3}), "manifest"),
}


def test_every_ensemble_file_field_changes_predict_or_is_refused(tmp_path, tiny_npz, store):
    raw = spec_dict(store)
    assert set(FIELD_CHANGES) == set(raw), "a new ensemble-file field needs an entry here"
    base_csv, base_manifest = run_with_file(tmp_path, tiny_npz, store, raw)
    assert base_manifest["cleanup"]["connectivity"] == 4
    for name, (change, effect) in FIELD_CHANGES.items():
        changed = change(raw, store)
        assert changed[name] != raw[name]
        if effect == "refused":
            one_line_error(run_with_file(tmp_path, tiny_npz, store, changed))
            continue
        csv, manifest = run_with_file(tmp_path, tiny_npz, store, changed)
        if effect == "csv":
            assert csv != base_csv, f"changing {name!r} did not change the submission"
        else:
            assert csv == base_csv
            assert manifest["ensemble_evidence"][name] == changed[name]
            assert base_manifest["ensemble_evidence"][name] == raw[name]
    unknown = dict(raw, min_areas=[0, 5, 5, 5, 5])
    one_line_error(run_with_file(tmp_path, tiny_npz, store, unknown), "unknown field 'min_areas'")


def test_explicit_connectivity_overrides_the_file(tmp_path, tiny_npz, store):
    raw = dict(spec_dict(store), connectivity=8)
    path = write_json(tmp_path / "ens.json", raw)
    out = tmp_path / "out" / "sub.csv"
    result = ens(*predict_args(tmp_path, tiny_npz, store, "--ensemble", path, "--connectivity", "4"))
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".manifest.json").read_text())["cleanup"]["connectivity"] == 4


def test_score_applies_the_file_connectivity_to_explicit_min_area(tmp_path, tiny_npz, store):
    path = write_json(tmp_path / "ens.json", dict(spec_dict(store), connectivity=8))
    report = tmp_path / "score.json"
    args = ["--data", tiny_npz, "--models-dir", store, "--ensemble", path, "--cache-dir", tmp_path / "cache"]
    result = ens("score", "--val", *args, "--val-fraction", "0.5", "--min-area", "5", "--json", report)
    assert result.exit_code == 0, result.output
    last = json.loads(report.read_text())["rows"][-1]
    assert last["name"] == "+ cleanup" and last["cleanup"]["connectivity"] == 8


def _nested(depth: int) -> str:
    return '{"format": "ens-ensemble/1", "fit": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda raw: dict(raw, min_area=[0, 8.9, 6, 6, 6]), "'min_area'"),
        (lambda raw: dict(raw, min_area=[0, 1e30, 6, 6, 6]), "'min_area'"),
        (lambda raw: dict(raw, min_area=[0, 10**30, 6, 6, 6]), "'min_area'"),
        (lambda raw: dict(raw, min_area=[0, True, 6, 6, 6]), "'min_area'"),
        (lambda raw: dict(raw, min_area=[0, -1, 6, 6, 6]), "'min_area'"),
        (lambda raw: dict(raw, weights=[[1.7e308] * 5, [1.7e308] * 5, [-1.0] * 5]), "'weights'"),
        (lambda raw: dict(raw, weights=[[0.0] * 5, [0.0] * 5, [0.0] * 5]), "all 0"),
        (lambda raw: dict(raw, weights=[[True] * 5, [1] * 5, [1] * 5]), "'weights'"),
        (lambda raw: dict(raw, weights=[["1"] * 5, [1] * 5, [1] * 5]), "'weights'"),
        (lambda raw: dict(raw, class_gain=[1, 1, 1, 1, 1e300]), "'class_gain'"),
        (lambda raw: dict(raw, connectivity=6), "'connectivity'"),
        (lambda raw: dict(raw, connectivity=True), "'connectivity'"),
        (lambda raw: dict(raw, tta="sideways"), "'tta'"),
        (lambda raw: dict(raw, metric="accuracy"), "'metric'"),
        (lambda raw: dict(raw, fit=[1]), "'fit'"),
        (lambda raw: dict(raw, members=["a", "a", "b"]), "'members'"),
        (lambda raw: {k: v for k, v in raw.items() if k != "min_area"}, "'min_area'"),
        (lambda raw: json.dumps(raw)[:-1] + ', "tta": "none"}', "twice"),
        (lambda raw: json.dumps(raw).replace("0.5", "NaN", 1), "'weights'"),
        (lambda raw: _nested(100_000), "nested too deeply"),
        (lambda raw: b"\xff\xfe{}", "cannot read"),
    ],
)
def test_bad_ensemble_files_are_refused(tmp_path, tiny_npz, store, edit, fragment):
    content = edit(spec_dict(store))
    path = tmp_path / "ens.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_json(path, content)
    args = predict_args(tmp_path, tiny_npz, store, "--ensemble", path)
    refused(tmp_path, *args, fragments=[fragment])
