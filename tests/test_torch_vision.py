"""torchvision backend and the visual Dataset: fidelity against a direct torchvision forward, batch-size
independence, decode cases through a run, ids, interactions, weights and user models, packaged EfficientNet."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_batch_close, write_tsv
from ducho import run
from ducho.errors import ConfigError, DuchoError, ModelNotFoundError

DEMO_IMAGES = Path(__file__).parents[1] / "src" / "ducho" / "demo" / "data" / "visual" / "images"


def photos(folder: Path, count: int = 5) -> Path:
    """`count` RGB JPEGs of different sizes and contents."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for n in range(count):
        size = (40 + 13 * n, 30 + 7 * n)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"p{n}.jpg")
    return folder


def visual_config(root: Path, images: str, **model: object) -> dict:
    spec = {"model_name": "resnet18", "weights": "none", "output_layers": ["avgpool"], "batch_size": 4, **model}
    return {"dataset_path": str(root), "device": "cpu", "workers": 0,
            "visual": {"items": {"input_path": images, "output_path": "out", "model": [spec]}}}


def direct_resnet18(names: list[str]) -> tuple[torch.nn.Module, object]:
    """resnet18 with the same seeded random weights, its fx extractor and torchvision's own transforms."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    return create_feature_extractor(model, {n: n for n in names}), torchvision.models.ResNet18_Weights.DEFAULT


@pytest.mark.kernels
def test_fidelity_pooled_and_spatial_layers_against_torchvision(tmp_path: Path) -> None:
    folder = photos(tmp_path / "images")
    run(visual_config(tmp_path, "images", output_layers=["avgpool", "layer4.1.relu_1"]), progress=False)
    extractor, weights = direct_resnet18(["avgpool", "layer4.1.relu_1"])
    transform = weights.transforms()
    for path in sorted(folder.glob("*.jpg")):
        with torch.inference_mode():
            direct = extractor(transform(Image.open(path).convert("RGB"))[None])
        pooled = np.load(tmp_path / "out" / "torch" / "resnet18" / "avgpool" / f"{path.stem}.npy")
        spatial = np.load(tmp_path / "out" / "torch" / "resnet18" / "layer4.1.relu_1" / f"{path.stem}.npy")
        assert pooled.shape == (512,) and spatial.shape == (512, 7, 7)
        assert np.abs(pooled - direct["avgpool"][0].flatten().numpy()).max() < 1e-4
        assert np.abs(spatial - direct["layer4.1.relu_1"][0].numpy()).max() < 1e-4


@pytest.mark.kernels
def test_batch_sizes_agree_and_workers_give_identical_files(tmp_path: Path) -> None:
    """A spatial map (conv), a classifier output (linear) and a pooled map: batch sizes 1, 3 and 32 agree to 1e-5 of
    the vector's scale (BLAS picks kernels by row count); the same batch size gives the same bytes with 0 or 1
    decoding workers."""
    photos(tmp_path / "images", 6)
    results = {}
    for batch_size, workers in ((1, 0), (3, 1), (32, 2), (3, 0)):
        out = f"out{batch_size}-{workers}"
        config = visual_config(tmp_path, "images", batch_size=batch_size,
                               output_layers=["layer4", "fc", "avgpool"], pooling="none")
        config["workers"] = workers
        config["visual"]["items"]["output_path"] = out
        run(config, progress=False)
        folder = tmp_path / out / "torch" / "resnet18"
        results[(batch_size, workers)] = {p.relative_to(folder): np.load(p) for p in sorted(folder.glob("*/*.npy"))}
    one, three, many, again = results[(1, 0)], results[(3, 1)], results[(32, 2)], results[(3, 0)]
    assert len(one) == 18 and one.keys() == three.keys() == many.keys() == again.keys()
    for name, array in one.items():
        layer = name.parts[0]
        assert array.shape == {"layer4": (512, 7, 7), "fc": (1000,), "avgpool": (512,)}[layer], name
        assert_batch_close(array, three[name], name)
        assert_batch_close(array, many[name], name)
        assert np.array_equal(three[name], again[name]), name


def test_spatial_pooling_avg_equals_mean_of_the_map(tmp_path: Path) -> None:
    photos(tmp_path / "images", 2)
    config = visual_config(tmp_path, "images", output_layers=["layer3"], pooling="none")
    run(config, progress=False)
    config["visual"]["items"]["output_path"] = "avg"
    config["visual"]["items"]["model"][0]["pooling"] = "avg"
    run(config, progress=False)
    full = np.load(tmp_path / "out" / "torch" / "resnet18" / "layer3" / "p0.npy")
    avg = np.load(tmp_path / "avg" / "torch" / "resnet18" / "layer3" / "p0.npy")
    assert full.shape == (256, 14, 14) and avg.shape == (256,)
    assert np.allclose(full.mean(axis=(1, 2)), avg, atol=1e-5)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height, with a tiny (never decoded) data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
                     + chunk(b"IEND", b""))


def decode_cases(folder: Path) -> dict[str, str | None]:
    """Every decode case of a real catalogue; value None = must be extracted, else a word of the skip reason."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    rgb.convert("L").save(folder / "gray.png")
    rgb.convert("P").save(folder / "palette.gif")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)).save(folder / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(folder / "rotated.jpg", exif=exif)
    rgb.save(folder / "progressive.jpg", progressive=True)
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    rgb.save(folder / "a.v2.jpg")
    full = (folder / "progressive.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (folder / "corrupt.png").write_bytes(b"this is not a png at all")
    (folder / "empty.jpg").write_bytes(b"")
    _png_header_only(folder / "bomb.png", 40000, 40000)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    return {"gray": None, "palette": None, "rgba": None, "cmyk": None, "sixteen": None, "rotated": None,
            "progressive": None, "animated": None, "a.v2": None, "truncated": "truncated",
            "corrupt": "not a recognised", "empty": "empty file", "bomb": "larger than",
            ".DS_Store": "not an image file", "notes.txt": "not an image", "sub": "sub-folder"}


def test_every_decode_case_is_extracted_or_reported(tmp_path: Path) -> None:
    expected = decode_cases(tmp_path / "images")
    config = visual_config(tmp_path, "images")
    config["workers"] = 1  # decoding in a worker process
    result = run(config, progress=False)
    folder = tmp_path / "out" / "torch" / "resnet18"
    written = {p.stem for p in (folder / "avgpool").glob("*.npy")}
    assert written == {k for k, v in expected.items() if v is None}
    failures = (folder / "failures.tsv").read_text().splitlines()[1:]
    reasons = {line.split("\t")[0]: line.split("\t")[2] for line in failures}
    for label, word in expected.items():
        if word is not None:
            assert word in reasons[label], (label, reasons.get(label))
    assert len(result.jobs[0].skipped) == len(reasons) == sum(v is not None for v in expected.values())
    assert np.load(folder / "avgpool" / "a.v2.npy").shape == (512,)  # the id keeps every dot but the last


def test_same_id_with_two_extensions_is_an_error_naming_both(tmp_path: Path) -> None:
    photos(tmp_path / "images", 1)
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "p0.png")
    with pytest.raises(DuchoError, match=r"p0\.jpg and p0\.png would both be item 'p0'"):
        run(visual_config(tmp_path, "images"), progress=False)


def test_recursive_ids_keep_the_sub_folder_inside_the_output(tmp_path: Path) -> None:
    photos(tmp_path / "images" / "shoes", 2)
    photos(tmp_path / "images", 1)
    config = visual_config(tmp_path, "images")
    config["visual"]["items"]["recursive"] = True
    run(config, progress=False)
    names = sorted(p.name for p in (tmp_path / "out" / "torch" / "resnet18" / "avgpool").glob("*.npy"))
    assert names == ["p0.npy", "shoes%2Fp0.npy", "shoes%2Fp1.npy"]


def test_interactions_from_a_mapping_are_named_user__item(tmp_path: Path) -> None:
    photos(tmp_path / "uploads", 3)
    write_tsv(tmp_path / "uploads.tsv", ["file", "user", "item"],
              [["p0.jpg", "u1", "i9"], ["p1.jpg", "u2", "i9"], ["missing.jpg", "u3", "i1"], ["p2.jpg", "u1", "i9"],
               ["../escape.jpg", "u4", "i4"]])
    config = visual_config(tmp_path, "uploads")
    config["visual"] = {"interactions": {**config["visual"]["items"], "mapping_path": "uploads.tsv"}}
    result = run(config, progress=False)
    folder = tmp_path / "out" / "torch" / "resnet18" / "avgpool"
    assert sorted(p.name for p in folder.glob("*.npy")) == ["u1__i9.npy", "u2__i9.npy"]
    reasons = [s.reason for s in result.jobs[0].skipped]
    assert any("not found" in r for r in reasons) and any("outside the input folder" in r for r in reasons)
    assert any("duplicate pair" in r for r in reasons)
    extractor, weights = direct_resnet18(["avgpool"])
    with torch.inference_mode():
        direct = extractor(weights.transforms()(Image.open(tmp_path / "uploads" / "p1.jpg").convert("RGB"))[None])
    assert np.abs(np.load(folder / "u2__i9.npy") - direct["avgpool"].flatten().numpy()).max() < 1e-4


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest", "nearest-exact", "box", "hamming",
                                           "lanczos"])
