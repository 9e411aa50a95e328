"""Released SAM checkpoints: where they come from, the cache folder, and a verified download.

:data:`PRETRAINED_WEIGHTS` maps the known names (Meta's ``vit_b``, ``vit_l``, ``vit_h``; MobileSAM's
``mobile_sam``; HQ-SAM's ``sam_hq_vit_b``, ``sam_hq_vit_l``, ``sam_hq_vit_h``, ``sam_hq_vit_tiny``) to
their encoder family, variant, URL, SHA-256, MD5 and licence (weight metadata only: the architecture is
``CONFIGS[config_name]``, built by the family's builder); :func:`download_weights` puts a
checkpoint in :func:`cache_dir` (streamed to a temporary file, both hashes checked, then renamed
into place). :func:`samkit.load_model` calls it
for known names; nothing else here touches the network.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from samkit.errors import CheckpointError, WeightsNotFoundError

__all__ = ["PRETRAINED_WEIGHTS", "PretrainedWeights", "cache_dir", "download_weights", "known_name"]

logger = logging.getLogger(__name__)

_DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a released checkpoint comes from; its architecture is ``CONFIGS[config_name]``.

    Attributes:
        config_name: the variant in :data:`samkit.modeling.CONFIGS`.
        file_name: name of the file in the cache folder (also accepted as a known name).
        url: where to download it.
        sha256: expected SHA-256 (None: not verified, with a warning).
        md5: expected MD5 (None: not verified, with a warning).
        license: SPDX identifier of the weights' licence.
        hf_hub_id: the same weights on the Hugging Face hub, if published there.
        family: the encoder family in :mod:`samkit.modeling.families`.
    """

    config_name: str
    file_name: str
    url: str
    sha256: str | None
    md5: str | None
    license: str
    hf_hub_id: str | None = None
    family: str = "vit"


def _meta(config_name: str, file_name: str, sha256: str, md5: str, hf_hub_id: str) -> PretrainedWeights:
    return PretrainedWeights(config_name, file_name, f"https://dl.fbaipublicfiles.com/segment_anything/{file_name}",
                             sha256, md5, "Apache-2.0", hf_hub_id, family="vit")


# Meta publishes no SHA-256 for these files. The values are the ones public download scripts
# verify against (e.g. micro-sam's util.py, Dockerfiles running `sha256sum -c`); the 6 hex digits
# in each file name are the start of its MD5, which is checked too.
PRETRAINED_WEIGHTS: dict[str, PretrainedWeights] = {
    "vit_b": _meta("vit_b", "sam_vit_b_01ec64.pth",
                   "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
                   "01ec64d29a2fca3f0661936605ae66f8", "facebook/sam-vit-base"),
    "vit_l": _meta("vit_l", "sam_vit_l_0b3195.pth",
                   "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
                   "0b3195507c641ddb6910d2bb5adee89c", "facebook/sam-vit-large"),
    "vit_h": _meta("vit_h", "sam_vit_h_4b8939.pth",
                   "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
                   "4b8939a88964f0f4ff5f5b2642c598a6", "facebook/sam-vit-huge"),
}

_HQ_SAM_URL = "https://huggingface.co/lkeab/hq-sam/resolve/main/"

# MobileSAM (github.com/ChaoningZhang/MobileSAM, Apache-2.0): the SHA-256 is the one public download
# scripts pin for mobile_sam.pt (40,728,226 bytes). HQ-SAM (github.com/SysCV/sam-hq, Apache-2.0): no
# SHA-256 is published or pinned publicly, so those downloads are unverified for SHA-256 (a warning
# says so); the MD5s of vit_b/l/h are the ones IOPaint's downloader checks.
PRETRAINED_WEIGHTS.update({
    "mobile_sam": PretrainedWeights(
        "mobile_sam", "mobile_sam.pt", "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f", None, "Apache-2.0", family="tiny_vit"),
    "sam_hq_vit_b": PretrainedWeights("hq_vit_b", "sam_hq_vit_b.pth", _HQ_SAM_URL + "sam_hq_vit_b.pth", None,
                                      "c6b8953247bcfdc8bb8ef91e36a6cacc", "Apache-2.0", family="vit"),
    "sam_hq_vit_l": PretrainedWeights("hq_vit_l", "sam_hq_vit_l.pth", _HQ_SAM_URL + "sam_hq_vit_l.pth", None,
                                      "08947267966e4264fb39523eccc33f86", "Apache-2.0", family="vit"),
    "sam_hq_vit_h": PretrainedWeights("hq_vit_h", "sam_hq_vit_h.pth", _HQ_SAM_URL + "sam_hq_vit_h.pth", None,
                                      "3560f6b6a5a6edacd814a1325c39640a", "Apache-2.0", family="vit"),
    "sam_hq_vit_tiny": PretrainedWeights("hq_vit_tiny", "sam_hq_vit_tiny.pth", _HQ_SAM_URL + "sam_hq_vit_tiny.pth",
                                         None, None, "Apache-2.0", family="tiny_vit"),
})


