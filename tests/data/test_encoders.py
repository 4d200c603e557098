"""The dataset builder (mmssl_pyg.data.builder), its encoders and the MovieLens-100K recipe.

Expected counts are worked out by hand in the comments; the encoders used here are small
deterministic functions, except in the one test that loads the real all-MiniLM-L6-v2 (skipped
when the `features` extra is not installed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmssl_pyg.data import load_dataset
from mmssl_pyg.data.encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderError,
    ImageEncoder,
    SentenceEncoder,
    encode_cached,
)
from mmssl_pyg.testing import ITEMS, ROWS, _build, _write_csv


@pytest.fixture
def tables(tmp_path):
    inter = _write_csv(tmp_path / 'inter.csv', ['user', 'item', 'rating', 'ts'], ROWS)
    items = _write_csv(tmp_path / 'items.csv', ['item', 'title', 'tag'], ITEMS)
    return inter, items


def test_encode_cached_without_a_cache_key_always_runs(tmp_path):
    calls = []

    def enc(texts):
        calls.append(len(texts))
        return np.ones((len(texts), 2))

    for _ in range(2):
        feat, hit = encode_cached(enc, ['a', 'b'], 'text', tmp_path)
        assert hit is None and feat.dtype == np.float32
    assert calls == [2, 2] and not list(tmp_path.iterdir())
    with pytest.raises(EncoderError, match=r'returned shape \(3, 2\), expected \[2, dim\]'):
        encode_cached(lambda t: np.ones((3, 2)), ['a', 'b'], 'text')


def test_image_features_with_a_small_backbone(tables, tmp_path):
    Image = pytest.importorskip('PIL.Image')
    inter, _ = tables
    colours = {'i1': (255, 0, 0), 'i2': (0, 128, 255), 'i3': (10, 20, 30)}
    (tmp_path / 'img').mkdir()
    rows = []
    for item, rgb in colours.items():
        Image.new('RGB', (40, 30), rgb).save(tmp_path / 'img' / f'{item}.png')
        rows.append((item, f'img/{item}.png'))
    rows += [('i4', 'img/none.png'), ('i5', 'img/none.png')]  # only used by dropped items
    items = _write_csv(tmp_path / 'items_img.csv', ['item', 'image'], rows)
    backbone = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    encoder = ImageEncoder(backbone, 'mean-colour', batch_size=2, resize=16, size=8,
                           progress=False)
    out = tmp_path / 'ds'
    _build((inter, items), out, items=items, item_id_col='item', image_col='image',
           image_encoder=encoder)
    feat = np.load(out / 'raw' / 'image_feat.npy')
    # a solid image stays solid through resize and crop: the feature is the normalised colour
    expected = [(np.array(c) / 255 - IMAGENET_MEAN) / IMAGENET_STD for c in colours.values()]
    np.testing.assert_allclose(feat, np.array(expected), atol=1e-5)
    assert load_dataset(str(out), log=False)[0].modalities == ['image']


def test_encoders_that_cannot_run_offline(tmp_path, monkeypatch):
    with pytest.raises(EncoderError, match='nope.*does not exist.*nothing is downloaded'):
        SentenceEncoder(tmp_path / 'nope')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(EncoderError, match='not a sentence-transformers model folder'):
        SentenceEncoder(tmp_path / 'empty')
    from mmssl_pyg.data.encoders import torchvision_image_encoder
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch-home'))
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or a build that does not fit this torch
        with pytest.raises(ImportError, match='torchvision built for torch'):
            torchvision_image_encoder('resnet50')
    else:
        with pytest.raises(EncoderError, match='would need a download'):
            torchvision_image_encoder('resnet50')
