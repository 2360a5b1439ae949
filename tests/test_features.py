import numpy as np
import pytest
from PIL import Image

from ampere.models import FrameEncoder, TextEncoder, build_frame_encoder, build_text_encoder
from ampere.models.feature_store import FeatureWriter, RowFile
from ampere.models.features import (
    ItemFeatures,
    media_digest,
    text_features,
    text_inputs,
    visual_features,
)


@pytest.fixture(scope="module")
def frame_encoder() -> FrameEncoder:
    return build_frame_encoder("efficientnet-lite0", image_size=96)


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    return build_text_encoder()


def _image(seed: int, size=(64, 48)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def media(tmp_path):
    page = tmp_path / "page.png"
    _image(0).save(page)
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(3):
        _image(10 + i).save(folder / f"{i:03d}.png")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg at all")
    return [str(page), str(folder), str(corrupt), str(tmp_path / "missing.png")]


def test_frame_encoder_real_efficientnet(frame_encoder):
    assert build_frame_encoder().id == "efficientnet-lite0@224"
    assert frame_encoder.id == "efficientnet-lite0@96" and frame_encoder.dim == 1280
    images = [_image(0), _image(1), _image(0)]
    feats = frame_encoder.encode(images)
    assert feats.shape == (3, 1280) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[0], feats[2], atol=1e-5)
    assert not np.allclose(feats[0], feats[1])
    assert (feats >= 0).all()  # ReLU6 features, globally average-pooled


def test_visual_features_cache_and_failures(tmp_path, media, frame_encoder):
    cache = tmp_path / "cache"
    feats, failures = visual_features(media, frame_encoder, cache_dir=cache)
    assert feats.shape == (4, 8, 1280) and feats.dtype == np.float32
    assert [row for row, _ in failures] == [2, 3]
    assert "corrupt.jpg" in failures[0][1] and "missing.png" in failures[1][1]
    assert not feats[2].any() and not feats[3].any()

    # Page: one image repeated 8 times, equal to encoding it directly.
    direct = frame_encoder.encode([Image.open(media[0]).convert("RGB")])[0]
    np.testing.assert_allclose(feats[0], np.repeat(direct[None], 8, axis=0), atol=1e-5)
    # Folder of 3 frames: midpoints 0, 1, 2 then padded with the last frame.
    assert not np.allclose(feats[1, 0], feats[1, 1])
    np.testing.assert_array_equal(feats[1, 2:], np.repeat(feats[1, 2:3], 6, axis=0))

    files = sorted((cache / "efficientnet-lite0@96").glob("*.npy"))
    assert sorted(f.stem for f in files) == sorted([media_digest(media[0]), media_digest(media[1])])

    again, failures_again = visual_features(media, frame_encoder, cache_dir=cache)
    np.testing.assert_array_equal(again, feats)
    assert failures_again == failures

    # The cache is really read: a planted value comes back for the page.
    np.save(cache / "efficientnet-lite0@96" / f"{media_digest(media[0])}.npy", np.ones((8, 1280), np.float32))
    planted, _ = visual_features(media[:1], frame_encoder, cache_dir=cache)
    assert (planted == 1).all()


def test_media_digest_of_folder_changes_with_content(tmp_path, media):
    before = media_digest(media[1])
    _image(99).save(tmp_path / "clip" / "001.png")
    assert media_digest(media[1]) != before


def test_text_encoder_real_minilm(text_encoder):
    texts = ["Product name: power bank; Features: 10000mAh, USB-C", "", "   ", "word " * 100]
    states, mask = text_encoder.encode(texts)
    assert states.shape == (4, 33, 384) and states.dtype == np.float32 and mask.dtype == bool
    assert mask[0, 0] and 5 < mask[0].sum() < 33
    assert not mask[1].any() and not mask[2].any() and not states[1:3].any()
    assert mask[3].all()
    assert not states[0][~mask[0]].any()
    # Padding in a batch does not change a text's states.
    alone, alone_mask = text_encoder.encode(texts[:1])
    np.testing.assert_array_equal(alone_mask, mask[:1])
    np.testing.assert_allclose(alone, states[:1], atol=1e-4)


