"""ViTMSN inference on hand-written SIMD kernels, from Python.

Computes what transformers' ``ViTMSNModel`` and ``ViTMSNForImageClassification`` compute,
from numpy arrays, images or image files::

    import vitmsn
    model = vitmsn.ViTMSN("vit-msn-small")
    out = model.forward(pixel_values)             # {"last_hidden_state": [B, T, D]}
    emb = model.embed(["cat.jpg", "dog.png"])     # {"cls_embeddings": [2, D]}

A model is safe to share between threads (each call releases the GIL while it computes)
and pickles as its checkpoint path and options, so it can be sent to other processes.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._vitmsn import Model as _Model
from ._vitmsn import __version__
from ._vitmsn import collect_images as _collect_images

__all__ = ["ViTMSN", "collect_images", "__version__"]

def _usable_cores() -> int:
    """The cores this process may run on (a Ray worker's or a taskset's share)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def collect_images(paths: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> List[str]:
    """The image files under ``paths`` as ``vitmsn embed`` takes them: files as given,
    folders recursively in sorted order, image extensions only."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [os.fspath(p) for p in _collect_images([os.fspath(p) for p in paths])]


def _image(item: Any) -> Union[str, np.ndarray]:
    """A path as ``str``; a PIL image or an array as ``[H, W, 3]`` uint8 RGB."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if type(item).__module__.startswith("PIL."):
        item = item.convert("RGB")
    array = np.asarray(item)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            "an image must be a path, a PIL.Image or an [H, W, 3] uint8 array, "
            f"got {type(item).__name__} of dtype {array.dtype} and shape {list(array.shape)}"
        )
    return np.ascontiguousarray(array)


def _images(images: Any) -> List[Union[str, np.ndarray]]:
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    return [_image(item) for item in images]


def _is_pixel_values(images: Any) -> bool:
    return isinstance(images, np.ndarray) and images.ndim == 4


