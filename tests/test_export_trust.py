"""`ens export` trusts nothing it was not told to: no code runs from a file without --trust, no input
or other source's member is overwritten, preprocessing cannot be misread, and a member that is
degenerate on the labelled validation split is refused. Every bad input is built here."""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
import zipfile

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from conftest import assert_unchanged, ens, one_line_error, snapshot, write_npz
from export_checks import images_npz, metadata
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_nets import BandNet, BatchMixingNet, TinyNet, trained_like

from ensemble.errors import EnsError
from exporters.request import parse_factory_kwargs


class Payload:
    """A pickle that writes a marker file when unpickled: what a malicious model file does."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


class SystemPayload(Payload):
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload_bytes(marker, payload=Payload) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload(marker), buffer)
    return buffer.getvalue()


@pytest.fixture
def data(tmp_path):
    return images_npz(tmp_path / "tiny.npz", (32, 48))


@pytest.fixture
def program(tmp_path):
    """A real torch.export archive of a tiny net."""
    net = trained_like(TinyNet())
    path = tmp_path / "net.pt2"
    batch = ({0: torch.export.Dim("N")},)
    torch.export.save(torch.export.export(net, (torch.rand(2, 1, 32, 48),), dynamic_shapes=batch), path)
    return path


def with_payload(archive, target, inside: str, marker) -> None:
    """Copy `archive` to `target` with `inside` (a path under the archive's root folder) replaced
    by (or added as) a pickle whose payload writes `marker`."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(target, "w") as out:
        root = source.namelist()[0].split("/")[0]
        name = f"{root}/{inside}"
        for info in source.infolist():
            if info.filename != name:
                out.writestr(info, source.read(info.filename))
        out.writestr(name, payload_bytes(marker))


# 1. code execution needs --trust, whatever the file is called


@pytest.mark.parametrize("inside", ["data/sample_inputs/model.pt", "data/weights/model.pt"])
@pytest.mark.parametrize("suffix", [".pt2", ".pt"])
def test_torch_export_archive_with_a_payload_needs_trust(tmp_path, program, data, inside, suffix):
    evil, marker = tmp_path / f"evil{suffix}", tmp_path / "MARKER"
    with_payload(program, evil, inside, marker)
    before = snapshot(tmp_path)
    result = ens("export", evil, "--name", "evil", "--data", data, "--out-dir", tmp_path / "models")
    one_line_error(result, "is a torch.export archive", "weights_only=False", "--trust")
    assert not marker.exists(), "the payload ran"
    assert_unchanged(before, tmp_path)


def test_legitimate_torch_export_archive_exports_with_trust(tmp_path, program, data):
    args = ["export", program, "--name", "ep", "--data", data, "--out-dir", tmp_path / "models"]
    one_line_error(ens(*args), "torch.export archive", "--trust")
    result = ens(*args, "--trust")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "models" / "ep.onnx").is_file()


@pytest.mark.parametrize("payload", [Payload, SystemPayload])
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_checkpoint_says_what_it_holds(tmp_path, data, payload, protocol):
    marker = tmp_path / "MARKER"
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump(payload(marker), handle, protocol=protocol)
    imported = "builtins.exec" if payload is Payload else f"{os.system.__module__}.system"
    before = snapshot(tmp_path)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        result = ens("export", tmp_path / "evil.pt", "--name", "evil", "--data", data, "--out-dir", tmp_path)
    assert not shown, [str(w.message) for w in shown]
    line = one_line_error(result, "is not just weights", f"import {imported}", "can run any code", "--trust")
    assert "do not unpickle" not in line and "damaged" not in line
    assert not marker.exists()
    assert_unchanged(before, tmp_path)