def test_preprocessing_equals_torchvisions_transforms_bit_for_bit(interpolation: str) -> None:
    """The pipeline needs no torch (decoding processes import neither torch nor torchvision), yet its arrays are
    torchvision's resize -> center_crop -> pil_to_tensor -> convert_image_dtype -> normalize, every bit: images
    portrait, landscape, square, smaller than the crop (zero padded), a resize to an exact size, z-score and minmax."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    from ducho.preprocess.image import IMAGENET_MEAN, IMAGENET_STD, ImagePipeline

    rng = np.random.default_rng(3)
    sizes = [(300, 200), (200, 300), (256, 256), (97, 301), (150, 120), (224, 224), (31, 17)]
    pipelines = [ImagePipeline(interpolation=interpolation),
                 ImagePipeline(resize=232, crop=(224, 224), interpolation=interpolation),
                 ImagePipeline(resize=(40, 24), crop=None, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                               interpolation=interpolation),
                 ImagePipeline(resize=160, crop=(200, 180), mean=None, std=None, interpolation=interpolation),
                 ImagePipeline(resize=None, crop=(64, 64), interpolation=interpolation)]
    for width, height in sizes:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for pipeline in pipelines:
            expected = image
            if pipeline.resize is not None:
                size = [pipeline.resize] if isinstance(pipeline.resize, int) else list(pipeline.resize)
                expected = F.resize(expected, size, interpolation=InterpolationMode(interpolation), antialias=True)
            if pipeline.crop is not None:
                expected = F.center_crop(expected, list(pipeline.crop))
            tensor = F.convert_image_dtype(F.pil_to_tensor(expected), torch.float32)
            if pipeline.mean is not None:
                tensor = F.normalize(tensor, list(pipeline.mean), list(pipeline.std))
            got = pipeline.apply(image)
            assert got.dtype == np.float32 and got.flags.c_contiguous, pipeline
            assert got.shape == tuple(tensor.shape) and np.array_equal(got, tensor.numpy()), (width, height, pipeline)
    # every 8-bit value through each ImageNet channel: the float operations alone, all 256 x 3 of them
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2))
    expected = F.normalize(F.convert_image_dtype(F.pil_to_tensor(ramp), torch.float32), IMAGENET_MEAN, IMAGENET_STD)
    assert np.array_equal(ImagePipeline(resize=None, crop=None).apply(ramp), expected.numpy())


def test_torchvision_weights_transforms_are_the_pipeline_and_decoding_imports_no_torch(tmp_path: Path) -> None:
    """`from_weights` reads a weights enum's ImageClassification; applying it equals calling that transform. A fresh
    process that unpickles the pipeline and decodes a file (what a Ray decoding task does) imports no torch."""
    import pickle

    import torchvision

    from ducho.preprocess.image import from_weights

    folder = photos(tmp_path / "images", 3)
    for weights in (torchvision.models.ResNet50_Weights.DEFAULT, torchvision.models.ViT_B_16_Weights.DEFAULT,
                    torchvision.models.EfficientNet_B3_Weights.DEFAULT):
        pipeline = from_weights(weights)
        for path in sorted(folder.glob("*.jpg")):
            image = Image.open(path).convert("RGB")
            assert np.array_equal(pipeline.apply(image), weights.transforms()(image).numpy()), (weights, path)
    blob = tmp_path / "pipeline.pkl"
    blob.write_bytes(pickle.dumps(from_weights(torchvision.models.ResNet50_Weights.DEFAULT)))
    code = ("import pickle, sys; loader = pickle.loads(open(sys.argv[1], 'rb').read()); array = loader(sys.argv[2]); "
            "print(array.shape, sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(blob), str(folder / "p0.jpg")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(3, 224, 224) []"


def test_reshape_and_preprocessing_override_and_do_not_leak(tmp_path: Path) -> None:
    from ducho.backends.torch_vision import TorchVision
    from ducho.config.schema import VisualModelSpec

    first = TorchVision(VisualModelSpec(model_name="resnet18", weights="none", reshape=(40, 24),
                                        preprocessing="minmax"), "cpu")
    second = TorchVision(VisualModelSpec(model_name="resnet18", weights="none"), "cpu")
    image = photos(tmp_path / "images", 1) / "p0.jpg"
    small, default = first.loader(str(image)), second.loader(str(image))
    assert small.shape == (3, 24, 40) and 0.0 <= small.min() and small.max() <= 1.0
    assert default.shape == (3, 224, 224) and default.min() < 0  # ImageNet z-score, unaffected by the first
    zscore = TorchVision(VisualModelSpec(model_name="resnet18", weights="none", reshape=(32, 32),
                                         preprocessing="zscore", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)), "cpu")
    resized = Image.open(image).convert("RGB").resize((40, 24), Image.Resampling.BILINEAR)
    minmax = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float() / 255
    assert zscore.loader(str(image)).shape == (3, 32, 32)
    assert np.array_equal(small, minmax.numpy())


def test_weights_file_user_callable_and_pickled_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    from ducho.backends.torch_vision import TorchVision
    from ducho.config.schema import VisualModelSpec

    torch.manual_seed(3)
    trained = torchvision.models.resnet18(num_classes=1000).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "w.pth")
    loaded = TorchVision(VisualModelSpec(model_name="ResNet18", weights=str(tmp_path / "w.pth")), "cpu")
    assert torch.equal(loaded.model.fc.weight, trained.fc.weight)

    (tmp_path / "my_models.py").write_text("import torch\n\ndef tiny():\n    return torch.nn.Sequential("
                                           "torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), "
                                           "torch.nn.Flatten())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    user = TorchVision(VisualModelSpec(model_name="my_models:tiny", output_layers=["2"]), "cpu")
    out = user.forward(user.prepare([torch.zeros(3, 16, 16)]))
    assert out["2"][0].shape == (4,)

    torch.save(trained, tmp_path / "whole.pt")  # a pickled module, as the reference releases saved
    with pytest.raises(ConfigError, match="pickled model: loading it runs code"):
        TorchVision(VisualModelSpec(model_name=str(tmp_path / "whole.pt")), "cpu")
    trusted = TorchVision(VisualModelSpec(model_name=str(tmp_path / "whole.pt"), trust_pickle=True), "cpu")
    assert torch.equal(trusted.model.fc.weight, trained.fc.weight)
    with pytest.raises(ConfigError, match="holds only weights"):
        TorchVision(VisualModelSpec(model_name=str(tmp_path / "w.pth")), "cpu")

    torch.jit.save(torch.jit.trace(trained, torch.zeros(1, 3, 64, 64)), tmp_path / "scripted.pt")
    scripted = TorchVision(VisualModelSpec(model_name=str(tmp_path / "scripted.pt"), output_layers=["output"]), "cpu")
    pixels = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        expected = trained(pixels).numpy()
    assert np.abs(np.stack(scripted.forward(pixels)["output"]) - expected).max() < 1e-4


def test_missing_pretrained_weights_fail_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    photos(tmp_path / "images", 1)
    config = visual_config(tmp_path, "images")
    del config["visual"]["items"]["model"][0]["weights"]
    with pytest.raises(ModelNotFoundError, match=r"weights ResNet18_Weights.IMAGENET1K_V1 are not on this machine"):
        run(config, progress=False)
    assert not (tmp_path / "out").exists()
    config["visual"]["items"]["model"][0]["model_name"] = "resnet_18"
    with pytest.raises(ModelNotFoundError, match="did you mean 'resnet18'"):
        run(config, progress=False)


def test_unknown_layer_names_the_model_and_a_close_match(tmp_path: Path) -> None:
    from ducho.backends.torch_vision import TorchVision
    from ducho.config.schema import VisualModelSpec

    with pytest.raises(ConfigError, match="'avgpol' is not a layer of resnet18 \\(did you mean 'avgpool'\\?\\)"):
        TorchVision(VisualModelSpec(model_name="resnet18", weights="none", output_layers=["avgpol"]), "cpu")


def test_packaged_efficientnet_lite0_recognises_the_cat_and_the_espresso(tmp_path: Path) -> None:
    config = visual_config(tmp_path, str(DEMO_IMAGES), model_name="efficientnet_lite0", output_layers=["_fc"])
    del config["visual"]["items"]["model"][0]["weights"]
    run(config, progress=False)
    folder = tmp_path / "out" / "torch" / "efficientnet_lite0" / "_fc"
    assert int(np.load(folder / "cat.npy").argmax()) == 285  # ImageNet 'Egyptian cat'
    assert int(np.load(folder / "coffee.npy").argmax()) == 967  # 'espresso'
    manifest = (folder / "manifest.json").read_text()
    assert "efficientnet-lite0-57934424.pth" in manifest and '"mean": [\n' in manifest


def test_layers_command_lists_names_and_shapes() -> None:
    done = subprocess.run([sys.executable, "-m", "ducho", "layers", "resnet18"], capture_output=True, text=True,
                          check=True)
    lines = {line.split()[0]: line.split(None, 1)[1] for line in done.stdout.splitlines()[1:]}
    assert lines["avgpool"] == "(512,)" and lines["layer4.1.relu_1"] == "(512, 7, 7)" and lines["fc"] == "(1000,)"


def test_residual_sums_run_in_place_with_the_same_bits() -> None:
    """fx turns ResNet's `out += identity` into a new tensor per block; ducho writes those sums in place again, except
    into a requested layer (bn2 of block 1 below, which must keep its own value) or a tensor something else reads."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    from ducho.backends.torch_common import LayerCapture, add_into_first

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    names = ["layer1.1.bn2", "layer4.1.relu_1", "avgpool"]
    capture = LayerCapture(model, names)
    in_place = [n for n in capture.module.graph.nodes if n.target is add_into_first]
    assert len(in_place) == 7  # 8 residual sums, less the one into the requested layer1.1.bn2
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        got, expected = capture(x), create_feature_extractor(model, {n: n for n in names})(x)
        assert all(torch.equal(got[n], expected[n]) for n in names)  # layer1.1.bn2 before its residual sum
        small, big = torch.ones(3), torch.ones(2, 3)
        assert add_into_first(small, big).shape == (2, 3) and torch.equal(small, torch.ones(3))  # broadcast: new tensor
        half = torch.ones(3, dtype=torch.float16)
        assert add_into_first(half, torch.ones(3)).dtype == torch.float32  # promotion: new tensor