def _pixel_values(array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype not in (np.float32, np.float16):
        raise ValueError(f"pixel_values must be float32 or float16, got {array.dtype}")
    return array


class ViTMSN:
    """A ViTMSN checkpoint loaded on a backend.

    Args:
        path: a ``save_pretrained`` folder: ``config.json``, ``model.safetensors`` (or a
            sharded index) and optionally ``preprocessor_config.json`` (without it,
            facebook/vit-msn-*'s preprocessing at the model's image size is used).
        backend: ``"cpu"`` (SIMD kernels, threaded), ``"scalar"`` (the f32 reference) or
            ``"gpu"`` (WGSL shaders through wgpu).
        threads: the cpu backend's threads. ``None`` takes ``VITMSN_THREADS`` when set,
            else the cores this process may run on (``os.sched_getaffinity``). Results do
            not depend on it.
        precision: ``"f32"``; ``"bf16"`` (bf16 weights, activations rounded to bf16
            where they enter a Linear) or ``"int8"`` (int8 weights per output channel,
            activations quantized per token, as ONNX Runtime's dynamic quantization) on
            the cpu backend; ``"f16"`` storage on the gpu backend. ``None`` takes
            ``"f32"``, or ``"int8"`` on the cpu backend for a checkpoint that ``vitmsn
            quantize`` wrote.

    Raises:
        ValueError: a bad checkpoint or option. OSError: a file cannot be read.
        RuntimeError: the backend cannot run here.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike],
        backend: str = "cpu",
        threads: Optional[int] = None,
        precision: Optional[str] = None,
    ) -> None:
        self._path = os.path.abspath(os.fspath(path))
        self._backend = backend
        self._threads = threads
        self._precision = precision
        if threads is None and backend == "cpu" and "VITMSN_THREADS" not in os.environ:
            threads = _usable_cores()
        self._model = _Model(self._path, backend, threads, precision)

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        # By reference: the receiver loads the checkpoint from the same path, and a thread
        # count or precision left to the default is the receiver's own.
        return (ViTMSN, (self._path, self._backend, self._threads, self._precision))

    def __repr__(self) -> str:
        return (
            f"ViTMSN({self._path!r}, backend={self.backend!r}, threads={self.threads}, "
            f"precision={self.precision!r})"
        )

    @property
    def path(self) -> str:
        """The checkpoint folder, absolute."""
        return self._path

    @property
    def backend(self) -> str:
        return self._model.backend

    @property
    def threads(self) -> int:
        """The cpu backend's threads (1 on the others)."""
        return self._model.threads

    @property
    def precision(self) -> str:
        """The precision the weights and matrix products run in: ``"f32"``, ``"f16"``,
        ``"bf16"`` or ``"int8"`` (the one chosen, or the default for this checkpoint)."""
        return self._model.precision

    @property
    def is_classifier(self) -> bool:
        """Whether the checkpoint has a classification head (gives ``logits``)."""
        return self._model.is_classifier

    @property
    def hidden_size(self) -> int:
        return self._model.hidden_size

    @property
    def image_size(self) -> Tuple[int, int]:
        """``(height, width)`` of the images the model takes without interpolation."""
        return self._model.image_size

    def forward(
        self,
        pixel_values: np.ndarray,
        bool_masked_pos: Optional[np.ndarray] = None,
        head_mask: Optional[np.ndarray] = None,
        labels: Optional[np.ndarray] = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> Dict[str, Any]:
        """Runs the model on a batch, as transformers' ``forward``.

        Args:
            pixel_values: float32 or float16 ``[B, C, H, W]``.
            bool_masked_pos: ``[B, num_patches]``, true where the patch is replaced by the
                mask token (the checkpoint must have one).
            head_mask: ``[heads]`` or ``[layers, heads]``, multiplying the attention
                probabilities.
            labels: integer classes ``[B]``, or float targets ``[B]`` (regression) or
                ``[B, num_labels]`` (multi-label); a classifier then returns ``loss``.
            output_attentions, output_hidden_states: also return those.
            interpolate_pos_encoding: take images of another size than the checkpoint's.

        Returns:
            A dict of float32 arrays: ``last_hidden_state`` ``[B, tokens, hidden]`` for a
            bare model or ``logits`` ``[B, num_labels]`` for a classifier; ``loss`` (0-d)
            with labels; ``hidden_states`` (the embedding output, then each layer's) and
            ``attentions`` (``[B, heads, tokens, tokens]`` per layer) as tuples when asked.
        """
        pixel_values = _pixel_values(pixel_values)
        if bool_masked_pos is not None:
            bool_masked_pos = np.asarray(bool_masked_pos)
            if bool_masked_pos.ndim != 2 or bool_masked_pos.shape[0] != pixel_values.shape[0]:
                raise ValueError(
                    f"bool_masked_pos has shape {list(bool_masked_pos.shape)}, "
                    "expected [batch, num_patches]"
                )
            bool_masked_pos = bool_masked_pos.astype(bool, copy=False)
        if head_mask is not None:
            head_mask = np.asarray(head_mask, dtype=np.float32)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.dtype.kind in "iub":
                labels = labels.astype(np.int64, copy=False)
            else:
                labels = labels.astype(np.float32, copy=False)
        return self._model.forward(
            pixel_values,
            bool_masked_pos,
            head_mask,
            labels,
            bool(output_attentions),
            bool(output_hidden_states),
            bool(interpolate_pos_encoding),
        )

    def preprocess(self, images: Any) -> np.ndarray:
        """The images as the float32 ``pixel_values`` ``[N, C, H, W]`` the model is fed,
        exactly as ``vitmsn preprocess`` (transformers' ``ViTImageProcessor``).

        ``images``: paths, ``PIL.Image``s or ``[H, W, 3]`` uint8 arrays.
        """
        return self._model.preprocess(_images(images))

    def embed(
        self,
        images: Any,
        features: Sequence[str] = ("cls",),
    ) -> Dict[str, np.ndarray]:
        """Image embeddings from the backbone, as ``vitmsn embed``: a dict of float32
        ``[N, hidden]`` arrays, ``cls_embeddings`` (feature ``"cls"``: the CLS token of
        ``last_hidden_state``), ``cls_prenorm_embeddings`` (``"cls_prenorm"``: before the
        final LayerNorm, what MSN's evaluation uses) and ``mean_embeddings`` (``"mean"``:
        the mean patch token), for the ``features`` asked.

        ``images``: paths, ``PIL.Image``s or ``[H, W, 3]`` uint8 arrays (preprocessed and
        run in batches of 8), or ``pixel_values`` ``[N, C, H, W]`` (run as one batch).
        """
        if isinstance(features, str):
            features = [features]
        features = list(features)
        if _is_pixel_values(images):
            return self._model.embed_pixels(_pixel_values(images), features)
        return self._model.embed_images(_images(images), features)

    def classify(self, images: Any, top_k: int = 5) -> List[List[Tuple[str, float]]]:
        """The ``top_k`` most probable ``(label, probability)`` of each image, most
        probable first, as ``vitmsn classify``: softmax over the logits (sigmoid for a
        multi-label or single-output head), names from the checkpoint's ``id2label``.

        ``images``: as for :meth:`embed`. Raises ``ValueError`` for a model without a
        classification head.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if _is_pixel_values(images):
            return self._model.classify_pixels(_pixel_values(images), top_k)
        return self._model.classify_images(_images(images), top_k)