def test_text_features_batches_and_float16(text_encoder):
    texts = ["red dress", "", "wireless earbuds with case"]
    states, mask = text_features(texts, text_encoder, batch_size=2)
    ref_states, ref_mask = text_encoder.encode(texts)
    assert states.dtype == np.float16 and states.shape == (3, 33, 384)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_allclose(states.astype(np.float32), ref_states, atol=1e-2)


def test_text_inputs_sources():
    domains = ["page", "short", "live"]
    titles, asrs, summaries = (
        ["Red dress", "", None],
        ["", "uh link three red dress", "hi"],
        [None, "Product name: dress", None],
    )
    assert text_inputs(domains, titles, asrs, summaries, "summary") == ["Red dress", "Product name: dress", ""]
    assert text_inputs(domains, titles, asrs, summaries, "raw") == ["Red dress", "uh link three red dress", "hi"]
    assert text_inputs(domains, titles, asrs, summaries, "none") == ["", "", ""]
    with pytest.raises(ValueError):
        text_inputs(domains, titles, asrs, summaries, "llm")


def test_item_features_roundtrip_and_subset(tmp_path):
    rng = np.random.default_rng(0)
    feats = ItemFeatures(
        item_ids=["a", "b", "c"],
        product_ids=["p", "p", "q"],
        domains=["page", "short", "live"],
        splits=["train", "test", "train"],
        frames=rng.normal(size=(3, 8, 4)).astype(np.float32),
        text=rng.normal(size=(3, 5, 2)).astype(np.float16),
        text_mask=rng.random((3, 5)) > 0.5,
    )
    feats.save(tmp_path / "f")
    loaded = ItemFeatures.load(tmp_path / "f")
    assert loaded.item_ids == feats.item_ids and loaded.splits == feats.splits
    assert isinstance(loaded.frames, RowFile)  # on disk, read by rows
    np.testing.assert_array_equal(loaded.frames, feats.frames)
    assert loaded.text.dtype == np.float16 and loaded.text_mask.dtype == bool
    for source in (feats, loaded):
        sub = source.subset([2, 0])
        assert sub.item_ids == ["c", "a"]
        np.testing.assert_array_equal(sub.text_mask, feats.text_mask[[2, 0]])
        np.testing.assert_array_equal(sub.text[[1], :3], feats.text[[0], :3])
        np.testing.assert_array_equal(sub.frames[1], feats.frames[0])
    with pytest.raises(ValueError, match="not a features folder"):
        ItemFeatures.load(tmp_path)
    with pytest.raises(ValueError, match="lengths"):
        ItemFeatures(["a"], ["p", "q"], ["page"], ["train"], feats.frames[:1], feats.text[:1], feats.text_mask[:1])


def test_training_reads_the_training_texts_saved_beside_the_features(tmp_path):
    rng = np.random.default_rng(0)
    feats = ItemFeatures(
        ["a", "b", "c"], ["p", "p", "q"], ["page", "short", "live"], ["train", "train", "val"],
        rng.normal(size=(3, 8, 4)).astype(np.float32), rng.normal(size=(3, 5, 2)).astype(np.float16), np.ones((3, 5), bool),
    )  # fmt: skip
    feats.save(tmp_path / "plain")
    assert np.asarray(ItemFeatures.load(tmp_path / "plain", training=True).text).tobytes() == feats.text.tobytes()
    own = rng.normal(size=(1, 5, 2)).astype(np.float16)
    writer = FeatureWriter(tmp_path / "features")
    columns = {"item_ids": feats.item_ids, "product_ids": feats.product_ids, "domains": feats.domains, "splits": feats.splits}
    writer.add(columns, feats.frames, feats.text, feats.text_mask)
    writer.add_training_texts(["b"], own, np.zeros((1, 5), bool))
    writer.close()
    training = ItemFeatures.load(tmp_path / "features", training=True)
    np.testing.assert_array_equal(training.text[1], own[0])
    assert not training.text_mask[1].any() and training.text_mask[[0, 2]].all()
    np.testing.assert_array_equal(training.text[[0, 2]], feats.text[[0, 2]])
    np.testing.assert_array_equal(training.only(["val"]).text, feats.text[[2]])
    np.testing.assert_array_equal(ItemFeatures.load(tmp_path / "features").text, feats.text)  # the index's own
    writer = FeatureWriter(tmp_path / "bad")
    writer.add(columns, feats.frames, feats.text, feats.text_mask)
    writer.add_training_texts(["zz"], own, np.zeros((1, 5), bool))
    with pytest.raises(ValueError, match="not in these features"):
        writer.close()