@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")  # no GPU here: the autocast is a no-op
def test_fp32_on_cuda_turns_tf32_off_for_the_forward_only() -> None:
    """cuDNN's TF32 (on by default in torch) would make `precision: fp32` convolutions 10-bit-mantissa on a GPU."""
    import torch

    from ducho.device import forward_context

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with forward_context("cuda:0", "fp32"):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
        with forward_context("cuda:0", "auto"), forward_context("cpu", "fp32"):
            assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_one_eval_trace_gives_torchvisions_names_and_extractor() -> None:
    """ducho traces once (eval mode); names and outputs are those of torchvision's two-mode helpers, and the graph
    stops at the last requested layer."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    from ducho.backends.torch_common import EvalTrace

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    trace = EvalTrace(model)
    assert trace.names() == get_graph_node_names(model)[1][1:]
    names = ["layer2", "layer3.1.relu_1", "layer1.0.conv1"]  # a module (its last node) and node names
    ours = trace.extractor(names)
    theirs = create_feature_extractor(model, return_nodes={n: n for n in names})
    batch = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        got, want = ours(batch), theirs(batch)
    assert set(got) == set(names) and all(torch.equal(got[n], want[n]) for n in names)
    modules = dict(ours.named_modules())
    assert "layer4" not in modules and "fc" not in modules and "layer3" in modules