def test_custom_objects_and_local_factory_files_need_trust(tmp_path, data, monkeypatch):
    marker = tmp_path / "MARKER"
    code = f"open({str(marker)!r}, 'w').write('ran')\nfrom tiny_nets import TinyNet as build\n"
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "mynets.py").write_text(code)
    (tmp_path / "layers.py").write_text(code)
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "net.pt")
    monkeypatch.chdir(tmp_path / "work")
    base = ["export", tmp_path / "net.pt", "--name", "n", "--data", data, "--out-dir", tmp_path / "models"]
    before = snapshot(tmp_path)
    for factory in ("mynets:build", f"{tmp_path / 'work' / 'mynets.py'}:build"):
        one_line_error(ens(*base, "--factory", factory), "mynets.py", "runs its code", "--trust")
    one_line_error(ens(*base, "--custom-objects", tmp_path / "layers.py"), "is a Python file", "--trust")
    assert not marker.exists()
    assert_unchanged(before, tmp_path)
    result = ens(*base, "--factory", "mynets:build", "--trust")
    assert result.exit_code == 0, result.output
    assert marker.exists()


def test_lambda_with_a_named_function_is_called_a_lambda(tmp_path, data):
    import keras

    def scale(t):
        return t / 255.0

    inputs = keras.Input((None, None, 1))
    x = keras.layers.Lambda(scale, name="scale_in")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same", activation="softmax")(x))
    model.save(tmp_path / "named.keras")
    args = ["export", tmp_path / "named.keras", "--name", "n", "--data", data, "--out-dir", tmp_path]
    before = snapshot(tmp_path)
    line = one_line_error(ens(*args), "Lambda layer 'scale_in' (function 'scale')", "--trust")
    assert "custom class" not in line
    line = one_line_error(ens(*args, "--trust"), "Lambda layer 'scale_in'", "--custom-objects")
    assert "custom class" not in line
    assert_unchanged(before, tmp_path)


# 2. no input and no other source's member is overwritten


def test_reexport_of_the_same_source_replaces_its_member(tmp_path, data):
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "net.pt")
    args = ["export", tmp_path / "net.pt", "--name", "net", "--factory", "tiny_nets:TinyNet",
            "--data", data, "--out-dir", tmp_path / "models"]  # fmt: skip
    assert ens(*args).exit_code == 0
    again = ens(*args, "--input-range", "0-1")
    assert again.exit_code == 0, again.output
    assert "replaced net.onnx, a member of the same source file" in again.output
    assert metadata(tmp_path / "models" / "net.onnx")["ens.preprocessing"].startswith("x/255 ")


def test_member_of_another_source_is_refused_before_any_work(tmp_path, data):
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "a.pt")
    torch.save(trained_like(TinyNet(), seed=1).state_dict(), tmp_path / "b.pt")
    store = ["--data", data, "--out-dir", tmp_path / "models"]
    first = ens("export", tmp_path / "a.pt", "--name", "m", "--factory", "tiny_nets:TinyNet", *store)
    assert first.exit_code == 0, first.output
    before = snapshot(tmp_path)
    result = ens("export", tmp_path / "b.pt", "--name", "m", *store)  # no --factory: not even loaded
    fragments = ["m.onnx' already exists, exported from 'a.pt'", "different file than 'b.pt'", "--name"]
    one_line_error(result, *fragments, "--force")
    assert_unchanged(before, tmp_path)


def test_no_export_output_is_one_of_its_inputs(tmp_path):
    (tmp_path / "models").mkdir()
    data = images_npz(tmp_path / "models" / "d.npz", (32, 48)).rename(tmp_path / "models" / "d.onnx")
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "net.pt")
    (tmp_path / "models" / "s.onnx").symlink_to(tmp_path / "net.pt")
    before = snapshot(tmp_path)
    common = ["--factory", "tiny_nets:TinyNet", "--out-dir", tmp_path / "models", "--force"]
    over_data = ens("export", tmp_path / "net.pt", "--name", "d", "--data", data, *common)
    one_line_error(over_data, "d.onnx' is the same file as --data")
    over_source = ens("export", tmp_path / "net.pt", "--name", "s", *common)
    one_line_error(over_source, "s.onnx' is the same file as the source model")
    assert_unchanged(before, tmp_path)


# 3. preprocessing nobody can misread, and degenerate members refused