def test_features_written_in_batches_are_read_by_rows_in_any_order(tmp_path):
    """Batches appended one after another read back as one array; random rows (a training batch) and
    a row range (an embedding batch) come back as numpy would index the whole array."""
    rng = np.random.default_rng(1)
    frames = rng.normal(size=(50, 8, 6)).astype(np.float32)
    text, mask = rng.normal(size=(50, 7, 3)).astype(np.float16), rng.random((50, 7)) > 0.3
    writer = FeatureWriter(tmp_path / "f")
    for start in range(0, 50, 16):
        part = slice(start, start + 16)
        ids = [f"i{i}" for i in range(start, min(50, start + 16))]
        writer.add({"item_ids": ids, "product_ids": ids, "domains": ["page"] * len(ids), "splits": ["train"] * len(ids)},
                   frames[part], text[part], mask[part])  # fmt: skip
    writer.close()
    loaded = ItemFeatures.load(tmp_path / "f")
    assert loaded.item_ids == [f"i{i}" for i in range(50)] and loaded.frames.shape == frames.shape
    rows = rng.permutation(50)[:20]
    np.testing.assert_array_equal(loaded.frames[rows], frames[rows])
    np.testing.assert_array_equal(loaded.text[rows, :4], text[rows, :4])
    np.testing.assert_array_equal(loaded.text_mask[10:30], mask[10:30])
    view = loaded.subset(rows)
    np.testing.assert_array_equal(view.frames[[3, 1]], frames[rows[[3, 1]]])
    with pytest.raises(ValueError, match="disagree in length"):
        FeatureWriter(tmp_path / "g").add({"item_ids": ["a"], "product_ids": ["a"], "domains": ["page"], "splits": ["train"]},
                                         frames[:2], text[:2], mask[:2])  # fmt: skip


def test_frames_resized_on_the_device_match_pil_within_one_intensity_level():
    """The GPU path (uint8 frames resized in batches by torch, antialiased, rounded) is PIL's resize within one
    level out of 255, so its features are the PIL path's; run here on the CPU (the same torch code)."""
    pil = FrameEncoder(image_size=96)
    device = FrameEncoder(image_size=96, resize_on_device=True)
    images = [_image(0), _image(1, size=(320, 180)), _image(2)]  # two frame sizes in one batch
    a, b = pil.pixels(images), device.pixels(images)
    assert a.shape == b.shape and (a - b).abs().max() <= 2 / 127.5 + 1e-6  # two levels of 255 at most (rounding)
    assert (a - b).abs().mean() < 0.5 / 127.5
    fa, fb = pil.encode(images), device.encode(images)
    cosine = (fa * fb).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    assert cosine.min() > 0.999


def test_several_decoding_threads_give_the_same_features_and_failures(media, frame_encoder):
    one, failures_one = visual_features(media * 3, frame_encoder, decode_workers=1, progress=False)
    many, failures_many = visual_features(media * 3, frame_encoder, decode_workers=3, progress=False)
    np.testing.assert_array_equal(one, many)
    assert failures_one == failures_many and [row for row, _ in failures_many] == [2, 3, 6, 7, 10, 11]