def known_name(text: str) -> str | None:
    """The registry key for a known name or a known file name (``sam_vit_b_01ec64.pth``), else None."""
    if text in PRETRAINED_WEIGHTS:
        return text
    return next((name for name, w in PRETRAINED_WEIGHTS.items() if w.file_name == text), None)


def cache_dir() -> Path:
    """Folder of downloaded checkpoints: ``$SAMKIT_CACHE``, default ``~/.cache/samkit``."""
    return Path(os.environ.get("SAMKIT_CACHE") or Path.home() / ".cache" / "samkit").expanduser()


def download_weights(name: str, *, progress: bool = False) -> Path:
    """Path of a known checkpoint in :func:`cache_dir`, downloading and verifying it if absent.

    The download streams to a temporary file next to the target, is checked against the
    registry's SHA-256 and MD5, then renamed into place (atomic on one filesystem).
    """
    if name not in PRETRAINED_WEIGHTS:
        raise ValueError(f"unknown checkpoint {name!r}; expected one of {sorted(PRETRAINED_WEIGHTS)}")
    weights = PRETRAINED_WEIGHTS[name]
    target = cache_dir() / weights.file_name
    if target.is_file():
        logger.debug("using cached %s", target)
        return target
    hint = (f"Download it by hand from {weights.url} and put it at {target} (set SAMKIT_CACHE to use another "
            "folder), or pass the file's path to load_model.")
    logger.info("downloading %s to %s", weights.url, target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{weights.file_name}.", suffix=".partial")
    except OSError as error:
        raise WeightsNotFoundError(f"cannot write to the cache folder {target.parent}: {error}. {hint}") from error
    try:
        with os.fdopen(handle, "wb") as file:
            writer = _HashingWriter(file)
            try:
                _fetch(weights.url, writer, progress=progress)
            except (OSError, http.client.HTTPException) as error:
                raise WeightsNotFoundError(f"cannot download {weights.file_name} from {weights.url} ({error}). "
                                           f"{hint}") from error
        for algorithm, expected in (("SHA-256", weights.sha256), ("MD5", weights.md5)):
            got = writer.hexdigest(algorithm)
            if expected is None:
                logger.warning("no %s known for %s; the download is not verified", algorithm, weights.file_name)
            elif got != expected:
                raise CheckpointError(f"{algorithm} of the file downloaded from {weights.url} is {got}, expected "
                                      f"{expected}; it was discarded. Retry, or: {hint}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


class _HashingWriter:
    """File wrapper that hashes what is written through it."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._hashes = {"SHA-256": hashlib.sha256(), "MD5": hashlib.md5()}

    def write(self, data: bytes) -> int:
        for digest in self._hashes.values():
            digest.update(data)
        return self._file.write(data)

    def hexdigest(self, algorithm: str) -> str:
        return self._hashes[algorithm].hexdigest()


def _fetch(url: str, destination: Any, *, progress: bool) -> None:
    """Stream ``url`` into ``destination`` (has ``write``); raises OSError on network failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "samkit"})
    with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0)
        bar = _progress_bar(total, url.rsplit("/", 1)[-1]) if progress else None
        written = 0
        try:
            while chunk := response.read(1 << 20):
                destination.write(chunk)
                written += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if total and written != total:
        raise OSError(f"connection closed after {written} of {total} bytes")


def _progress_bar(total: int, description: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        logger.warning("progress=True needs tqdm (pip install tqdm); downloading without a progress bar")
        return None
    return tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024, desc=description)