def band_npz(path, n_train: int = 30, hw=(16, 24)):
    """Images of random grey levels whose label is the grey band (1..4 by quarters of 0..255)."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (n_train + 6, *hw))
    masks = 1 + images * 4 // 256
    return write_npz(path, images[:n_train], masks[:n_train], images[n_train:])


@pytest.fixture
def band(tmp_path):
    torch.save(BandNet().state_dict(), tmp_path / "band.pt")
    torch.save(BandNet((-10.0, 0.375, 0.625, 0.875, 0.125)).state_dict(), tmp_path / "swapped.pt")
    torch.save(BandNet((-10.0, 5.0, 6.0, 7.0, 8.0)).state_dict(), tmp_path / "broken.pt")
    return band_npz(tmp_path / "band.npz")


def band_args(tmp_path, data, source="band.pt"):
    return ["export", tmp_path / source, "--name", "band", "--factory", "tiny_nets:BandNet",
            "--data", data, "--out-dir", tmp_path / "models"]  # fmt: skip


def test_right_preprocessing_is_scored_and_recorded(tmp_path, band):
    result = ens(*band_args(tmp_path, band), "--input-range", "0-1")
    assert result.exit_code == 0, result.output
    assert "val course mIoU 1.0000 on 6 validation images of band.npz" in result.output
    meta = metadata(tmp_path / "models" / "band.onnx")
    assert float(meta["ens.val_miou"]) == 1.0 and "majority-class baseline" in meta["ens.val_miou_from"]
    assert meta["ens.preprocessing"] == "x/255 (input range 0-1; x = raw pixel 0..255)"


def test_misread_input_range_is_refused_and_named(tmp_path, band):
    before = snapshot(tmp_path)
    result = ens(*band_args(tmp_path, band))  # the net wants 0..1 but the default is raw 0..255
    fragments = ["refusing this member", "as declared (--input-range 0-255)", "when fed as --input-range 0-1"]
    one_line_error(result, *fragments, "pass --input-range 0-1", "--force")
    assert_unchanged(before, tmp_path)
    forced = ens(*band_args(tmp_path, band), "--force")
    assert forced.exit_code == 0, forced.output
    assert "val course mIoU 0.0" in forced.output and (tmp_path / "models" / "band.onnx").is_file()
    recorded = metadata(tmp_path / "models" / "band.onnx")["ens.val_miou_from"]
    assert "written with --force despite: refusing this member" in recorded


def test_keras_net_fed_raw_pixels_instead_of_0_1_is_refused(tmp_path, band):
    import keras

    scale = 50.0  # class k wins on the k-th quarter of 0..1: logits k*x - c_k, class 0 never
    conv = keras.layers.Conv2D(5, 1, activation="softmax")
    model = keras.Sequential([keras.Input((None, None, 1)), conv])
    conv.set_weights([
        scale * np.arange(5, dtype=np.float32).reshape(1, 1, 1, 5),
        scale * np.array([-100, 0, -0.25, -0.75, -1.5], np.float32),
    ])  # fmt: skip
    model.save(tmp_path / "linear.keras")
    args = ["export", tmp_path / "linear.keras", "--name", "k", "--data", band, "--out-dir", tmp_path / "m"]
    before = snapshot(tmp_path)
    one_line_error(ens(*args), "refusing this member", "pass --input-range 0-1")
    one_line_error(ens(*args, "--scale", "0.00392156862745098"), "Rescaling(1/255)", "--input-range 0-1")
    assert_unchanged(before, tmp_path)
    result = ens(*args, "--input-range", "0-1")
    assert result.exit_code == 0, result.output
    assert "val course mIoU 1.0000" in result.output


def test_member_predicting_one_class_is_refused(tmp_path, band):
    before = snapshot(tmp_path)
    result = ens(*band_args(tmp_path, band, "broken.pt"), "--input-range", "0-1")
    fragments = ["refusing this member", "predicts 'soil' on 100.0% of the labelled pixels", "--input-range"]
    one_line_error(result, *fragments, "--force")
    assert_unchanged(before, tmp_path)
    forced = ens(*band_args(tmp_path, band, "broken.pt"), "--input-range", "0-1", "--force")
    assert forced.exit_code == 0, forced.output
    assert "val course mIoU 0.0" in forced.output


def test_member_below_the_majority_baseline_is_refused(tmp_path, band):
    before = snapshot(tmp_path)
    result = ens(*band_args(tmp_path, band, "swapped.pt"), "--input-range", "0-1")
    one_line_error(result, "refusing this member", "is below the", "always predicting the majority class")
    assert_unchanged(before, tmp_path)


def test_val_miou_claim_is_checked_against_the_measured_score(tmp_path, band):
    before = snapshot(tmp_path)
    result = ens(*band_args(tmp_path, band), "--input-range", "0-1", "--val-miou", "0.6")
    one_line_error(result, "--val-miou 0.6000 differs from the 1.0000", "--input-range", "--split-seed")
    assert_unchanged(before, tmp_path)
    assert ens(*band_args(tmp_path, band), "--input-range", "0-1", "--val-miou", "0.9999").exit_code == 0


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--scale", "0.00392156862745098"], ["--scale 0.00392157 is refused", "--input-range 0-1"]),
        (["--scale", "255"], ["two meanings", "--input-range 0-1"]),
        (["--input-range", "0-1", "--mean", "127.5", "--std", "64"], ["outside --input-range 0-1", "0-255"]),
        (["--mean", "0.449", "--std", "0.226"], ["--std 0.226 does not fit --input-range 0-255", "0-1"]),
        (["--input-range", "0-1/255"], ["is not one of 0-255, 0-1, -1-1", "Rescaling(1/255)"]),
    ],
)
def test_preprocessing_that_reads_two_ways_is_refused(tmp_path, band, options, fragments):
    before = snapshot(tmp_path)
    one_line_error(ens(*band_args(tmp_path, band), *options), *fragments)
    assert_unchanged(before, tmp_path)


def test_parity_failure_names_wrong_preprocessing_first(tmp_path, data):
    torch.save(trained_like(BatchMixingNet()).state_dict(), tmp_path / "mix.pt")
    result = ens("export", tmp_path / "mix.pt", "--name", "mix", "--factory", "tiny_nets:BatchMixingNet",
                 "--input-range", "0-1", "--data", data, "--out-dir", tmp_path)  # fmt: skip
    line = one_line_error(result, "parity check failed", "(1) wrong preprocessing", "net saw inputs in [0")
    assert line.index("(1) wrong preprocessing") < line.index("(2) a net whose output depends")
    assert line.index("(2) a net whose output") < line.index("raise --tolerance")


# 4. --factory-kwargs: a result or one line, never a crash


def test_deeply_nested_factory_kwargs_give_one_line(tmp_path, data):
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "net.pt")
    deep = '{"a": ' * 3000 + "1" + "}" * 3000
    result = ens("export", tmp_path / "net.pt", "--name", "n", "--factory", "tiny_nets:TinyNet",
                 "--factory-kwargs", deep, "--data", data, "--out-dir", tmp_path)  # fmt: skip
    line = one_line_error(result, "--factory-kwargs", "nests too deeply")
    assert len(line) < 400


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=20,
)
NESTINGS = {
    "objects": lambda n: '{"a": ' * n + "0" + "}" * n,
    "lists in an object": lambda n: '{"a": ' + "[" * n + "]" * n + "}",
    "unclosed": lambda n: "[" * n,
}
nested = st.builds(lambda n, kind: NESTINGS[kind](n), st.integers(1, 6000), st.sampled_from(list(NESTINGS)))


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(), json_values.map(json.dumps), nested, st.text('{}[]":,0123456789e-+. ')))
def test_factory_kwargs_parser_gives_a_dict_or_an_ens_error(text):
    try:
        value = parse_factory_kwargs(text)
    except EnsError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
    else:
        assert isinstance(value, dict)


# 6. user text printed through Rich is escaped


def test_markup_in_paths_and_names_is_printed_literally(tmp_path, data):
    folder = tmp_path / "store[/bold]"
    folder.mkdir(parents=True)
    torch.save(trained_like(TinyNet(n_classes=2)).state_dict(), folder / "w[bold]x.pt")
    result = ens("export", folder / "w[bold]x.pt", "--name", "m", "--factory", "tiny_nets:TinyNet",
                 "--factory-kwargs", '{"n_classes": 2}', "--class-names", "[red]sky,[/]ground",
                 "--data", data, "--out-dir", folder)  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "store[/bold]/m.onnx" in text and "[red]sky, [/]ground" in text
    assert onnx.load(str(folder / "m.onnx")).graph.output[0].name == "probs"
