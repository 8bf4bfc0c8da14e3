"""Bring your own data and space: an image folder and a space file through train, search,
profile and serve, answered through ``superserve.Client``; the folder reader and the space
file parser on their own."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from superserve.bundle_layout import BundleLayout, DataInfo
from superserve.datasets import channel_stats, load_image_folder
from superserve.supernet.space_file import load_space, parse_space, space_spec

COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}
SPACE = {"input_size": 16, "stem_channels": 8, "stem_stride": 1, "stage_channels": [16, 24],
         "stage_strides": [1, 2], "depths": [1, 2], "expand_ratios": [0.25, 0.5], "widths": [0.5, 1.0]}


def make_folder(root: Path, per_class: int = 40, size: int = 16, mode: str = "RGB", seed: int = 0) -> Path:
    """root/<colour>/<i>.png: a noisy field of the class colour with a bright square whose
    corner depends on the class; images of a few sizes (the reader resizes them)."""
    rng = np.random.default_rng(seed)
    for k, (name, rgb) in enumerate(sorted(COLOURS.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            s = size + (i % 3) * 4  # 16, 20, 24 px
            img = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, 25, (s, s, 3)), 0, 255).astype(np.uint8)
            q = s // 2
            y, x = [(0, 0), (0, q), (q, 0)][k]
            img[y:y + q // 2, x:x + q // 2] = 255
            im = Image.fromarray(img, "RGB")
            (im.convert("L") if mode == "L" else im).save(root / name / f"{i:03d}.png")
    return root


# --- the image folder ------------------------------------------------------------------------
def test_folder_seeded_split_channels_and_stats(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=10)
    a = load_image_folder(root, 16, seed=0)
    b = load_image_folder(root, 16, seed=0)
    assert a.classes == ("blue", "green", "red") and a.channels == 3
    assert a.train.images.shape == (24, 3, 16, 16) and a.test.images.shape == (6, 3, 16, 16)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert sorted(a.test.labels.tolist()) == [0, 0, 1, 1, 2, 2]  # a fifth of each class
    # statistics of the training split, per channel; both splits normalise with them
    x = a.train.images.double() / 255
    np.testing.assert_allclose(a.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-5)
    np.testing.assert_allclose(a.std, x.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-5)
    assert a.test.mean == a.mean and a.mean[2] > a.mean[1]  # blue field vs green field: fewer
    n = a.train.normalized()
    assert n.shape == (24, 3, 16, 16)
    np.testing.assert_allclose(n.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-4)
    # fixed normalisation (a trained SuperNet's) is kept, not recomputed
    c = load_image_folder(root, 8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert c.mean == (0.5, 0.5, 0.5) and c.train.images.shape[-1] == 8


def test_folder_grayscale_and_explicit_splits(tmp_path):
    gray = make_folder(tmp_path / "gray", per_class=5, mode="L")
    f = load_image_folder(gray, 12)
    assert f.channels == 1 and f.train.images.shape[1:] == (1, 12, 12) and len(f.mean) == 1
    rgb_as_gray = load_image_folder(make_folder(tmp_path / "rgb", per_class=5), 12, channels=1)
    assert rgb_as_gray.channels == 1
    split = tmp_path / "split"
    make_folder(split / "train", per_class=6)
    make_folder(split / "val", per_class=2, seed=1)
    s = load_image_folder(split, 16)
    assert len(s.train) == 18 and len(s.test) == 6
    assert s.mean == channel_stats(s.train.images)[0]


def test_folder_refusals(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=6)
    (root / "red" / "broken.png").write_bytes(b"not a png at all")
    (root / "green" / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"2 image file\(s\) could not be read.*(broken|empty)"):
        load_image_folder(root, 16)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_image_folder(tmp_path / "nowhere", 16)
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(one / "only" / "a.png")
    with pytest.raises(ValueError, match="at least 2"):
        load_image_folder(one, 8)
    half = tmp_path / "half"
    make_folder(half / "train", per_class=3)
    with pytest.raises(ValueError, match="give both split directories"):
        load_image_folder(half, 8)
    with pytest.raises(ValueError, match="channels must be 1"):
        load_image_folder(make_folder(tmp_path / "ok", per_class=3), 8, channels=2)


# --- the space file --------------------------------------------------------------------------
def test_space_file_parses_json_and_toml(tmp_path):
    p = tmp_path / "space.json"
    p.write_text(json.dumps(SPACE))
    space = load_space(p)
    spec = space_spec(space, num_classes=3, in_channels=3)
    assert (spec.input_size, spec.in_channels, spec.num_classes) == (16, 3, 3)
    assert spec.depth_choices == (1, 2) and spec.expand_choices == (0.25, 0.5) and spec.width_choices == (0.5, 1.0)
    assert spec.stage_channels == (16, 24) and spec.space_size() == 2 * 6 ** 2
    t = tmp_path / "space.toml"
    t.write_text('input_size = 16\nstem_stride = 1\nstage_channels = [16, 24]\nstage_strides = [1, 2]\n'
                 'depths = [1, 2]\nexpand_ratios = [0.25, 0.5]\nwidths = [0.5, 1.0]\nstem_channels = 8\n')
    assert space_spec(load_space(t), 3, 3) == spec
    # every SubNet of the space round-trips through its id
    for config in spec.enumerate():
        assert config.id and type(config).from_id(config.id) == config


@pytest.mark.parametrize("change, message", [
    ({"input_size": None}, "input_size .*required"),
    ({"colour": 1}, r"unknown key\(s\) \['colour'\]"),
    ({"depths": [0, 2]}, "depths must be a non-empty list of integers in \\[1, 9\\]"),
    ({"depths": [12]}, "depths must be"),
    ({"depths": [1, 1]}, "repeated"),
    ({"expand_ratios": [0.5, 1.0]}, r"expand_ratios must be a non-empty list of numbers in \(0, 1\)"),
    ({"widths": [0.5, 1.5]}, r"widths must be a non-empty list of numbers in \(0, 1\]"),
    ({"widths": [0.333]}, "multiples of 0.01"),
    ({"widths": []}, "widths must be"),
    ({"input_size": "16"}, "input_size must be an integer"),
    ({"in_channels": 2}, "in_channels must be 1"),
    ({"stage_strides": [1]}, "stage_strides has 1 entries for 2 stages"),
    ({"input_size": 4, "stem_stride": 2, "stage_strides": [2, 2]}, "downsample by 8"),
])
def test_space_file_refuses_bad_values(change, message):
    d = {k: v for k, v in {**SPACE, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        parse_space(d, "space.json")


def test_space_must_agree_with_the_data(tmp_path):
    space = parse_space({**SPACE, "num_classes": 4, "in_channels": 1})
    with pytest.raises(ValueError, match="num_classes 4 but the data has 3"):
        space_spec(space, 3, 1)
    with pytest.raises(ValueError, match="in_channels 1 but the data has 3"):
        space_spec(space, 4, 3)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_space(bad)


def test_data_info_defaults_and_checks(tmp_path):
    assert BundleLayout(tmp_path).data_info() == DataInfo.fashion_mnist()  # an old bundle
    info = DataInfo((3, 16, 16), (0.1, 0.2, 0.3), (0.5, 0.5, 0.5), ("a", "b", "c"))
    info.save(tmp_path / "data.json")
    assert BundleLayout(tmp_path).data_info() == info
    with pytest.raises(ValueError, match="mean must be 3 finite numbers"):
        DataInfo((3, 16, 16), (0.1,), (0.5, 0.5, 0.5), ("a",))
    with pytest.raises(ValueError, match="std must be positive"):
        DataInfo((1, 16, 16), (0.1,), (0.0,), ("a",))


# --- end to end ------------------------------------------------------------------------------
def test_train_search_profile_serve_a_custom_folder(tmp_path):
    from superserve import Client
    from superserve.cli import app
    from superserve.embedded import load_bundle
    from superserve.scheduling.profile import LatencyProfile
    from superserve.serving import ServerProcess

    data = make_folder(tmp_path / "shapes", per_class=40)
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    train_dir, bundle = tmp_path / "train", tmp_path / "bundle"
    runner = CliRunner()

    def cli(*args: str) -> str:
        r = runner.invoke(app, list(args))
        assert r.exit_code == 0, f"superserve {' '.join(args)}: {r.output}\n{r.exception!r}"
        return r.output

    cli("train", "--data", str(data), "--space", str(space), "--out", str(train_dir), "--epochs", "2",
        "--batch-size", "16", "--threads", "1", "--precision", "fp32")
    trained = DataInfo.load(train_dir / "data.json")
    assert trained.classes == ("blue", "green", "red") and trained.input_shape == (3, 16, 16)
    cli("search", str(train_dir / "weights.safetensors"), "--out", str(bundle), "--initial", "3",
        "--generations", "1", "--per-generation", "2", "--calib-images", "64", "--search-val-images", "20")
    assert BundleLayout(bundle).data_info() == trained  # the bundle carries training's normalisation
    cli("profile", "--bundle", str(bundle), "--out", str(bundle / "profile.json"), "--repeats", "2",
        "--max-batch", "4")
    profile = LatencyProfile.load(bundle / "profile.json")
    assert profile.max_batch == 4
    ids = {s.id for s in profile.subnets}

    # A bad space file is refused with a clear message, not a traceback.
    (tmp_path / "bad.json").write_text(json.dumps({**SPACE, "widths": [2.0]}))
    r = runner.invoke(app, ["train", "--data", str(data), "--space", str(tmp_path / "bad.json"),
                            "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "widths must be" in r.output

    # The load client's payloads are the bundle's test images, normalised with its values.
    from superserve.loadgen.payloads import normalize_images, payloads_from_bundle

    payloads = payloads_from_bundle(bundle, slo_ms=100, limit=2)
    assert payloads.meta["normalisation"] == {"mean": list(trained.mean), "std": list(trained.std)}
    local = load_bundle(bundle)
    subset = local.subset()
    np.testing.assert_allclose(normalize_images(subset.images[:2].numpy(), trained.mean, trained.std),
                               subset.normalized(0, 2).numpy(), atol=1e-6)
    image = subset.images[0].numpy()  # uint8 [3, 16, 16]
    with ServerProcess(bundle=bundle, workers=1, warmup_runs=1, calibration_check_s=0) as srv:
        with Client(srv.http_url) as client:
            meta = client.model_metadata()
            assert meta["inputs"][0]["shape"] == [-1, 3, 16, 16]
            params = meta["parameters"]
            assert params["classes"] == ["blue", "green", "red"]
            np.testing.assert_allclose(params["input_mean"], trained.mean)
            np.testing.assert_allclose(params["input_std"], trained.std)
            p = client.infer(image, slo_ms=5000)  # raw pixels: the server normalises with the bundle's values
            x = (image.astype(np.float32) / 255 - np.array(params["input_mean"], np.float32)[:, None, None]) \
                / np.array(params["input_std"], np.float32)[:, None, None]
            q = client.infer(x.astype(np.float32), slo_ms=5000)  # normalised by the client
        assert p.logits.shape == (3,) and 0 <= p.class_index < 3
        assert p.subnet_id in ids and q.subnet_id in ids
        local.model.actuate(p.subnet_id)
        with torch.inference_mode():
            expected = local.model(subset.normalized(0, 1))[0].numpy()
        np.testing.assert_allclose(p.logits, expected, rtol=1e-3, atol=1e-3)
        if q.subnet_id == p.subnet_id:
            np.testing.assert_allclose(q.logits, p.logits, rtol=1e-3, atol=1e-3)
    assert srv.proc.returncode == 0, srv.log_tail()
