"""Handcrafted image and audio features: the same numbers as the library calls, known answers on synthetic
inputs, fixed shapes, config errors, a picklable loader, and a whole run with a corrupt file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import ducho
from ducho.backends.handcrafted_audio import FAMILIES as AUDIO_FAMILIES
from ducho.backends.handcrafted_audio import HandcraftedAudio, audio_features
from ducho.backends.handcrafted_image import FAMILIES as IMAGE_FAMILIES
from ducho.backends.handcrafted_image import HandcraftedImage, image_features, load_image
from ducho.config.schema import AudioModelSpec, VisualModelSpec
from ducho.errors import ConfigError
from ducho.media.audio import read_audio

DEMO = Path(ducho.__file__).parent / "demo" / "data"
DEMO_IMAGE = DEMO / "visual" / "images" / "coffee.jpg"
DEMO_CLIP = DEMO / "audio" / "clips" / "piano_ballad.ogg"
SR = 22050
IMAGE_DEFAULTS = {"bins": 16, "colors": 5, "max_side": 512}
AUDIO_DEFAULTS = {"sample_rate": SR, "n_mfcc": 20}


def image(**params: object) -> HandcraftedImage:
    return HandcraftedImage(VisualModelSpec(model_name="handcrafted", params=params), "cpu")


def audio(**params: object) -> HandcraftedAudio:
    return HandcraftedAudio(AudioModelSpec(model_name="handcrafted", params=params), "cpu")


def sine(freq: float, seconds: float = 2.0, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def plain(color: tuple[int, int, int], height: int = 64, width: int = 64) -> np.ndarray:
    return np.broadcast_to(np.array(color, np.uint8), (height, width, 3)).copy()


def checkerboard(side: int = 128, square: int = 8) -> np.ndarray:
    cells = (np.indices((side, side)) // square).sum(axis=0) % 2
    return np.repeat((cells * 255).astype(np.uint8)[..., None], 3, axis=2)


# --- images: the library's own numbers ------------------------------------------------------------------------------


def test_image_families_equal_the_library_calls_on_the_same_decoded_image() -> None:
    from scipy.stats import skew
    from skimage.color import rgb2gray, rgb2hsv
    from skimage.feature import canny, graycomatrix, graycoprops, hog, local_binary_pattern
    from skimage.transform import resize
    from skimage.util import img_as_ubyte

    rgb = load_image(DEMO_IMAGE)
    got = image_features(rgb, list(IMAGE_FAMILIES), IMAGE_DEFAULTS)
    gray = rgb2gray(rgb)
    gray_u8 = img_as_ubyte(gray)
    expected_hog = hog(resize(gray, (128, 128), anti_aliasing=True), orientations=9, pixels_per_cell=(16, 16),
                       cells_per_block=(2, 2), block_norm="L2-Hys")
    codes = local_binary_pattern(gray_u8, 8, 1, method="uniform")
    matrix = graycomatrix(gray_u8 // 8, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=32, symmetric=True,
                          normed=True)
    hsv = rgb2hsv(rgb)
    pixels = rgb.reshape(-1, 3) / 255
    np.testing.assert_allclose(got["hog"], expected_hog, atol=1e-6)
    np.testing.assert_allclose(got["lbp"], np.bincount(codes.astype(int).ravel(), minlength=10) / codes.size,
                               atol=1e-7)
    np.testing.assert_allclose(got["glcm"], [graycoprops(matrix, p).mean() for p in
                                             ("contrast", "dissimilarity", "homogeneity", "energy", "correlation",
                                              "ASM")], rtol=1e-5)
    np.testing.assert_allclose(got["hsv_histogram"][:16], np.histogram(hsv[..., 0], 16, (0, 1))[0] / gray.size,
                               atol=1e-7)
    np.testing.assert_allclose(got["rgb_histogram"][32:], np.histogram(rgb[..., 2], 16, (0, 256))[0] / gray.size,
                               atol=1e-7)
    np.testing.assert_allclose(got["color_moments"], np.concatenate([pixels.mean(0), pixels.std(0), skew(pixels)]),
                               rtol=1e-5)
    assert got["edges"][0] == pytest.approx(canny(gray, sigma=1.0).mean(), rel=1e-6)


def test_max_side_shrinks_the_longer_side_and_keeps_the_aspect(tmp_path: Path) -> None:
    Image.fromarray(plain((10, 200, 30), 500, 1000)).save(tmp_path / "wide.png")
    assert load_image(tmp_path / "wide.png").shape == (256, 512, 3)
    assert load_image(tmp_path / "wide.png", 100).shape == (50, 100, 3)
    Image.fromarray(plain((10, 200, 30), 40, 30)).save(tmp_path / "small.png")
    assert load_image(tmp_path / "small.png").shape == (40, 30, 3)  # never enlarged
    features = image(max_side=100).loader(tmp_path / "wide.png")
    assert features["shape"][0] == pytest.approx(2.0)  # width / height survives the resize


# --- images: known answers -------------------------------------------------------------------------------------------


def test_pure_red_histograms() -> None:
    got = image_features(plain((255, 0, 0)), ["rgb_histogram", "hsv_histogram"], IMAGE_DEFAULTS)
    red, green, blue = got["rgb_histogram"].reshape(3, 16)
    assert red[15] == 1.0 and red[:15].sum() == 0.0
    assert green[0] == 1.0 and blue[0] == 1.0
    hue, saturation, value = got["hsv_histogram"].reshape(3, 16)
    assert hue[0] == 1.0 and saturation[15] == 1.0 and value[15] == 1.0


def test_checkerboard_has_dense_axis_aligned_edges_and_a_plain_image_none() -> None:
    board = image_features(checkerboard(), ["edges"], IMAGE_DEFAULTS)["edges"]
    flat = image_features(plain((90, 90, 90)), ["edges"], IMAGE_DEFAULTS)["edges"]
    assert board[0] > 0.1
    orientations = board[1:]
    assert orientations.sum() == pytest.approx(1.0)
    assert orientations[0] + orientations[8] > 0.8  # horizontal and vertical gradients (0 and pi/2)
    assert flat[0] == 0.0 and not flat[1:].any()


def test_dominant_colors_are_exact_for_few_colors_and_sorted_by_share() -> None:
    picture = plain((0, 0, 255), 40, 40)
    picture[:10] = (0, 255, 0)  # a quarter green
    rows = image_features(picture, ["dominant_colors"], IMAGE_DEFAULTS)["dominant_colors"].reshape(5, 4)
    np.testing.assert_allclose(rows[0], [0, 0, 1, 0.75])
    np.testing.assert_allclose(rows[1], [0, 1, 0, 0.25])
    assert not rows[2:].any()


def test_dominant_colors_kmeans_is_deterministic_and_shares_sum_to_one() -> None:
    rgb = load_image(DEMO_IMAGE)
    first = image_features(rgb, ["dominant_colors"], {**IMAGE_DEFAULTS, "colors": 4})["dominant_colors"]
    second = image_features(rgb, ["dominant_colors"], {**IMAGE_DEFAULTS, "colors": 4})["dominant_colors"]
    shares = first.reshape(4, 4)[:, 3]
    np.testing.assert_array_equal(first, second)
    assert shares.sum() == pytest.approx(1.0) and (np.diff(shares) <= 0).all() and shares[-1] > 0


def test_shape_of_a_dark_disk_on_white() -> None:
    rows, cols = np.indices((100, 200))
    picture = plain((255, 255, 255), 100, 200)
    picture[(rows - 50) ** 2 + (cols - 100) ** 2 < 30**2] = (20, 20, 20)
    aspect, fraction, regions, eccentricity, solidity = image_features(picture, ["shape"], IMAGE_DEFAULTS)["shape"]
    assert aspect == 2.0
    assert fraction == pytest.approx(np.pi * 30**2 / 20000, rel=0.03)
    assert regions == pytest.approx(np.log1p(1))
    assert eccentricity < 0.1 and solidity > 0.95


@pytest.mark.parametrize("size", [(7, 5), (64, 300), (900, 700)])
def test_image_shapes_do_not_depend_on_the_image_size(tmp_path: Path, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(size[0])
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    extractor = image(bins=8, colors=3)
    got = extractor.loader(tmp_path / "x.png")
    assert {name: value.shape for name, value in got.items()} == extractor.layer_shapes()
    assert extractor.layer_shapes()["hog"] == (1764,) and extractor.layer_shapes()["edges"] == (9,)
    assert all(value.dtype == np.float32 and np.isfinite(value).all() for value in got.values())


# --- audio -----------------------------------------------------------------------------------------------------------


def test_audio_families_equal_the_library_calls_on_the_same_decoded_clip() -> None:
    import librosa

    wave = read_audio(DEMO_CLIP, sample_rate=SR, mono=True)
    got = audio_features(wave, list(AUDIO_FAMILIES), AUDIO_DEFAULTS)
    mfcc = librosa.feature.mfcc(y=wave, sr=SR, n_mfcc=20)
    delta2 = librosa.feature.delta(mfcc, order=2)
    chroma = librosa.feature.chroma_stft(y=wave, sr=SR)
    centroid = librosa.feature.spectral_centroid(y=wave, sr=SR)
    contrast = librosa.feature.spectral_contrast(y=wave, sr=SR)
    np.testing.assert_allclose(got["mfcc"][:20], mfcc.mean(axis=1), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got["mfcc"][100:], delta2.std(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["chroma"], np.concatenate([chroma.mean(1), chroma.std(1)]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["spectral"][[0, 4]], [centroid.mean(), centroid.std()], rtol=1e-4)
    np.testing.assert_allclose(got["spectral"][8:15], contrast.mean(axis=1), rtol=1e-4)
    np.testing.assert_allclose(got["zcr"], [librosa.feature.zero_crossing_rate(wave).mean(),
                                            librosa.feature.zero_crossing_rate(wave).std()], rtol=1e-5)
    np.testing.assert_allclose(got["rms"][0], librosa.feature.rms(y=wave).mean(), rtol=1e-5)
    np.testing.assert_allclose(got["tempo"], librosa.feature.tempo(y=wave, sr=SR), rtol=1e-5)


def test_a_440_hz_tone_peaks_at_a() -> None:
    chroma = audio_features(sine(440.0), ["chroma"], AUDIO_DEFAULTS)["chroma"]
    assert int(np.argmax(chroma[:12])) == 9


def test_quiet_noise_crosses_zero_more_often_than_a_low_tone() -> None:
    noise = (0.01 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    noisy = audio_features(noise, ["zcr", "rms"], AUDIO_DEFAULTS)
    tonal = audio_features(sine(220.0), ["zcr", "rms"], AUDIO_DEFAULTS)
    assert noisy["zcr"][0] > 0.3 > 0.05 > tonal["zcr"][0]
    assert tonal["rms"][0] > noisy["rms"][0]  # and the tone is the louder one


@pytest.mark.parametrize("samples", [300, 5000, 3 * SR])
def test_audio_shapes_do_not_depend_on_the_length(samples: int) -> None:
    extractor = audio(n_mfcc=13)
    got = audio_features(sine(330.0, 3.0)[:samples], list(AUDIO_FAMILIES), extractor.params)
    assert {name: value.shape for name, value in got.items()} == extractor.layer_shapes()
    assert extractor.layer_shapes() == {"mfcc": (78,), "chroma": (24,), "spectral": (22,), "zcr": (2,),
                                        "rms": (2,), "tempo": (1,)}
    assert all(value.dtype == np.float32 and np.isfinite(value).all() for value in got.values())


def test_audio_loader_reads_at_the_params_sample_rate(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", sine(440.0, 1.0), SR)
    low = HandcraftedAudio(AudioModelSpec(model_name="h", output_layers=["zcr"], params={"sample_rate": 8000}), "cpu")
    wave = read_audio(tmp_path / "a.wav", sample_rate=8000, mono=True)
    np.testing.assert_array_equal(low.loader(tmp_path / "a.wav")["zcr"],
                                  audio_features(wave, ["zcr"], {**AUDIO_DEFAULTS, "sample_rate": 8000})["zcr"])
    spec = AudioModelSpec(model_name="h", sample_rate=16000, output_layers=["rms"])
    assert HandcraftedAudio(spec, "cpu").params["sample_rate"] == 16000


# --- the extractor contract -------------------------------------------------------------------------------------------


def test_loader_pickles_and_forward_regroups_per_family(tmp_path: Path) -> None:
    extractor = HandcraftedImage(VisualModelSpec(model_name="color", output_layers=["lbp", "color_moments"]), "cpu")
    clone = pickle.loads(pickle.dumps(extractor.loader))
    paths = [DEMO_IMAGE, DEMO / "visual" / "images" / "brick.jpg"]
    records = [clone(path) for path in paths]
    np.testing.assert_array_equal(records[0]["lbp"], extractor.loader(paths[0])["lbp"])
    out = extractor.forward(extractor.prepare(records))
    assert list(out) == ["lbp", "color_moments"] and len(out["lbp"]) == 2
    np.testing.assert_array_equal(out["color_moments"][1], records[1]["color_moments"])
    sound = audio(n_mfcc=5)
    assert pickle.loads(pickle.dumps(sound.loader)) == sound.loader


def test_describe_lists_families_params_and_library_versions() -> None:
    facts = image(bins=4).describe()
    assert facts["model"]["families"]["rgb_histogram"]["dimension"] == 12
    assert facts["model"]["params"] == {"bins": 4, "colors": 5, "max_side": 512}
    assert "scikit-image" in facts["model"]["libraries"] and facts["preprocessing"]["max_side"] == 512
    assert "librosa" in audio().describe()["model"]["libraries"]
    assert list(audio().describe()["model"]["families"]) == list(AUDIO_FAMILIES)  # all families by default


def test_unknown_params_key_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match=r"'bin'.*did you mean 'bins'.*accepted: bins, colors, max_side"):
        image(bin=8)
    with pytest.raises(ConfigError, match=r"'n_mfc'.*did you mean 'n_mfcc'.*accepted: n_mfcc, sample_rate"):
        audio(n_mfc=13)
    with pytest.raises(ConfigError, match=r"params.bins: expected an integer >= 2"):
        image(bins="16")
    with pytest.raises(ConfigError, match=r"params.colors"):
        image(colors=0)


def test_unknown_family_is_a_config_error_with_a_suggestion() -> None:
    spec = VisualModelSpec(model_name="handcrafted", output_layers=["rgb_histgram"])
    with pytest.raises(ConfigError, match=r"feature family 'rgb_histgram'.*did you mean 'rgb_histogram'"):
        HandcraftedImage.check(spec)
    with pytest.raises(ConfigError, match=r"feature family 'mfccs'"):
        HandcraftedAudio(AudioModelSpec(model_name="handcrafted", output_layers=["mfccs"]), "cpu")


def test_settings_that_do_not_apply_are_refused() -> None:
    with pytest.raises(ConfigError, match="reshape"):
        HandcraftedImage(VisualModelSpec(model_name="h", reshape=(64, 64)), "cpu")
    with pytest.raises(ConfigError, match="window_seconds"):
        HandcraftedAudio(AudioModelSpec(model_name="h", window_seconds=1.0), "cpu")
    with pytest.raises(ConfigError, match="spectral needs a sample_rate above 12800"):
        audio(sample_rate=8000)
    with pytest.raises(ConfigError, match="differ"):
        HandcraftedAudio(AudioModelSpec(model_name="h", sample_rate=16000, params={"sample_rate": 8000}), "cpu")
    assert "scikit-image" in HandcraftedImage.check(VisualModelSpec(model_name="h", output_layers=["hog"]))


# --- a whole run ------------------------------------------------------------------------------------------------------


def test_run_writes_every_family_and_reports_the_corrupt_files(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "clips").mkdir()
    Image.fromarray(checkerboard(96)).save(tmp_path / "imgs" / "board.png")
    Image.open(DEMO_IMAGE).save(tmp_path / "imgs" / "coffee.jpg")
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not a jpeg")
    sf.write(tmp_path / "clips" / "a440.wav", sine(440.0, 1.0), SR)
    sf.write(tmp_path / "clips" / "a220.wav", sine(220.0, 1.5), SR)
    (tmp_path / "clips" / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    config = {"dataset_path": str(tmp_path), "device": "cpu", "workers": 1,
              "visual": {"items": {"input_path": "imgs", "output_path": "out", "model": [
                  {"model_name": "handcrafted", "backend": "handcrafted", "output_layers": ["rgb_histogram", "hog"]}]}},
              "audio": {"items": {"input_path": "clips", "output_path": "sound", "model": [
                  {"model_name": "handcrafted", "backend": "handcrafted", "output_layers": ["chroma", "tempo"],
                   "params": {"n_mfcc": 13}}]}}}
    visual, sound = ducho.run(config, progress=False).jobs
    assert {p.stem for p in (visual.output_dir / "hog").glob("*.npy")} == {"board", "coffee"}
    assert np.load(visual.output_dir / "hog" / "coffee.npy").shape == (1764,)
    assert np.load(visual.output_dir / "rgb_histogram" / "board.npy")[[0, 15]].tolist() == [0.5, 0.5]
    assert {p.stem for p in (sound.output_dir / "chroma").glob("*.npy")} == {"a440", "a220"}
    assert int(np.argmax(np.load(sound.output_dir / "chroma" / "a440.npy")[:12])) == 9
    assert np.load(sound.output_dir / "tempo" / "a220.npy").shape == (1,)
    for job, bad in ((visual, "broken"), (sound, "bad")):
        lines = (job.output_dir / "failures.tsv").read_text().splitlines()
        assert len(lines) == 2 and lines[1].split("\t")[0] == bad
    assert "DecodeError" in (visual.output_dir / "failures.tsv").read_text()
